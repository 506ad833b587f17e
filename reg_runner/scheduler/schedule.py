"""Learning-rate schedules: torch's schedulers, stepped at the right moments. A warmup goes linearly from
``warmup_start_factor * lr`` to ``lr``; the main schedule then runs over the remaining epochs."""

import torch
from torch.optim import lr_scheduler as sched

from reg_runner.errors import UserError
from reg_runner.scheduler import PER_BATCH, cycle_steps


class Schedule:
    """Steps a torch LR scheduler at the right moments; ``name=none`` without warmup is a no-op."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg, epochs: int, steps_per_epoch: int):
        self.optimizer = optimizer
        self.per_batch = cfg.name in PER_BATCH
        unit = steps_per_epoch if self.per_batch else 1  # scheduler steps per epoch
        warmup = cfg.warmup_epochs * unit
        length = epochs * unit - warmup  # steps left to the main schedule
        try:
            warm = sched.LinearLR(optimizer, cfg.warmup_start_factor, 1.0, total_iters=warmup) if warmup else None
            main = _main_scheduler(optimizer, cfg, length, unit)
        except ValueError as e:
            raise UserError(f"scheduler={cfg.name}: {e}") from None
        self.plateau = main if isinstance(main, sched.ReduceLROnPlateau) else None
        self.monitor = cfg.monitor if self.plateau is not None else None  # metric the plateau rule watches
        self.warmup_steps = warmup
        if self.plateau is not None:
            self.scheduler = warm  # the warmup runs alone; then the plateau rule takes over
        elif warm is not None and main is not None:
            self.scheduler = sched.SequentialLR(optimizer, [warm, main], milestones=[warmup])
        else:
            self.scheduler = warm or main
        self.steps = 0

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_batch(self) -> None:
        if self.per_batch:
            self._step()

    def after_epoch(self, row: dict | None) -> None:
        """``row``: the epoch's history row if it was evaluated, else None."""
        if self.per_batch:
            return
        if self.plateau is not None and self.steps >= self.warmup_steps:
            if row is not None:
                self.plateau.step(row[self.monitor])
            return
        self._step()

    def _step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1

    def state_dict(self) -> dict:
        return dict(steps=self.steps, scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
                    plateau=self.plateau.state_dict() if self.plateau is not None else None)

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


def _main_scheduler(optimizer, cfg, length: int, unit: int):
    """The option's torch scheduler (None: ``none``). The option's own keys are the scheduler's arguments of the
    same names; only the defaults (null: from ``optimizer.lr``), the lengths and plateau's mode are derived."""
    lr = optimizer.param_groups[0]["lr"]
    own = {k: v for k, v in dict(cfg).items() if k not in ("name", "warmup_epochs", "warmup_start_factor")}
    if cfg.name in ("step", "exponential"):
        return {"step": sched.StepLR, "exponential": sched.ExponentialLR}[cfg.name](optimizer, **own)
    if cfg.name == "linear":
        return sched.LinearLR(optimizer, start_factor=1.0, total_iters=length, **own)
    if cfg.name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=length, **own)
    max_lr = cfg.max_lr if cfg.name in PER_BATCH and cfg.max_lr is not None else lr
    if cfg.name == "onecycle":
        return sched.OneCycleLR(optimizer, total_steps=length, **{**own, "max_lr": max_lr})
    if cfg.name == "cyclic":
        base_lr = cfg.base_lr if cfg.base_lr is not None else lr / 10
        half = cycle_steps(own.pop("step_size_up_epochs"), unit)
        return sched.CyclicLR(optimizer, step_size_up=half, **{**own, "base_lr": base_lr, "max_lr": max_lr})
    if cfg.name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, mode="max" if own.pop("monitor").endswith("acc") else "min", **own)
    return None
