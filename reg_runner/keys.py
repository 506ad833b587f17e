"""What each key of a run's config is, declared once, on the key, in its group's schema.

A key's role is a marker in its annotation, ``seed: Annotated[Seed, REPLICATE]``; a role declared on a group
(``logging: Annotated[LoggingConfig, SETTING]``) is every key's below it. A key has at most one *record role*,
which says what the key is to the run's records:

=============== ============================================================ ==================================
role            what the key is                                              left out of
=============== ============================================================ ==================================
(none)          a hyperparameter: it defines the run                         nothing
``REPLICATE``   the seed: runs that differ only in it replicate one setup   grouping
``DETAIL``      changes numbers, but says how a run is carried out (or       hparams
                repeats other keys), not what it is
``SETTING``     changes no number a run records (where it runs, what it      results, hparams
                shows, how often it checkpoints)
``PATH``        a setting that is a place on this machine                    results, hparams, folder names,
                                                                             grouping
``LABEL``       what a user writes about runs (never swept or searched)      results, folder names, grouping
``PRESET``      a search preset's name: its keys are recorded as themselves  folder names, grouping
=============== ============================================================ ==================================

where ``results`` is ``config.results_config`` (what must match for two runs' numbers to compare), ``hparams``
the columns of TensorBoard's HParams table (a label is there as text), ``folder names`` a multirun job's
folder (Hydra's ``override_dirname``) and ``grouping`` the keys ``report`` groups runs by.

Apart from it, a key has at most one *stack role*: ``STRUCTURAL``, runs must agree in it to train as one stack
(``reg_runner.run.run_stack``), or ``OWN``, each member of a stack has its own value (the default; ``OWN`` is
written where a structural group holds such a key, as a model family's ``dropout``).

Every list of keys reg_runner uses is derived here from these declarations (``Declared``, of the root schema:
``reg_runner.config.KEYS``). The Hydra choice
``hparams_search`` is no key of the config, so its role is declared below (``CHOICES``). This module imports
no numpy, torch or optuna.
"""

import functools
import typing
from dataclasses import dataclass

from pydantic import BaseModel

RESULTS, HPARAMS, FOLDER_NAMES, GROUPING = "results", "hparams", "folder names", "grouping"


@dataclass(frozen=True)
class Role:
    """A record role: what a key is to the run's records, and what that leaves it out of."""

    name: str
    left_out_of: frozenset

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class StackRole:
    """Whether runs must agree in a key to train as one stack."""

    name: str
    structural: bool

    def __repr__(self) -> str:
        return self.name


HYPERPARAMETER = Role("hyperparameter", frozenset())  # the default: no marker
REPLICATE = Role("replicate", frozenset({GROUPING}))
DETAIL = Role("detail", frozenset({HPARAMS}))
SETTING = Role("setting", frozenset({RESULTS, HPARAMS}))
PATH = Role("path", frozenset({RESULTS, HPARAMS, FOLDER_NAMES, GROUPING}))
LABEL = Role("label", frozenset({RESULTS, FOLDER_NAMES, GROUPING}))
PRESET = Role("preset", frozenset({FOLDER_NAMES, GROUPING}))

STRUCTURAL = StackRole("structural", True)
OWN = StackRole("own", False)  # the default: written only inside a structural group

# Hydra choices of the command line that are no key of the config (conf/config.yaml's defaults list)
CHOICES = {"hparams_search": PRESET}  # the search preset: every trial of a search has it, its keys say what it set


def role_marker(field) -> Role | None:
    """The record role in a pydantic field's annotation, if it declares one."""
    return next((m for m in field.metadata if isinstance(m, Role)), None)


def stack_marker(field) -> StackRole | None:
    return next((m for m in field.metadata if isinstance(m, StackRole)), None)


def groups_in(annotation) -> list:
    """The schema classes a field's annotation holds: the group's class, a union's members (``X | None`` too)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return groups_in(typing.get_args(annotation)[0])
    return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def fields_of(schema) -> typing.Iterator[tuple[str, str, object]]:
    """(key as written, attribute name, field) of every field of ``schema``."""
    for name, field in schema.model_fields.items():
        yield field.alias or name, name, field


class Declared:
    """The roles ``schema`` (the run's config schema, ``reg_runner.config.RunConfig``) declares, from which every
    list of keys is derived; a family group's keys are its base class's (a family may declare stack roles only:
    ``reg_runner.schema.FamilyGroup``)."""

    def __init__(self, schema):
        self.schema = schema

    @functools.cached_property
    def table(self) -> dict[str, Role]:
        """Every key that declares a record role, dotted, with its role."""
        out = {}

        def walk(schema, prefix):
            for key, _, field in fields_of(schema):
                role = role_marker(field)
                if role is not None:
                    out.setdefault(f"{prefix}{key}", role)
                for group in groups_in(field.annotation):
                    walk(group, f"{prefix}{key}.")

        walk(self.schema, "")
        out.update(CHOICES)
        return out

    def role_of(self, key: str) -> Role:
        """The record role of a dotted key: its own, else its nearest enclosing group's, else a hyperparameter's."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            role = self.table.get(".".join(parts[:n]))
            if role is not None:
                return role
        return HYPERPARAMETER

    def left_out_of(self, use: str) -> tuple[str, ...]:
        """The keys whose role leaves them out of ``use`` (``RESULTS``, ``HPARAMS``, ``FOLDER_NAMES``,
        ``GROUPING``), shallowest first: a group stands for its keys."""
        return tuple(k for k, r in self.table.items() if use in r.left_out_of)

    def describe(self, key: str, group_schema=None) -> str:
        """A key's roles as the configuration reference shows them (empty for an own hyperparameter);
        ``group_schema``: the class that checks the key's top-level group, for a family's or union member's keys."""
        here, structural = self.schema, False
        for i, part in enumerate(key.split(".")):
            field = next((f for k, _, f in fields_of(here) if k == part), None) if here is not None else None
            if field is None:
                break
            marker = stack_marker(field)
            structural = marker.structural if marker is not None else structural
            here = group_schema if i == 0 and group_schema is not None else next(iter(groups_in(field.annotation)),
                                                                                 None)
        role = self.role_of(key)
        return ", ".join([*(["structural"] if structural else []), *([role.name] if role is not HYPERPARAMETER
                                                                     else [])])


def structural_keys(config) -> tuple[str, ...]:
    """The keys of ``config`` (a checked ``RunConfig``, or any group of one) whose values decide which runs can
    share a stack, shallowest first: a structural group none of whose keys is ``OWN`` stands for all of them."""
    return tuple(key for key, _ in _structural(config, "", False))


def structural_values(config) -> tuple[str, ...]:
    """The values of ``structural_keys(config)``, as text: runs with equal ones can train as one stack."""
    return tuple(value.model_dump_json(by_alias=True) if hasattr(value, "model_dump_json") else repr(value)
                 for _, value in _structural(config, "", False))


def _structural(node, prefix: str, inherited: bool) -> list[tuple[str, object]]:
    out = []
    for key, name, field in fields_of(type(node)):
        marker = stack_marker(field)
        structural = marker.structural if marker is not None else inherited
        value = getattr(node, name)
        if isinstance(value, BaseModel) and _mixed(value, structural):
            out += _structural(value, f"{prefix}{key}.", structural)
        elif structural:
            out.append((f"{prefix}{key}", value))
    return out


def _mixed(group, structural: bool) -> bool:
    """Whether some key below ``group`` (an instance) declares a stack role other than ``structural``."""
    for _, name, field in fields_of(type(group)):
        marker = stack_marker(field)
        if marker is not None and marker.structural != structural:
            return True
        value = getattr(group, name)
        if isinstance(value, BaseModel) and _mixed(value, marker.structural if marker is not None else structural):
            return True
    return False
