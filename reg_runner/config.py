"""A run's config: the root schema (``RunConfig``), the roles of its keys (``KEYS``), and the config as plain data
(``as_data``) and as a stack's structure. Its checks, stage by stage: ``reg_runner.checks``."""

import copy
import re
from typing import Annotated

from omegaconf import DictConfig, OmegaConf

from reg_runner import dotted, keys
from reg_runner.augmentation import AugmentationConfig
from reg_runner.data import DataConfig
from reg_runner.errors import ConfigError, UserError, first_line
from reg_runner.keys import DETAIL, LABEL, REPLICATE, SETTING, STRUCTURAL
from reg_runner.logging import LoggingConfig
from reg_runner.model import ModelConfig
from reg_runner.optimizer import OptimizerConfig, scaled_lr
from reg_runner.reg import RegConfig
from reg_runner.scheduler import SchedulerConfig
from reg_runner.schema import Bool, Group, Monitor, Seed, Tags, Text, optional
from reg_runner.trainer import TrainerConfig


class SearchSwitches(Group):
    """Which branches of a conditional search space a trial took (set by the search, recorded)."""

    dropout: Bool
    """whether the trial uses dropout (model.dropout > 0)"""
    l1: Bool
    """whether the trial uses an L1 penalty (reg.l1 > 0)"""
    l2: Bool
    """whether the trial uses an L2 penalty (reg.l2 > 0)"""


class RunConfig(Group):
    seed: Annotated[Seed, REPLICATE]
    """null: draw one (and record it)"""
    objective: Monitor
    """what picks the best epoch and what a sweeper optimizes: a validation metric"""
    search: Annotated[SearchSwitches | None, DETAIL] = None
    """only in a search"""
    tags: Annotated[Tags, LABEL] = []
    """labels that select runs in a report (`--tag`); recorded, never part of a result or a search"""
    notes: Annotated[optional(Text), LABEL] = None
    """free text about the run, recorded with it"""
    data: Annotated[DataConfig, STRUCTURAL]
    model: Annotated[ModelConfig, STRUCTURAL]  # but for the keys its family marks each run's own
    reg: RegConfig
    augmentation: AugmentationConfig
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    trainer: TrainerConfig
    logging: Annotated[LoggingConfig, SETTING]


KEYS = keys.Declared(RunConfig)  # every key's role, as the schemas declare it (reg_runner.keys)


def as_data(cfg) -> dict:
    """The composed config as plain data, interpolations resolved, Hydra's own node left out."""
    if not isinstance(cfg, DictConfig):
        return {k: v for k, v in cfg.items() if k != "hydra"}
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        return OmegaConf.to_container(job, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        key = getattr(e, "full_key", None)
        reason = first_line(e)
        if key:
            raw = dotted.get(OmegaConf.to_container(job, resolve=False), str(key))
            raise ConfigError(str(key), raw, f"a value or an interpolation that resolves ({reason})") from None
        raise UserError(f"the config does not resolve: {reason}") from None


def structural_difference(cfgs: list[RunConfig]) -> str | None:
    """The first key marked ``STRUCTURAL`` (``reg_runner.keys``) on which ``cfgs`` differ, or None: runs that agree
    in all of them can train as one stack (``reg_runner.run.run_stack``)."""
    first, *others = [c.model_dump(by_alias=True) for c in cfgs]
    return next((key for other in others for key in keys.structural_keys(cfgs[0])
                 if dotted.get(other, key) != dotted.get(first, key)), None)


def effective_lr(c: RunConfig) -> float:
    """The lr the optimizer starts with, after the large-batch rule."""
    o = c.optimizer
    return scaled_lr(o.lr, o.lr_scaling, c.trainer.batch_size * c.trainer.accumulate, o.base_batch_size)


def check_job_name(hydra_cfg) -> None:
    name = hydra_cfg.job.name
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name not in (".", "..")):
        raise ConfigError("hydra.job.name", name, "a name of letters, digits, '_', '.' and '-' (it names the log file)")


def results_config(config: dict) -> dict:
    """``config`` without the keys that change no number a run records (settings, paths, labels:
    ``reg_runner.keys``): what must match for two runs' numbers to compare."""
    out = copy.deepcopy(config)
    for key in KEYS.left_out_of(keys.RESULTS):
        dotted.drop(out, key)
    return out


def first_difference(a, b, prefix="") -> str:
    """The dotted key of the first value that differs between two nested configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return prefix.rstrip(".")

