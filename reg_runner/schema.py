"""The building blocks of every config group's schema, and the one way a bad value is reported.

Each group's package (``reg_runner.model`` for ``conf/model/``...) declares a pydantic model of the field types
below, stating type, range and unknown keys at once (Hydra's structured configs check types only); it checks a
command line, a trial and a recorded config alike, every problem one line ``key=value is not allowed: <what is
allowed>``, before torch loads.
"""

import difflib
import importlib
import math
import re
from typing import Annotated, Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny, ValidationError
from pydantic_core import PydanticCustomError

from reg_runner.errors import ConfigError, cause
from reg_runner.keys import fields_of, groups_in, role_marker

INT_LIMIT = 2**63  # numpy and torch count in int64 (a larger count fails mid-run); torch.manual_seed takes 64 bits


class Group(BaseModel):
    """A config group: every key declared, none unknown, frozen once checked."""

    # each key's description is the docstring under it, read by python -m reg_runner.docs only: pydantic's
    # use_attribute_docstrings would parse every schema's source at each start-up (~25 ms of a refused command)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


def reject(allowed: str):
    return PydanticCustomError("reg_runner", "{allowed}", {"allowed": allowed})


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rule(kind, ok, allowed: str, convert=lambda v: v):
    """A field of type ``kind`` whose values pass ``ok`` (then ``convert``-ed); any other is refused: ``allowed``."""

    def check(v):
        if not ok(v):
            raise reject(allowed)
        return convert(v)

    return Annotated[kind, PlainValidator(check)]


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open=False, hi_open=False):
    """A finite float in the interval (ints are taken as floats)."""
    allowed = (f"a number {'>' if lo_open else '>='} {lo:g}" if hi == math.inf
               else f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    return rule(float, lambda v: is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi),
                allowed, float)


def integer(lo: int = 0, hi: int | None = None):
    text = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def check(v):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise reject(text)
        if v >= INT_LIMIT:
            raise reject(f"an integer in [{lo}, 2^63)")
        return v

    return Annotated[int, PlainValidator(check)]


def one_of(*choices):
    # True == 1 in Python: compare types too, so that 1 is not taken for true
    return rule(Any, lambda v: any(v == c and type(v) is type(c) for c in choices),
                "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices))


def optional(field, what: str = "null"):
    """``field``, or None (``null`` in YAML)."""
    inner = field.__metadata__[0].func

    def check(v):
        if v is None:
            return None
        try:
            return inner(v)
        except PydanticCustomError as e:
            raise reject(f"{what} or {e.context['allowed']}") from None

    return Annotated[get_args(field)[0] | None, PlainValidator(check)]  # the reference's type: X or null


Bool = rule(bool, lambda v: isinstance(v, bool), "true or false")
Tags = rule(list, lambda v: isinstance(v, (list, tuple)) and all(isinstance(t, str) and t.strip() for t in v),
            "a list of words, e.g. tags=[baseline,first_try] (report --tag selects the runs that carry one)", list)
Text = rule(str, lambda v: isinstance(v, str) and v.strip(), "a non-empty string")
Name = rule(str, lambda v: isinstance(v, str) and v.strip() and v.isprintable(),  # in messages and file names
            "a non-empty name of printable characters (no newline, tab or other control character)")
Seed = rule(int | None, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < INT_LIMIT),
            "null or an integer in [0, 2^63)")
VAL_METRICS = ("val/acc", "val/loss")
Monitor = rule(str, lambda v: v in VAL_METRICS,
               "val/acc or val/loss (a validation metric: the test set never chooses anything)")
Positive = number(0, lo_open=True)
FLOAT32_MAX = 3.4028234663852886e38
# the optimizers step in float32: a larger rate overflows there (a traceback mid-run, not a divergence)
LearningRate = number(0, FLOAT32_MAX, lo_open=True)
NonNegative = number(0)
Fraction01 = number(0, 1, hi_open=True)  # [0, 1)
Probability = number(0, 1)  # [0, 1]


def pair(lo: float, hi: float):
    """A list of two numbers, each in [lo, hi) (Adam's betas)."""
    return rule(list, lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                and all(is_number(x) and lo <= x < hi for x in v),
                f"a list of two numbers, each in [{lo:g}, {hi:g})", lambda v: [float(x) for x in v])


def parse(model: type[BaseModel], data: Any, prefix: str = ""):
    """Validate ``data`` (plain dicts and lists) against ``model``; the first problem becomes a ``ConfigError``
    naming the dotted key, the value given and what is allowed."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
    path = _key_path(err["loc"], data, err["type"])
    key = ".".join(str(p) for p in ([prefix] if prefix else []) + path)
    kind, value = err["type"], err.get("input")
    if kind == "reg_runner":
        raise ConfigError(key, value, err["ctx"]["allowed"])
    if kind == "extra_forbidden":
        parent = ".".join(key.split(".")[:-1]) or "the config"
        known = _known_keys(model, path[:-1], data)
        hint = difflib.get_close_matches(str(path[-1]), known, n=1)
        raise ConfigError(key, value, f"{parent} has no key {path[-1]!r}"
                          + (f" (did you mean {hint[0]}?)" if hint else "")
                          + (f"; its keys are {', '.join(known)}" if known else ""))
    if kind == "missing":
        raise ConfigError(key, None, "a value is required (the key is missing)")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags", "")
        name = value.get("name") if isinstance(value, dict) else value
        raise ConfigError(f"{key}.name", name, f"one of {tags.replace(chr(39), '')}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        raise ConfigError(key, value, "a group of keys (a mapping), not a single value")
    raise ConfigError(key, value, err["msg"])


def _key_path(loc: tuple, data, kind: str) -> list:
    """The keys of ``loc`` as the user wrote them: pydantic puts a discriminated union's tag
    (``scheduler.plateau.factor``) into the location, and the config has no such level."""
    path, here = [], data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(here, dict) and part in here:
            path.append(part)
            here = here[part]
        elif isinstance(here, list) and isinstance(part, int):
            path.append(part)
            here = here[part] if part < len(here) else None
        elif last and kind in ("missing", "extra_forbidden", "reg_runner"):
            path.append(part)
        # otherwise: a union's tag, which is no key of the config
    return path


def _known_keys(model, path: list, data) -> list[str]:
    """The keys the schema declares at ``path`` (for a suggestion in the message)."""
    here_model, here = model, data
    for part in path:
        here = here.get(part) if isinstance(here, dict) else None
        field = here_model.model_fields.get(part) if here_model is not None else None
        here_model = model_of(field.annotation, here) if field is not None else None
    return [key for key, _, _ in fields_of(here_model)] if here_model is not None else []


def model_of(annotation, value):
    """The pydantic model an annotation stands for, picking a union's member by its ``name``."""
    for found in groups_in(annotation):
        tag = found.model_fields.get("name")
        if tag is None or not isinstance(value, dict) or value.get("name") in get_args(tag.annotation):
            return found
    return None


_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
Target = rule(str, lambda v: isinstance(v, str) and _TARGET.match(v),
              "a dotted Python path to a class, e.g. torch.optim.Adam")


class FamilyGroup(Group):
    """A group whose option is a *family* chosen by ``_target_`` (``conf/model/*.yaml``, ``conf/data/*.yaml``):
    ``_target_`` names a subclass of the group's base, which is the schema of the option's other keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
    target: str = Field(alias="_target_")
    """the family: the dotted path of its class"""
    ALSO: ClassVar[str] = ""  # what else ``_target_`` may name (``adopt``), as the refusal says it

    @classmethod
    def adopt(cls, target: type) -> type | None:
        """The family of a class that is not a subclass of this base (None: ``_target_`` may not name it)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        """A family's own keys may say whether they are structural, not what they are to the records: which keys
        are settings, paths or labels is read from the group's base class, the same for every family."""
        super().__pydantic_init_subclass__(**kwargs)
        base = [c for c in cls.__mro__ if isinstance(c, type) and issubclass(c, FamilyGroup)][-2]
        for name, field in cls.model_fields.items():
            if name not in base.model_fields and role_marker(field) is not None:
                raise TypeError(f"{cls.__name__}.{name}: a family's own key takes no record role "
                                f"({role_marker(field).name}); declare it on {base.__name__}")


def family(base: type[FamilyGroup], key: str, example: str):
    """The field type of the group ``key`` whose options are subclasses of ``base``: the mapping is checked
    against the schema of the class its ``_target_`` names, and becomes an instance of that class."""
    return SerializeAsAny[Annotated[base, PlainValidator(family_parser(base, key, example))]]


def family_parser(base: type[FamilyGroup], key: str, example: str):
    """``parse(value)`` for the group ``key``: an instance of the family its ``_target_`` names, checked."""

    def check(v):
        if isinstance(v, base):
            return v
        if not isinstance(v, dict):
            raise ConfigError(key, v, "a group of keys (a mapping), not a single value")
        return parse(family_class(base, key, v.get("_target_"), example), v, prefix=key)

    return check


def family_class(base: type, key: str, target, example: str) -> type:
    """The class ``target`` names, if it is one of ``base``'s families; else one line naming ``key._target_``."""
    allowed = (f"a {key} family: the dotted path of a subclass of {base.__module__}.{base.__name__}{base.ALSO}, "
               f"e.g. {example}")
    if target is None:
        raise ConfigError(f"{key}._target_", None, f"a value is required (the key is missing): {allowed}")
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ConfigError(f"{key}._target_", target, allowed)
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:  # no such module or class, or the module fails to import
        raise ConfigError(f"{key}._target_", target, f"{allowed} ({cause(e)})") from None
    if isinstance(cls, type) and issubclass(cls, base) and cls is not base:
        return cls
    if (adopted := base.adopt(cls)) is None:
        raise ConfigError(f"{key}._target_", target, allowed)
    return adopted


# the families of runs recorded before model and data families had a ``_target_``: the only ones there were
LEGACY_TARGETS = {"model": "reg_runner.model.mlp.MLP", "data": "reg_runner.data.mnist.MNIST"}


def upgrade(config: dict) -> dict:
    """A recorded config as this version reads it: a model or data group without ``_target_`` (recorded before
    families existed) is the MLP's or MNIST's."""
    out = dict(config)
    for group, target in LEGACY_TARGETS.items():
        node = out.get(group)
        if isinstance(node, dict) and "_target_" not in node:
            out[group] = {"_target_": target, **node}
    return out
