"""The ``model`` group: model families, each chosen by ``_target_`` in ``conf/model/<name>.yaml`` (docs/families.md).

A family is a ``ModelFamily`` subclass or a plain ``torch.nn.Module`` class (``Module``): docs/families.md, "Your
own network".

``shape`` is one image's ``(channels, height, width)``. The schemas import no torch, so a mistyped value is
refused before torch loads: a family keeps its torch code in functions or a companion module (``mlp_net``).
"""

import functools
import inspect
import json
import site
import sys
import traceback
import typing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, ValidationError, create_model, model_serializer, model_validator

from reg_runner.errors import ConfigError, UserError, cause, first_line, show
from reg_runner.keys import OWN, stack_marker
from reg_runner.schema import FamilyGroup, family, family_parser, upgrade

EXAMPLE = "reg_runner.model.mlp.MLP"


class ModelFamily(FamilyGroup):
    ALSO: ClassVar[str] = ", or a torch.nn.Module class (the other keys: its constructor's arguments)"

    @classmethod
    def adopt(cls, target: type) -> type | None:
        """A ``torch.nn.Module`` class's family (``Module``)."""
        torch = sys.modules.get("torch")  # a subclass of torch.nn.Module was defined with torch imported
        if torch is not None and isinstance(target, type) and issubclass(target, torch.nn.Module):
            return family_of(target)
        return None

    def structural_keys(self) -> tuple[str, ...]:
        """The family's keys that runs must share to train as one stack (``_target_`` aside)."""
        return tuple(k for k, f in type(self).model_fields.items() if k != "target" and stack_marker(f) is not OWN)

    def describe(self) -> str:
        return type(self).__name__

    def check(self, shape: tuple[int, ...], n_classes: int) -> None:
        """Rules that need the data's image shape: raise ``ConfigError`` naming the key."""

    def unread(self, key: str) -> str | None:
        """Why ``model.<key>``, set on the command line, would not be read by this config (None: it is read)."""

    def uses_batch_statistics(self, shape: tuple[int, ...], n_classes: int) -> bool:
        """Whether the network normalizes with batch statistics (a batch of one image breaks it): the default
        looks for BatchNorm in the plain network built on the meta device (none if it fails: ``dry_run`` says why)."""
        import torch

        try:
            with torch.device("meta"):
                net = self.plain(tuple(shape), n_classes)
        except Exception:
            return False
        norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
        return isinstance(net, torch.nn.Module) and any(isinstance(m, norms) for m in net.modules())

    def plain(self, shape: tuple[int, ...], n_classes: int):
        """One network as ``torch.nn`` modules: what a run's checkpoint loads into."""
        raise NotImplementedError(f"{type(self).__name__}.plain")

    def stacked(self, shape: tuple[int, ...], n_classes: int, members: list, dropout_generators: list):
        """K networks as one module whose every parameter has a leading member dimension, member k configured by
        ``members[k]``: the family's faster form, checked to give each member its lone run's numbers to the bit
        (``reg_runner.exactness``); None (the default): ``stack.Looped``, exact by construction."""

    def initialize(self, model, k: int, generator) -> None:
        """Member k of a stacked ``model``, drawn from its own ``generator``: the default is the plain network's
        own initialization."""
        model.initialize_as_plain(k, lambda: self.plain(model.shape, model.n_classes), generator)


# reg_runner's files and the installed packages' (torch's among them)
LIBRARIES = (str(Path(__file__).resolve().parents[1]), sys.prefix, sys.base_prefix, site.getusersitepackages())


def calling(cfg: ModelFamily, doing: str, call):
    """``call()`` of a family's code; its exception becomes one line naming the family, the exception and the
    innermost line outside reg_runner and the installed packages, which is the family's own (the exception is
    the line's cause: its traceback shows with ``HYDRA_FULL_ERROR=1``)."""
    try:
        return call()
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # SystemExit: the family's own sys.exit() is no end of the command
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(LIBRARIES)]
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        message = first_line(e)
        raise UserError(f"model._target_={show(cfg.target)}: {doing} raised {type(e).__name__}"
                        + (f": {message}" if message else "") + where) from e


# --- any torch.nn.Module class is a family ------------------------------------------------------------------

FILLED = {"num_classes": "its classes", "n_classes": "its classes", "in_channels": "its images' channels"}


class Module(ModelFamily):
    """The family of a plain ``torch.nn.Module`` class (``family_of``; docs/families.md, "Your own network"): the
    data fills the arguments of ``FILLED`` the constructor declares."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    MODULE: ClassVar[type]
    FILLS: ClassVar[tuple[str, ...]] = ()  # the constructor's arguments that the data fills

    @model_validator(mode="before")
    @classmethod
    def _arguments(cls, v):
        if isinstance(v, dict):
            name = f"{cls.MODULE.__module__}.{cls.MODULE.__qualname__}"
            for key, value in v.items():
                if key in cls.FILLS:
                    raise ConfigError(f"model.{key}", value, f"left out: the data sets it ({FILLED[key]})")
                if key != "_target_" and key not in cls.model_fields:
                    args = [k for k in cls.model_fields if k != "target"]
                    raise ConfigError(f"model.{key}", value, f"an argument of {name}, which takes no {key!r} ("
                                      + (f"its arguments: {', '.join(args)}" if args else "it takes no argument")
                                      + (f"; the data sets {', '.join(cls.FILLS)}" if cls.FILLS else "") + ")")
            # a tuple argument takes the list a YAML file or a command line gives
            return {k: tuple(x) if isinstance(x, list) and k in cls.model_fields
                    and _holds_tuple(cls.model_fields[k].annotation) else x for k, x in v.items()}
        return v

    @classmethod
    def model_validate(cls, obj, **kwargs):
        """A value of the wrong type, or an argument without a default left out: one line saying what the
        constructor declares."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            err = e.errors()[0]
            key = err["loc"][0] if err["loc"] else None
            if key not in cls.model_fields:
                raise
            if err["type"] == "missing":
                raise ConfigError(f"model.{key}", None, f"a value: {cls.MODULE.__qualname__}'s {key} has no "
                                  "default") from None
            kind = cls.model_fields[key].annotation
            kind = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            raise ConfigError(f"model.{key}", err.get("input"), f"a value of type {kind}, as "
                              f"{cls.MODULE.__qualname__}({key}: {kind}) declares it") from None

    def __reduce__(self):  # the class is made here, named as the module's class: pickled as its config
        return from_record, (self.model_dump(by_alias=True),)

    @model_serializer(mode="wrap")
    def _given(self, handler):
        """The keys the config gives, not the constructor's defaults (which need not be data)."""
        return {k: v for k, v in handler(self).items() if k in ("_target_", "target") or k in self.model_fields_set}

    def plain(self, shape, n_classes: int):
        given = {k: getattr(self, k) for k in self.model_fields_set if k != "target"}  # else its own defaults
        data = {"num_classes": n_classes, "n_classes": n_classes, "in_channels": shape[0]}
        return self.MODULE(**given, **{k: data[k] for k in self.FILLS})


@functools.cache
def family_of(module: type) -> type[Module]:
    """The schema of ``module``'s constructor: a field per argument, of its annotation, default and kind."""
    try:
        params = inspect.signature(module, eval_str=True).parameters
    except Exception:  # an annotation that does not evaluate here: that argument takes any value
        params = inspect.signature(module).parameters
    fields = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in FILLED:
            continue
        kind = Any if p.annotation is p.empty or isinstance(p.annotation, str) else p.annotation
        default = ... if p.default is p.empty else p.default
        fields[name] = (kind, default)
    try:
        out = create_model(module.__name__, __base__=Module, __module__=module.__module__, **fields)
    except Exception as e:
        raise ConfigError("model._target_", f"{module.__module__}.{module.__qualname__}", "a class whose constructor's "
                          f"arguments can be checked ({cause(e)})") from None
    out.MODULE, out.FILLS = module, tuple(n for n in params if n in FILLED)
    return out


def _holds_tuple(kind) -> bool:
    return kind is tuple or typing.get_origin(kind) is tuple or any(map(_holds_tuple, typing.get_args(kind)))


ModelConfig = family(ModelFamily, "model", EXAMPLE)
parse_config = family_parser(ModelFamily, "model", EXAMPLE)  # a recorded config's model mapping -> its family


def from_record(model: dict) -> ModelFamily:
    return parse_config(model)


def load(run_dir, which: str = "best"):
    """The network of a run folder's ``checkpoints/<which>.pt``, as its family's plain network in eval mode."""
    import torch

    run_dir = Path(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=True)
    cfg = parse_config(upgrade(checkpoint["config"])["model"])
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    shape = data["image_shape"]  # (H, W) in records made before channels were kept
    net = cfg.plain(tuple(shape) if len(shape) == 3 else (1, *shape), data.get("n_classes", 10))
    net.load_state_dict(checkpoint["model"])
    return net.eval()
