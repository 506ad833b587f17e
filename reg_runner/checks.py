"""A run's config, checked whole before anything is made, in four stages, each raising a ``ConfigError`` at the
first problem: 1. every group's schema; 2. rules across groups, and command-line keys the run would not read; 3.
rules that need the data's sizes; 4. what needs torch (device, memory, optimizer, schedule). Stages 1-3 import no
torch (docs/speed.md). A job's ``Checked`` knows the last stage it passed; ``carry_on`` runs the later ones only.
"""

import os
from dataclasses import dataclass, replace

from reg_runner.config import RunConfig, as_data, effective_lr
from reg_runner.data.split import Split, split as data_split
from reg_runner.device import unavailable
from reg_runner.errors import ConfigError
from reg_runner.model import calling
from reg_runner.overrides import chosen_by_group, override_items, typed_value
from reg_runner.scheduler import PER_BATCH, cycle_steps
from reg_runner.schema import parse


@dataclass(frozen=True)
class Checked:
    """A config that passed the stages up to ``stage`` (3 or 4), and the data split it describes."""

    cfg: RunConfig
    split: Split | None  # None before stage 3
    stage: int


def check(cfg, overrides=(), through: int = 4) -> Checked | RunConfig:
    """The stages up to ``through``: 1 (the typed config alone is returned), 3 or 4; ``overrides``: the command
    line's, for stage 2."""
    chosen_by_group(overrides)
    run = parse(RunConfig, as_data(cfg))
    if through < 2:
        return run
    typed = {key for key, _ in override_items(overrides)}
    try:
        rules(run)
        unread_overrides(run, overrides)
        split = against_data(run)
    except ConfigError as e:  # a rule across keys names the key the user set
        raise e.named_as_set(typed) from None
    return carry_on(Checked(run, split, 3), through)


def carry_on(checked: Checked, through: int = 4, passed: set | None = None) -> Checked:
    """``checked`` through the stages after the last it passed, up to ``through``; none of its stages again.
    ``passed``: all that stage 4 read of the configs that passed it in this process (added to), for a sweep's many
    jobs: a config equal to one of them in all that stage reads is not checked again."""
    if through < 4 or checked.stage >= 4:
        return checked
    c, split = checked.cfg, checked.split
    key = (c.trainer.model_dump_json(), c.optimizer.model_dump_json(), c.scheduler.model_dump_json(),
           c.model.model_dump_json(by_alias=True), c.augmentation.model_dump_json(), split.shape, split.n_classes,
           split.n_train) if passed is not None else None
    if key is None or key not in passed:
        against_machine(c, split)
        if passed is not None:
            passed.add(key)
    return replace(checked, stage=4)


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
            on = getattr(c.search, switch)
            if on != (value > 0):
                raise ConfigError(key, value, f"{'> 0' if on else '0'} while search.{switch}={str(on).lower()}: the "
                                  "switch records whether the trial uses it")


# key set on the command line -> (when the run reads it, why not); ``model.*`` keys: the family's ``unread``
DEPENDENT = {
    # one-cycle with its own max_lr, and a cyclic schedule with both bounds, set every rate without optimizer.lr
    "optimizer.lr": (lambda c: None in (getattr(c.scheduler, "max_lr", None), getattr(c.scheduler, "base_lr", 0)),
                     "the schedule sets every learning rate itself (scheduler.max_lr, and base_lr for cyclic): set "
                     "those instead"),
    "optimizer.dampening": (lambda c: c.optimizer.arguments.get("momentum", 0) > 0, "optimizer.momentum=0: "
                            "dampening acts on the momentum"),
    "reg.apply_to": (lambda c: c.reg.l1 > 0 or c.reg.l2 > 0, "reg.l1 = reg.l2 = 0: there is no penalty"),
    "scheduler.warmup_start_factor": (lambda c: c.scheduler.warmup_epochs > 0, "scheduler.warmup_epochs=0"),
    **{f"scheduler.{k}": (lambda c: getattr(c.scheduler, "cycle_momentum", False), "scheduler.cycle_momentum=false")
       for k in ("base_momentum", "max_momentum")},
    "scheduler.gamma": (lambda c: c.scheduler.name != "cyclic" or c.scheduler.mode == "exp_range",
                        "scheduler.mode is not exp_range"),
    "optimizer.base_batch_size": (lambda c: c.optimizer.lr_scaling != "none", "optimizer.lr_scaling=none"),
    "optimizer.momentum": (lambda c: not getattr(c.scheduler, "cycle_momentum", False),
                           "scheduler.cycle_momentum=true: the cycle sets the momentum"),
    **{f"trainer.early_stopping.{k}": (lambda c: c.trainer.early_stopping.enabled,
                                       "trainer.early_stopping.enabled=false")
       for k in ("monitor", "patience", "min_delta")},
    "logging.histograms": (lambda c: c.logging.tensorboard, "logging.tensorboard=false"),
    "logging.probe_size": (lambda c: c.logging.tensorboard and c.logging.histograms > 0,
                           "no histograms are recorded (logging.tensorboard=false or logging.histograms=0)"),
    "augmentation.fill": (lambda c: c.augmentation.pad > 0, "augmentation.pad=0: nothing is shifted in"),
    "data.verify": (lambda c: c.data.root is not None, "data.root=null: the store's files are checked as they are "
                    "placed there"),
}


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


def against_data(c: RunConfig) -> Split:
    """Stage 3: the split, and the rules that need its sizes."""
    split = data_split(c.data)
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
    if s.name == "cyclic" and cycle_steps(s.step_size_up_epochs, t.steps_per_epoch(n)) < 1:
        raise ConfigError("scheduler.step_size_up_epochs", s.step_size_up_epochs,
                          "at least one optimizer step's worth of an epoch")
    return split


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def against_machine(c: RunConfig, split: Split) -> None:
    """Stage 4: the device, the model's size, the optimizer class and its arguments, the schedule."""
    import torch

    from reg_runner.optimizer import build as optimizer_build
    from reg_runner.scheduler.schedule import Schedule

    t, device = c.trainer, c.trainer.device
    if allowed := unavailable(device):
        raise ConfigError("trainer.device", device, allowed)

    batch = t.batch_size * t.accumulate
    states = optimizer_build.check(c.optimizer, batch)
    # the weights, their gradients, the best epoch's copy, and a copy of the weights and the optimizer's state as each
    # epoch begins (reg_runner.trainer.engine: where a signal takes a long epoch back to)
    fits(c, split, *device_memory(device), copies=4 + 2 * states)
    max_lr = getattr(c.scheduler, "max_lr", None)
    if max_lr is not None:  # one-cycle's and the cyclic schedule's peak: the step must hold it too
        optimizer_build.step_at(c.optimizer, batch, max_lr, "scheduler.max_lr", max_lr)
    probe = optimizer_build.build([torch.zeros(1, requires_grad=True)], c.optimizer, batch)
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


def _eval_batch(t, split: Split) -> int:
    """The largest evaluation batch a run makes."""
    return min(t.eval_batch_size, max(split.n_train, len(split.val_idx), split.n_test))


def stack_fits(stack: list["Checked"], max_members: int) -> None:
    """A stack of these runs (``hydra/launcher=stacked``, each run checked alone) fits its device, each member with
    its own copies and activations; else one line naming ``hydra.launcher.max_members``, with how many fit."""
    from reg_runner.model import dry_run
    from reg_runner.optimizer import build as optimizer_build

    c, split, t = stack[0].cfg, stack[0].split, stack[0].cfg.trainer
    one = dry_run.footprint(c.model, split.shape, split.n_classes, t.batch_size, _eval_batch(t, split), copies=1)
    runs = [one.parameters * (4 + 2 * optimizer_build.check(m.cfg.optimizer, t.batch_size * t.accumulate))
            + one.activations for m in stack]
    have, where = device_memory(t.device)
    if have is None or sum(runs) <= have:
        return
    raise ConfigError("hydra.launcher.max_members", max_members, f"at most {max(1, have // max(runs))} here: a stack "
                      f"of {len(stack)} of these runs needs about {sum(runs) / 2**30:.3g} GiB (each run its own "
                      f"parameters, gradients, optimizer state and activations, up to {max(runs) / 2**30:.3g} GiB), "
                      f"more than this {where}'s {have / 2**30:.3g} GiB")


def fits(c: RunConfig, split: Split, have: int | None, where: str, copies: int) -> None:
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
        key, value = (("trainer.batch_size", t.batch_size) if need.training >= need.evaluation
                      else ("trainer.eval_batch_size", t.eval_batch_size))
    batch, kind = max((need.training, t.batch_size, "a training"), (need.evaluation, eval_batch, "an evaluation"))[1:]
    raise ConfigError(key, value, f"a smaller value: this model has {need.n_parameters:.3g} parameters and the run "
                      f"needs about {need.total / 2**30:.3g} GiB ({need.parameters / 2**30:.3g} GiB for the parameters "
                      f"with their gradients and optimizer state, {need.activations / 2**30:.3g} GiB of activations "
                      f"for {kind} batch of {batch}), more than this {where}'s {have / 2**30:.3g} GiB")
