"""What each key of a run's config is, declared once, on the key, in its group's schema.

A key's role is a marker in its annotation, ``seed: Annotated[Seed, REPLICATE]``; a group's role is every key's
below it. A key has at most one *record role* (what it is to the run's records) and at most one *stack role*:
``STRUCTURAL`` (runs must agree in it to train as one stack) or ``OWN`` (the default, written inside a structural
group, as a model family's ``dropout``). Every list of keys reg_runner uses is derived here.
"""

import functools
import typing
from dataclasses import dataclass

from pydantic import BaseModel

# the uses a record role leaves a key out of: ``config.results_config`` (what must match for two runs' numbers to
# compare), TensorBoard's HParams columns (a label is there as text), a multirun job's folder name (Hydra's
# ``override_dirname``) and the keys ``report`` groups runs by
RESULTS, HPARAMS, FOLDER_NAMES, GROUPING = "results", "hparams", "folder names", "grouping"


@dataclass(frozen=True)
class Role:
    """A record role: what a key is to the run's records, and what that leaves it out of."""

    name: str
    left_out_of: frozenset


@dataclass(frozen=True)
class StackRole:
    """Whether runs must agree in a key to train as one stack."""

    name: str
    structural: bool


HYPERPARAMETER = Role("hyperparameter", frozenset())  # the default (no marker): it defines the run
REPLICATE = Role("replicate", frozenset({GROUPING}))  # the seed: runs that differ only in it replicate one setup
DETAIL = Role("detail", frozenset({HPARAMS}))  # changes numbers, but says how a run is carried out, not what it is
SETTING = Role("setting", frozenset({RESULTS, HPARAMS}))  # changes no number: where it runs, what it shows
PATH = Role("path", frozenset({RESULTS, HPARAMS, FOLDER_NAMES, GROUPING}))  # a setting: a place on this machine
LABEL = Role("label", frozenset({RESULTS, FOLDER_NAMES, GROUPING}))  # what a user writes about runs; never swept
PRESET = Role("preset", frozenset({FOLDER_NAMES, GROUPING}))  # a search preset: its keys are recorded as themselves

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
    """The roles ``schema`` (``reg_runner.config.RunConfig``) declares; a family group's record roles are its base
    class's (``reg_runner.schema.FamilyGroup``)."""

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
        enclosing = (".".join(parts[:n]) for n in range(len(parts), 0, -1))  # the key itself first
        return next((self.table[k] for k in enclosing if k in self.table), HYPERPARAMETER)

    def left_out_of(self, use: str) -> tuple[str, ...]:
        """The keys whose role leaves them out of ``use`` (``RESULTS``, ``HPARAMS``, ``FOLDER_NAMES``,
        ``GROUPING``), shallowest first: a group stands for its keys."""
        return tuple(k for k, r in self.table.items() if use in r.left_out_of)

    def describe(self, key: str, structural: bool) -> str:
        """A key's roles as the configuration reference shows them (empty for an own hyperparameter);
        ``structural``: its stack role."""
        role = self.role_of(key)
        return ", ".join((["structural"] if structural else []) + ([role.name] if role is not HYPERPARAMETER else []))


def structural_keys(config) -> tuple[str, ...]:
    """The keys of ``config`` (a checked ``RunConfig``, or any group of one) whose values decide which runs can
    share a stack, shallowest first: a structural group none of whose keys is ``OWN`` stands for all of them."""
    return tuple(key for key, _ in _structural(config, "", False)[0])


def structural_values(config) -> tuple[str, ...]:
    """The values of ``structural_keys(config)``, as text: runs with equal ones can train as one stack."""
    return tuple(value.model_dump_json(by_alias=True) if hasattr(value, "model_dump_json") else repr(value)
                 for _, value in _structural(config, "", False)[0])


def _structural(node, prefix: str, inherited: bool) -> tuple[list[tuple[str, object]], bool]:
    """(key, value) of the structural keys below ``node`` (an instance), and whether every key below it has the
    stack role ``inherited``: such a group is one key."""
    out, uniform = [], True
    for key, name, field in fields_of(type(node)):
        marker = stack_marker(field)
        structural = marker.structural if marker is not None else inherited
        uniform &= structural == inherited
        value = getattr(node, name)
        if isinstance(value, BaseModel):
            below, same = _structural(value, f"{prefix}{key}.", structural)
            uniform &= same
            if not same:
                out += below
                continue
        if structural:
            out.append((f"{prefix}{key}", value))
    return out, uniform
