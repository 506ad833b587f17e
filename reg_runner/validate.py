"""Checks every user-settable value before anything runs.

A bad value raises ``ConfigError`` naming the key, the value and what is allowed, which the
CLI prints as one line. Hydra already rejects unknown group options and misspelled keys.
"""

import math
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import OmegaConf

from reg_runner.augment import NAMES as AUGMENTATIONS
from reg_runner.errors import ConfigError
from reg_runner.model import ACTIVATIONS, INITS, NORM_POSITIONS, NORMS
from reg_runner.optim import SCHEDULERS
from reg_runner.precision import PRECISIONS

METRICS = ("val/acc", "val/loss")


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    allowed: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= lo, f"an integer >= {lo}")


def number(lo: float, hi: float = math.inf, lo_open=False, hi_open=True) -> Rule:
    def ok(v):
        return _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    lo_s, hi_s = ("(" if lo_open else "["), (")" if hi_open else "]")
    return Rule(ok, f"a number in {lo_s}{lo:g}, {hi:g}{hi_s}")


def one_of(*choices) -> Rule:
    return Rule(lambda v: isinstance(v, (str, bool)) and v in choices, "one of " + ", ".join(map(str, choices)))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.allowed}")


BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")

RULES: dict[str, Rule] = {
    "seed": optional(integer(0)),
    "objective": one_of(*METRICS),
    "data.root": optional(TEXT),
    "data.train_fraction": number(0, 1, lo_open=True, hi_open=False),
    "data.val_size": optional(integer(1)),
    "data.split_seed": integer(0),
    "data.stratified": BOOL,
    "data.normalize": BOOL,
    "model.depth": integer(0),
    "model.width": integer(1),
    "model.activation": one_of(*ACTIVATIONS),
    "model.norm": one_of(*NORMS),
    "model.norm_position": one_of(*NORM_POSITIONS),
    "model.dropout": number(0, 1),
    "model.residual": BOOL,
    "model.init": one_of(*INITS),
    "reg.l1": number(0),
    "reg.l2": number(0),
    "reg.apply_to": one_of("weights", "all"),
    "augmentation.name": one_of(*AUGMENTATIONS),
    "optimizer.lr": number(0, lo_open=True),
    "optimizer.weight_decay": optional(number(0)),
    "optimizer.lr_scaling": one_of("none", "linear", "sqrt"),
    "optimizer.base_batch_size": integer(1),
    "scheduler.name": one_of(*SCHEDULERS),
    "scheduler.warmup_epochs": integer(0),
    "scheduler.warmup_start_factor": number(0, 1, lo_open=True, hi_open=False),
    "trainer.epochs": integer(1),
    "trainer.batch_size": integer(1),
    "trainer.eval_every": integer(1),
    "trainer.eval_batch_size": integer(1),
    "trainer.eval_precision": one_of(*PRECISIONS),
    "trainer.accumulate": integer(1),
    "trainer.drop_last": BOOL,
    "trainer.grad_clip": optional(number(0, lo_open=True)),
    "trainer.early_stopping.enabled": BOOL,
    "trainer.early_stopping.monitor": one_of(*METRICS),
    "trainer.early_stopping.patience": integer(1),
    "trainer.early_stopping.min_delta": number(0),
    "trainer.device": Rule(
        lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or v.startswith("cuda:")),
        "one of auto, cpu, cuda, cuda:N, mps",
    ),
    "trainer.deterministic": BOOL,
    "trainer.checkpoint_every": integer(1),
    "logging.progress": one_of("auto", True, False),
    "logging.tensorboard": BOOL,
    "logging.histograms": integer(0),
    "logging.probe_size": integer(1),
}


# the keys an augmentation option has (each option has some of them)
AUGMENTATION_RULES: dict[str, Rule] = {
    "p": number(0, 1, hi_open=False),
    "sigma": number(0),
    "clamp": BOOL,
    "degrees": number(0, 180, hi_open=False),
    "scale": Rule(lambda v: isinstance(v, (list, tuple)) or OmegaConf.is_list(v), "a list [low, high]"),
    "translate": number(0, 1),
    "shear": number(0, 90),
}


def validate(cfg) -> None:
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if not rule.ok(value):
            raise ConfigError(key, value, rule.allowed)
    for key, rule in AUGMENTATION_RULES.items():
        if key in cfg.augmentation and not rule.ok(cfg.augmentation[key]):
            raise ConfigError(f"augmentation.{key}", cfg.augmentation[key], rule.allowed)
    scale = cfg.augmentation.get("scale")
    if scale is not None and not (len(scale) == 2 and all(_is_number(v) for v in scale) and 0 < scale[0] <= scale[1]):
        raise ConfigError("augmentation.scale", list(scale), "[low, high] with 0 < low <= high")
    epochs = cfg.trainer.epochs
    if cfg.scheduler.warmup_epochs >= epochs:
        raise ConfigError(
            "scheduler.warmup_epochs", cfg.scheduler.warmup_epochs, f"fewer than trainer.epochs={epochs}"
        )
