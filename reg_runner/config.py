"""A run's config, checked whole before anything is made.

Hydra composes the config; ``check`` then takes it through four stages, each raising a
``ConfigError`` (one line: the key, the value, what is allowed) at the first problem:

1. the schema of every group (``reg_runner.<group>``): types, ranges, choices, unknown keys;
2. rules across groups (a warmup shorter than the run, a cosine floor under the lr...), and keys
   set on the command line that the run would not read (``model.norm_position`` without a norm);
3. rules that need the data's sizes (a batch larger than the training set, BatchNorm meeting a
   batch of one image), with the split itself, read once per process;
4. what needs torch: the device exists, the model fits in memory, the optimizer class takes every
   argument and accepts its values, the schedule can be built.

Stages 1-3 import no torch, so most mistakes are reported in about a third of a second (docs/speed.md).

A job's config is checked once: the ``Checked`` that ``check`` returns knows the last stage it passed
and travels with the job (``reg_runner.run.Job.checked``); ``carry_on`` takes it through the later
stages only (the machine, after a sweeper's stage-3 check). Where Hydra gives no channel between
the code that checks a config and the task function that runs it in the same process (a single run's
callback, a sweeper and the jobs Hydra's basic launcher runs), the checker hands the ``Checked`` over
(``hand_over``) and the task takes it back (``take_over``): see ``hand_over``.
"""

import os
from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import ConfigDict, PlainValidator

from reg_runner import data as data_group
from reg_runner import dotted, keys
from reg_runner.augmentation import AugmentationConfig
from reg_runner.data import DataConfig
from reg_runner.errors import ConfigError, UserError
from reg_runner.keys import DETAIL, LABEL, REPLICATE, SETTING, STRUCTURAL
from reg_runner.logging import LoggingConfig
from reg_runner.model import ModelConfig, calling
from reg_runner.optimizer import OptimizerConfig, scaled_lr
from reg_runner.reg import RegConfig
from reg_runner.scheduler import PER_BATCH, SchedulerConfig
from reg_runner.schema import Bool, Group, Monitor, Seed, Tags, Text, optional, parse, reject
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


@dataclass(frozen=True)
class Checked:
    """A config that passed the stages up to ``stage`` (3: the data; 4: the machine too), and the data split
    it describes."""

    cfg: RunConfig
    split: data_group.Split
    stage: int


def as_data(cfg) -> dict:
    """The composed config as plain data, interpolations resolved, Hydra's own node left out."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        try:
            data = OmegaConf.to_container(job, resolve=True)
        except Exception as e:  # an interpolation that does not resolve
            key = getattr(e, "full_key", None)
            reason = str(e).splitlines()[0]
            if key:
                raw = dotted.get(OmegaConf.to_container(job, resolve=False), str(key))
                raise ConfigError(str(key), raw, f"a value or an interpolation that resolves ({reason})") from None
            raise UserError(f"the config does not resolve: {reason}") from None
    else:
        data = dict(cfg)
    if not isinstance(data, dict):
        raise UserError(f"a run's config is a mapping of keys, not {type(data).__name__}")
    data.pop("hydra", None)
    return data


def check(cfg, overrides=(), through: int = 4) -> Checked | RunConfig:
    """The stages, in order, up to ``through``; ``overrides``: the command line's ``key=value``
    items, for stage 2. Returns the typed config alone when stopping before the data stage."""
    chosen_by_group(overrides)
    run = parse(RunConfig, as_data(cfg))
    if through < 2:
        return run
    typed = {key for key, _ in override_items(overrides)}
    try:
        rules(run)
        unread_overrides(run, overrides)
        if through < 3:
            return run
        split = against_data(run)
    except ConfigError as e:  # a rule across keys names the key the user set
        raise e.named_as_set(typed) from None
    return carry_on(Checked(run, split, 3), through)


def carry_on(checked: Checked, through: int = 4, passed: set | None = None) -> Checked:
    """``checked`` through the stages after the last it passed, up to ``through``; none of its stages again.
    ``passed``: the ``machine_inputs`` of configs that passed stage 4 in this process (added to), for a
    sweep's many jobs: a config equal to one of them in all that stage reads is not checked again."""
    if through < 4 or checked.stage >= 4:
        return checked
    key = machine_inputs(checked) if passed is not None else None
    if key is None or key not in passed:
        against_machine(checked.cfg, checked.split)
        if passed is not None:
            passed.add(key)
    return replace(checked, stage=4)


def machine_inputs(checked: Checked) -> tuple:
    """All that stage 4 (``against_machine``) reads of a config and its split: configs equal in it pass it alike."""
    c, split = checked.cfg, checked.split
    return (c.trainer.model_dump_json(), c.optimizer.model_dump_json(), c.scheduler.model_dump_json(),
            c.model.model_dump_json(by_alias=True), c.augmentation.model_dump_json(), split.shape, split.n_classes,
            split.n_train)


# A Checked handed from the code that checked a config to the task function that runs it, in this process:
# Hydra gives no public channel between a callback (``on_run_start``) or a sweeper and the task function its
# launcher calls, and each composes the config anew. Keyed by the config as plain data (``as_data``) and the
# command line's task overrides: what ``check`` reads. Each hand-over is taken back once; what is left (a run
# refused after its check) is dropped when the next command starts (``forget_handed``).
_HANDED: dict[str, list[Checked]] = {}


def _handed_key(cfg, overrides) -> str:
    """Hydra's own overrides (``hydra.*``, ``hydra/...``) are left out: Hydra keeps them out of the task's
    (``hydra.overrides.task``), and a config that passed with them passes without (stage 2 reads none)."""
    import json

    task = [o for o in plain_overrides(overrides) if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return json.dumps([as_data(cfg), task], sort_keys=True, default=repr)


def hand_over(checked: Checked, cfg, overrides=()) -> None:
    """Keep ``checked`` (the check of ``cfg`` with ``overrides``) for the task function that runs ``cfg`` next in
    this process, which takes it back with ``take_over`` instead of checking it again."""
    _HANDED.setdefault(_handed_key(cfg, overrides), []).append(checked)


def take_over(cfg, overrides=()) -> Checked | None:
    """The ``Checked`` handed over for ``cfg`` with ``overrides`` (then no longer kept), or None: check it."""
    if not _HANDED:
        return None
    key = _handed_key(cfg, overrides)
    waiting = _HANDED.get(key)
    if not waiting:
        return None
    checked = waiting.pop()
    if not waiting:
        del _HANDED[key]
    return checked


def forget_handed() -> None:
    """Drop what no task took back (a command starts: what an earlier one in this process left is not its own)."""
    _HANDED.clear()


# what several runs must share to train as one stack (``reg_runner.run.run_stack``): the keys marked
# ``STRUCTURAL`` in the schemas (``reg_runner.keys``): the data, the model family's keys but those it marks each
# run's own (such as init and dropout), and the shape of the loop. Everything else (seed, L1/L2, augmentation,
# optimizer and its every argument, schedule, clipping, early stopping, objective, logging, checkpoints) is each
# run's own.
def structural_keys(c: RunConfig) -> tuple[str, ...]:
    """The keys whose values decide which runs can share a stack with ``c``."""
    return keys.structural_keys(c)


def structure(c: RunConfig) -> tuple:
    """The values of ``structural_keys``: runs with equal structures can train as one stack."""
    return keys.structural_values(c)


def structural_difference(cfgs: list[RunConfig]) -> str | None:
    """The first structural key on which ``cfgs`` differ, or None."""
    first = cfgs[0]
    for c in cfgs[1:]:
        if structure(c) == structure(first):
            continue
        for key in structural_keys(first):
            if value_at(c.model_dump(by_alias=True), key) != value_at(first.model_dump(by_alias=True), key):
                return key
    return None


def effective_lr(c: RunConfig) -> float:
    """The lr the optimizer starts with, after the large-batch rule."""
    o = c.optimizer
    return scaled_lr(o.lr, o.lr_scaling, c.trainer.batch_size * c.trainer.accumulate, o.base_batch_size)


def rules(c: RunConfig) -> None:
    """Stage 2: rules across keys and groups."""
    s, t, m = c.scheduler, c.trainer, c.model
    lr = effective_lr(c)
    if s.warmup_epochs >= t.epochs:
        raise ConfigError("scheduler.warmup_epochs", s.warmup_epochs, f"it must be fewer than trainer.epochs "
                          f"({t.epochs}), so that the warmup ends before the run does",
                          others=[("trainer.epochs", t.epochs)])
    if s.name in PER_BATCH and s.warmup_epochs:
        raise ConfigError("scheduler.warmup_epochs", s.warmup_epochs,
                          f"0 with scheduler={s.name}: it starts from its own low learning rate and has no warmup")
    if s.name == "step" and s.step_size >= t.epochs - s.warmup_epochs:
        raise ConfigError("scheduler.step_size", s.step_size, f"less than {t.epochs - s.warmup_epochs}, the epochs "
                          "after warmup: the lr first drops after step_size epochs, so a step as long never lowers it",
                          others=[("trainer.epochs", t.epochs), ("scheduler.warmup_epochs", s.warmup_epochs)])
    lr_keys = [("optimizer.lr", c.optimizer.lr), ("optimizer.lr_scaling", c.optimizer.lr_scaling),
               ("trainer.batch_size", t.batch_size), ("trainer.accumulate", t.accumulate)]
    if s.name == "cosine" and s.eta_min > lr:
        raise ConfigError("scheduler.eta_min", s.eta_min, f"at most the lr ({lr:g}): cosine annealing goes down to it",
                          others=lr_keys)
    if s.name == "plateau" and s.min_lr >= lr:
        raise ConfigError("scheduler.min_lr", s.min_lr, f"less than the lr ({lr:g}): the plateau rule lowers the lr "
                          "towards it", others=lr_keys)
    if s.name == "cyclic":
        base = s.base_lr if s.base_lr is not None else lr / 10
        top = s.max_lr if s.max_lr is not None else lr
        if base >= top:
            raise ConfigError("scheduler.base_lr", s.base_lr, f"less than the cycle's max_lr ({top:g})")
    if s.name in PER_BATCH and s.cycle_momentum:
        args = c.optimizer.arguments
        if "momentum" not in args and "betas" not in args:
            raise ConfigError("scheduler.cycle_momentum", True, f"false with optimizer {c.optimizer.target}: it has "
                              "neither momentum nor betas to cycle")
        if s.base_momentum > s.max_momentum:
            raise ConfigError("scheduler.base_momentum", s.base_momentum,
                              f"at most scheduler.max_momentum={s.max_momentum:g}")
    if c.search is not None:
        for switch, key, value in (("dropout", "model.dropout", getattr(m, "dropout", 0.0)), ("l1", "reg.l1", c.reg.l1),
                                   ("l2", "reg.l2", c.reg.l2)):
            if getattr(c.search, switch) != (value > 0):
                raise ConfigError(key, value, f"{'> 0' if getattr(c.search, switch) else '0'} while "
                                  f"search.{switch}={str(getattr(c.search, switch)).lower()}: the switch records "
                                  "whether the trial uses it")


# key set on the command line -> (when the run reads it, why not); ``model.*`` keys: the family's ``unread``
def _lr_read(c: RunConfig) -> bool:
    """Whether optimizer.lr sets any learning rate (one-cycle with its own max_lr, and a cyclic schedule
    with both bounds, replace it)."""
    s = c.scheduler
    return not ((s.name == "onecycle" and s.max_lr is not None)
                or (s.name == "cyclic" and s.base_lr is not None and s.max_lr is not None))


DEPENDENT = {
    "optimizer.lr": (_lr_read, "the schedule sets every learning rate itself (scheduler.max_lr, and base_lr for "
                     "cyclic): set those instead"),
    "optimizer.dampening": (lambda c: c.optimizer.arguments.get("momentum", 0) > 0, "optimizer.momentum=0: "
                            "dampening acts on the momentum"),
    "reg.apply_to": (lambda c: c.reg.l1 > 0 or c.reg.l2 > 0, "reg.l1 = reg.l2 = 0: there is no penalty"),
    "scheduler.warmup_start_factor": (lambda c: c.scheduler.warmup_epochs > 0, "scheduler.warmup_epochs=0"),
    "scheduler.base_momentum": (lambda c: getattr(c.scheduler, "cycle_momentum", False),
                                "scheduler.cycle_momentum=false"),
    "scheduler.max_momentum": (lambda c: getattr(c.scheduler, "cycle_momentum", False),
                               "scheduler.cycle_momentum=false"),
    "scheduler.gamma": (lambda c: c.scheduler.name != "cyclic" or c.scheduler.mode == "exp_range",
                        "scheduler.mode is not exp_range"),
    "optimizer.base_batch_size": (lambda c: c.optimizer.lr_scaling != "none", "optimizer.lr_scaling=none"),
    "optimizer.momentum": (lambda c: not getattr(c.scheduler, "cycle_momentum", False),
                           "scheduler.cycle_momentum=true: the cycle sets the momentum"),
    "trainer.early_stopping.monitor": (lambda c: c.trainer.early_stopping.enabled,
                                       "trainer.early_stopping.enabled=false"),
    "trainer.early_stopping.patience": (lambda c: c.trainer.early_stopping.enabled,
                                        "trainer.early_stopping.enabled=false"),
    "trainer.early_stopping.min_delta": (lambda c: c.trainer.early_stopping.enabled,
                                         "trainer.early_stopping.enabled=false"),
    "logging.histograms": (lambda c: c.logging.tensorboard, "logging.tensorboard=false"),
    "logging.probe_size": (lambda c: c.logging.tensorboard and c.logging.histograms > 0,
                           "no histograms are recorded (logging.tensorboard=false or logging.histograms=0)"),
    "augmentation.fill": (lambda c: c.augmentation.pad > 0, "augmentation.pad=0: nothing is shifted in"),
    "data.verify": (lambda c: c.data.root is not None, "data.root=null: the store's files are checked as they are "
                    "placed there"),
}
# chosen by the group (scheduler=plateau), which brings the option's keys: a name typed as a key would not
CHOSEN_BY_GROUP = {"scheduler.name": "scheduler", "augmentation.name": "augmentation"}


def plain_overrides(overrides) -> list[str]:
    """The command line's overrides as strings (a ListConfig would resolve a ``${...}`` in them)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_list(overrides):
        return [str(o) for o in OmegaConf.to_container(overrides, resolve=False)]
    return [str(o) for o in overrides]


def override_items(overrides) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` on the command line, without ``+``/``++``/``~``."""
    items = []
    for item in plain_overrides(overrides):
        key, sep, value = str(item).partition("=")
        if sep:
            items.append((key.lstrip("+~"), value))
    return items


def chosen_by_group(overrides) -> None:
    """An option's ``name`` typed as a key (``scheduler.name=plateau``) would bring none of its keys; a
    key given twice keeps only its last value; Hydra's own runtime keys are not settings."""
    seen = {}
    for key, value in override_items(overrides):
        if key in seen:
            raise ConfigError(key, value, f"one value: it is given twice ({key}={seen[key]}, then {key}={value}), "
                              "and only the last would count")
        seen[key] = value
        if key.startswith(("hydra.runtime.", "hydra.job.num", "hydra.job.id")) or key == "hydra.mode":
            raise ConfigError(key, value, "set by Hydra, not on the command line (--multirun chooses the mode)")
        if key in CHOSEN_BY_GROUP:
            group = CHOSEN_BY_GROUP[key]
            raise ConfigError(key, value, f"set by the {group} group: choose the option with {group}={value}, "
                              "which brings its keys")


MULTIRUN_ONLY = ("hydra.sweep.", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher")


def _job_name(v):
    """``hydra.job.name``: it names a run's log file."""
    import re

    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", v) or v in (".", ".."):
        raise reject("a name of letters, digits, '_', '.' and '-' (it names the log file)")
    return v


class JobNames(Group):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: Annotated[str, PlainValidator(_job_name)]


def check_job_name(hydra_cfg) -> None:
    parse(JobNames, {"name": hydra_cfg.job.name}, "hydra.job")


def hydra_overrides(overrides, multirun: bool) -> None:
    """Hydra's own keys on the command line (``config.hydra.overrides.hydra``): each once, none that Hydra
    sets itself, and none that this mode does not read (a single run has no sweeper, launcher or sweep
    folder; a multirun's folder is ``hydra.sweep.dir``, not ``hydra.run.dir``). ``hydra.mode=MULTIRUN`` is
    Hydra's own spelling of --multirun, which Hydra adds to this list itself. (``hparams_search=...`` is a task
    key, allowed in a single run: there it is the search's base config, as a sweep summary's re-run command uses it.)"""
    overrides = [o for o in plain_overrides(overrides) if str(o).partition("=")[0].lstrip("+~") != "hydra.mode"]
    chosen_by_group(overrides)
    for key, value in override_items(overrides):
        if multirun and key.startswith("hydra.run."):
            raise ConfigError(key, typed_value(value), "not read by a --multirun: its folder is hydra.sweep.dir")
        if not multirun and key.startswith(MULTIRUN_ONLY):
            raise ConfigError(key, typed_value(value), "not read by a single run, which has no sweep, sweeper or "
                              "launcher: add --multirun" + (" (its folder is hydra.sweep.dir)"
                                                            if key.startswith("hydra.sweep.") else ""))


def unread_overrides(c: RunConfig, overrides) -> None:
    """Stage 2: a value typed on the command line that the run would not read is an error."""
    for key, value in override_items(overrides):
        why = None
        if key in DEPENDENT:
            reads, why = DEPENDENT[key]
            why = None if reads(c) else why
        elif key.startswith("model."):
            why = calling(c.model, f"asking whether it reads {key}",
                          lambda: c.model.unread(key.removeprefix("model.")))
        if why is not None:
            raise ConfigError(key, typed_value(value), f"not set while {why} (the run would not read it)")


def typed_value(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:
        return text


def against_data(c: RunConfig) -> data_group.Split:
    """Stage 3: the split, and the rules that need its sizes."""
    split = data_group.split(c.data)
    t, n = c.trainer, split.n_train
    sizes = [("data.train_fraction", c.data.train_fraction), ("data.root", c.data.root)]
    if t.batch_size > n:
        raise ConfigError("trainer.batch_size", t.batch_size, f"at most {n}, the training images", others=sizes)
    batches = t.batches_per_epoch(n)
    if t.accumulate > batches:
        raise ConfigError("trainer.accumulate", t.accumulate, f"at most {batches}, the batches of an epoch",
                          others=[("trainer.batch_size", t.batch_size), ("trainer.drop_last", t.drop_last), *sizes])
    said = calling(c.model, "checking it against the data", lambda: c.model.check(split.shape, split.n_classes))
    if said is not None:  # a refusal returned rather than raised would pass unheard
        raise ConfigError("model._target_", c.model.target, f"a family whose check() raises ConfigError to refuse and "
                          f"returns None (it returned {said!r})")
    if (t.batch_size == 1 or (not t.drop_last and n % t.batch_size == 1)) and c.model.uses_batch_statistics(
            split.shape, split.n_classes):
        norm = ("model.norm=batchnorm" if getattr(c.model, "norm", None) == "batchnorm"
                else f"{c.model.target}'s BatchNorm")
        raise ConfigError("trainer.batch_size", t.batch_size,
                          f"a size that leaves no batch of 1 image with {norm} ({n} training images "
                          f"make a last batch of {n % t.batch_size or t.batch_size}), as BatchNorm cannot normalize "
                          "a single image; or trainer.drop_last=true", others=[("model.norm", "batchnorm"), *sizes])
    a = c.augmentation
    if a.name == "crop" and a.pad >= min(split.shape[1:]):
        raise ConfigError("augmentation.pad", a.pad, f"less than the images' side ({min(split.shape[1:])} pixels)")
    s = c.scheduler
    if s.name == "cyclic":
        from reg_runner.scheduler.schedule import cycle_steps

        if cycle_steps(s.step_size_up_epochs, t.steps_per_epoch(n)) < 1:
            raise ConfigError("scheduler.step_size_up_epochs", s.step_size_up_epochs,
                              "at least one optimizer step's worth of an epoch")
    return split


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def against_machine(c: RunConfig, split: data_group.Split) -> None:
    """Stage 4: the device, the model's size, the optimizer class and its arguments, the schedule."""
    import torch

    from reg_runner.optimizer import build as optimizer_build
    from reg_runner.scheduler.schedule import Schedule

    device = c.trainer.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device", device, "auto or cpu: CUDA is not available on this machine")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError("trainer.device", device, f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device", device, "auto or cpu: MPS is not available on this machine")

    batch = c.trainer.batch_size * c.trainer.accumulate
    states = optimizer_build.check(c.optimizer, batch)
    fits(c, split, *device_memory(device), copies=3 + states)  # the weights, their gradients, the best epoch's copy
    max_lr = getattr(c.scheduler, "max_lr", None)
    if max_lr is not None:  # one-cycle's and the cyclic schedule's peak: the step must hold it too
        optimizer_build.step_at(c.optimizer, batch, max_lr, "scheduler.max_lr", max_lr)
    probe = optimizer_build.build([torch.zeros(1, requires_grad=True)], c.optimizer, batch)
    t = c.trainer
    Schedule(probe, c.scheduler, t.epochs, t.steps_per_epoch(split.n_train))
    if c.augmentation.name == "torchvision":
        from reg_runner.augmentation.ops import torchvision_transforms

        torchvision_transforms(c.augmentation)


def device_memory(device: str) -> tuple[int | None, str]:
    """The memory of a run's device (``trainer.device``), and what it is called in a message."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(torch.device(device if ":" in device else "cuda")).total_memory, "GPU"
    return memory_bytes(), "machine"


def _eval_batch(t, split: data_group.Split) -> int:
    """The largest evaluation batch a run makes."""
    return min(t.eval_batch_size, max(split.n_train, len(split.val_idx), split.n_test))


def stack_fits(stack: list[Checked], max_members: int) -> None:
    """A stack of these runs (``hydra/launcher=stacked``: one structure, each run checked alone) fits its device:
    each member keeps its own parameters, gradients, optimizer state and best epoch's copy, and its own
    activations; else one line naming ``hydra.launcher.max_members``, with how many fit."""
    from reg_runner.model import dry_run
    from reg_runner.optimizer import build as optimizer_build

    c, split, t = stack[0].cfg, stack[0].split, stack[0].cfg.trainer
    one = dry_run.footprint(c.model, split.shape, split.n_classes, t.batch_size, _eval_batch(t, split), copies=1)
    runs = [one.parameters * (3 + optimizer_build.check(m.cfg.optimizer, t.batch_size * t.accumulate))
            + one.activations for m in stack]
    have, where = device_memory(t.device)
    if have is None or sum(runs) <= have:
        return
    raise ConfigError("hydra.launcher.max_members", max_members, f"at most {max(1, have // max(runs))} here: a stack "
                      f"of {len(stack)} of these runs needs about {sum(runs) / 2**30:.3g} GiB (each run its own "
                      f"parameters, gradients, optimizer state and activations, up to {max(runs) / 2**30:.3g} GiB), "
                      f"more than this {where}'s {have / 2**30:.3g} GiB")


def fits(c: RunConfig, split: data_group.Split, have: int | None, where: str, copies: int) -> None:
    """The run's network works (``reg_runner.model.dry_run``) and its memory fits in ``have`` bytes; else one line
    naming the key that sizes what is too big: the model's key whose doubling grows it most (the parameters' or
    the activations', whichever is larger), or the batch."""
    from reg_runner.model import dry_run

    t = c.trainer
    eval_batch = _eval_batch(t, split)

    def measure(model):
        return dry_run.footprint(model, split.shape, split.n_classes, t.batch_size, eval_batch, copies)

    need = measure(c.model)
    if have is None or need.total <= have:
        return
    part = "parameters" if need.parameters >= need.activations else "activations"
    key = dry_run.sizing_key(c.model, lambda model: getattr(measure(model), part))
    if key is not None:
        key, value = f"model.{key}", getattr(c.model, key)
    elif part == "parameters":
        key, value = "model._target_", c.model.target
    else:
        key = "trainer.batch_size" if need.training >= need.evaluation else "trainer.eval_batch_size"
        value = value_at(c.model_dump(), key)
    batch, kind = max((need.training, t.batch_size, "a training"), (need.evaluation, eval_batch, "an evaluation"))[1:]
    raise ConfigError(key, value, f"a smaller value: this model has {need.n_parameters:.3g} parameters and the run "
                      f"needs about {need.total / 2**30:.3g} GiB ({need.parameters / 2**30:.3g} GiB for the parameters "
                      f"with their gradients and optimizer state, {need.activations / 2**30:.3g} GiB of activations "
                      f"for {kind} batch of {batch}), more than this {where}'s {have / 2**30:.3g} GiB")


def results_config(config: dict) -> dict:
    """``config`` without the keys that change no number a run records (settings, paths, labels:
    ``reg_runner.keys``): what must match for two runs' numbers to compare."""
    import copy

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


def value_at(d, key: str):
    return dotted.get(d, key)
