"""``python -m reg_runner.docs``: the configuration reference, ``docs/reference.md``, generated from the schemas.
"""

import ast
import functools
import inspect
import re
import textwrap
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from pydantic import BaseModel
from pydantic_core import PydanticCustomError

import reg_runner.cli  # noqa: F401 - its resolvers
from reg_runner import atomic, signals
from reg_runner.config import KEYS, RunConfig
from reg_runner.data import DataFamily
from reg_runner.errors import Parser, options, refuse, show
from reg_runner.keys import STRUCTURAL, fields_of, groups_in, stack_marker
from reg_runner.lr_find import LrFindConfig
from reg_runner.model import ModelFamily
from reg_runner.optimizer import ARGUMENTS
from reg_runner.schema import family_class, model_of

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
PRESETS = ("experiment", "hparams_search")  # groups of presets: each sets keys of the groups below
TYPES = {float: "number", int: "integer", bool: "boolean", str: "string", list: "list", Literal: "string",
         Any: "choice"}


Row = typing.NamedTuple("Row", [("key", str), ("type", str), ("default", str), ("allowed", str),
                                ("description", str | None), ("role", str)])


def type_of(annotation) -> str:
    if typing.get_origin(annotation) is Annotated:
        return type_of(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if type(None) in args:  # X | None
        return " or ".join(type_of(a) for a in args if a is not type(None)) + " or null"
    kind = typing.get_origin(annotation) or annotation  # list[str]: list, Literal["a"]: Literal
    if kind in TYPES:
        return TYPES[kind]
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def allowed_of(annotation) -> str:
    if typing.get_origin(annotation) is Literal:
        return ", ".join(str(a) for a in typing.get_args(annotation))
    for meta in typing.get_args(annotation)[1:] if typing.get_origin(annotation) is Annotated else ():
        func = getattr(meta, "func", None)
        if func is None:
            continue
        try:
            func(object())  # a value every validator refuses, so that it says what it allows
        except PydanticCustomError as e:
            return e.context["allowed"]
        except Exception:  # noqa: BLE001 - a validator that refuses otherwise says nothing usable here
            return ""
    return ""


def shown(value) -> str:
    """A default as the reference writes it: ``errors.show``'s form, but a number as ``%g`` and text bare."""
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else show(value)


@functools.cache
def docstrings(model: type) -> dict[str, str]:
    """Each field's description: the string literal under its declaration in the class body (a class's own
    docstring overrides its bases'), as PEP 257 calls attribute docstrings."""
    out = {}
    for cls in reversed([c for c in model.__mro__ if issubclass(c, BaseModel) and c is not BaseModel]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        except (OSError, TypeError):  # a class made at run time has no source
            continue
        for declaration, after in zip(body, body[1:]):
            if (isinstance(declaration, ast.AnnAssign) and isinstance(declaration.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                out[declaration.target.id] = inspect.cleandoc(after.value.value)
    return out


def rows(model: type[BaseModel], values: dict, prefix: str, structural: bool = False) -> list[Row]:
    """One row per key of ``model`` (nested groups flattened), with ``values`` as the defaults; then the keys of
    ``values`` the model takes as extra arguments (the optimizer's constructor). ``structural``: the stack role of
    ``model``'s keys that declare none (``reg_runner.keys``)."""
    out = []
    for key, name, field in fields_of(model):
        marker = stack_marker(field)
        here = structural if marker is None else marker.structural
        nested = groups_in(field.annotation)
        if len(nested) == 1:  # a group, or a group or null
            out += rows(nested[0], values.get(key) or {}, f"{prefix}{key}.", here)
            continue
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        out.append(Row(f"{prefix}{key}", type_of(annotation), shown(values.get(key)) if key in values else "-",
                       allowed_of(annotation), docstrings(model).get(name), KEYS.describe(f"{prefix}{key}", here)))
    if model.model_config.get("extra") == "allow":
        for key, value in values.items():
            if key in {k for k, _, _ in fields_of(model)}:
                continue
            field, description = ARGUMENTS.get(key, (None, None))
            out.append(Row(f"{prefix}{key}", type_of(field) if field is not None else "-", shown(value),
                           allowed_of(field) if field is not None else "checked against the class's signature",
                           description, KEYS.describe(f"{prefix}{key}", structural)))
    return out


@functools.cache
def composed(config: str = "config", overrides: tuple[str, ...] = ()) -> dict:
    """The config with ``overrides``, as a run composes it (interpolations unresolved), in ``reference``'s Hydra."""
    return OmegaConf.to_container(compose(config, overrides=list(overrides)), resolve=False)


def schema_of(group: str, values: dict) -> type[BaseModel]:
    """The schema class that checks ``values`` as the group ``group``: the family its ``_target_`` names, the
    union member its ``name`` names, or the group's one class."""
    families = {"model": ModelFamily, "data": DataFamily}
    if group in families:
        return family_class(families[group], group, values["_target_"], "")
    return model_of(RunConfig.model_fields[group].annotation, values)


def header_comment(path: Path) -> str:
    """The first comment paragraph of a YAML file, as one line."""
    words = []
    for line in path.read_text().splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (words and not text):
            break
        if text and not text.startswith("@package"):
            words.append(text)
    return " ".join(words)


def table(rs: list[Row], role: bool = True) -> list[str]:
    """``role``: the rows' roles, a column of its own."""
    def cell(text: str) -> str:  # "<option>" is text, not an HTML tag the page would swallow
        return re.sub(r"<(?=[A-Za-z/])", "&lt;", text.replace("|", "\\|").replace("\n", " "))

    lines = ["| key | type | default | allowed |" + (" role |" if role else "") + " description |",
             "|---|---|---|---|" + ("---|" if role else "") + "---|"]
    for r in rs:
        lines.append(f"| `{r.key}` | {cell(r.type)} | `{cell(r.default)}` | {cell(r.allowed)} | "
                     + (f"{r.role} | " if role else "") + f"{cell(r.description or '')} |")
    return lines


def reference() -> tuple[str, list[str]]:
    """The reference's markdown, and the keys that have no description."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf")):  # one Hydra for every composition
        return _reference()


def _reference() -> tuple[str, list[str]]:
    defaults = composed()
    groups = [name for name, f in RunConfig.model_fields.items() if (ROOT / "conf" / name).is_dir()]
    top = [name for name in RunConfig.model_fields if name not in groups]
    missing: list[str] = []
    out = ["# Configuration reference", "",
           "Generated from the schemas by `python -m reg_runner.docs` (a test fails when it is stale). Each group is "
           "a folder of `conf/` and a package of `reg_runner/`, whose schema (a pydantic model) declares every key, "
           "its type and range, and describes it; the defaults are the options' YAML files as a run composes them. "
           "Choose an option with `group=option`, set a key with `group.key=value`; a key the option does not have "
           "is refused in one line.", "",
           "A key's role, declared on it in its schema (`reg_runner.keys`), says what it is to a run's records; "
           "blank: a hyperparameter, each run's own. *structural*: runs must agree in it to train as one stack "
           "(`hydra/launcher=stacked`). *setting*: it changes no number a run records, so it is no part of a result "
           "or of TensorBoard's HParams table. *path*: a setting that is a place on this machine, also left out of "
           "a multirun job's folder name and of the report's groups. *label*: what a user writes about runs, "
           "recorded but no part of a result, a folder name or a group, and never swept. *detail*: it changes "
           "numbers but says how a run is carried out, not what it is: no column of the HParams table. "
           "*replicate*: the seed, which the report's groups leave out: runs that differ only in it replicate "
           "one setup.", ""]

    def section(rs: list[Row], role: bool = True) -> None:
        missing.extend(r.key for r in rs if not r.description)
        out.extend(table(rs, role))
        out.append("")

    out += ["## Top level", ""]
    section([r for r in rows(RunConfig, defaults, "") if r.key.split(".")[0] in top])
    for group in groups:
        chosen = defaults[group]
        default_option = next((o for o in options(group) if composed(overrides=(f"{group}={o}",))[group] == chosen),
                              None)
        out += [f"## `{group}`", "", f"Options: {', '.join(f'`{o}`' for o in options(group))}"
                + (f" (default `{default_option}`)." if default_option else "."), ""]
        for option in options(group):
            values = composed(overrides=(f"{group}={option}",))[group]
            cls = schema_of(group, values)
            out += [f"### `{group}={option}`", ""]
            if comment := header_comment(ROOT / "conf" / group / f"{option}.yaml"):
                out += [comment, ""]
            out += [f"Schema: `{cls.__module__}.{cls.__name__}`.", ""]
            section(rows(cls, values, f"{group}.", stack_marker(RunConfig.model_fields[group]) is STRUCTURAL))
    out += ["## `lr_find`", "", "The range test's own keys (`python -m reg_runner.lr_find`, `conf/lr_find.yaml`).", ""]
    section(rows(LrFindConfig, composed("lr_find")["lr_find"], "lr_find."), role=False)
    for group in PRESETS:
        out += [f"## `{group}` (presets)", "",
                "Each preset sets keys of the groups above" + (" (`+experiment=name`)." if group == "experiment" else
                                                               " and the search's sweeper (`hparams_search=name`)."),
                "", "| preset | what it is |", "|---|---|"]
        for option in options(group):
            out.append(f"| `{option}` | {header_comment(ROOT / 'conf' / group / f'{option}.yaml').replace('|', '/')} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n", missing


def main(argv=None) -> None:
    parser = Parser(prog="python -m reg_runner.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if docs/reference.md is stale "
                        "or a key has no description")
    args = parser.parse_args(argv)
    text, missing = reference()
    if missing:
        refuse(f"keys without a description in their schema: {', '.join(missing)}", 1)
    if args.check:
        if not REFERENCE.is_file() or REFERENCE.read_text() != text:
            refuse(f"{REFERENCE} is stale: run python -m reg_runner.docs", 1)
        return
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(REFERENCE, text)  # whole or not at all, whenever a signal comes
    print(f"written: {REFERENCE}")


if __name__ == "__main__":
    main()
    signals.finish(0)
