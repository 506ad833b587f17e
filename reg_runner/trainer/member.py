"""One run inside a stack: its config, its random streams, its optimizer and schedule, its state.

Its optimizer is an ordinary torch optimizer (any class the config names) over *proxies*, member k's slices of the
stacked parameters, each updated in place as a lone network would be, so that torch's own code acts per member
(docs/stacking.md). Its checkpoint is a lone run's checkpoint.
"""

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reg_runner.augmentation import ops as augment_lib
from reg_runner.config import RunConfig
from reg_runner.optimizer import build as optimizer_lib
from reg_runner.scheduler.schedule import Schedule
from reg_runner.seeding import generators


@dataclass
class TrainState:
    """Everything a member carries from epoch to epoch (and what a checkpoint must restore)."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    best: dict | None = None  # the history row of the best epoch so far
    best_snapshot: dict | None = None  # model / optimizer / scheduler state at the best epoch
    stale_evals: int = 0  # evaluations since the early-stopping monitor last improved
    monitor_best: float | None = None
    status: str = "running"  # running | completed | early_stopped | pruned | diverged | interrupted
    stopped_at: int | None = None


def better(metric: str, new: float, old: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``new`` improves on ``old`` for ``metric`` (accuracies go up, losses down)."""
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new > old + min_delta if metric.endswith("acc") else new < old - min_delta


class Member:
    def __init__(self, cfg: RunConfig, config: dict, run_dir: Path, seed: int, data, device: torch.device,
                 trial=None):
        self.cfg, self.config, self.run_dir, self.seed = cfg, config, Path(run_dir), seed
        self.trial = trial  # its Optuna trial in a study sweep (reg_runner.trainer.trial.TrialLink), else None
        self.gens = generators(seed, device)
        self.augment = augment_lib.build(cfg.augmentation, data)
        self.state = TrainState()
        self.proxies: list[torch.Tensor] = []
        self.optimizer = self.schedule = None
        self.n_train = len(data.train)
        self.extra: dict = {}  # what listeners keep per member (a TensorBoard writer...)

    def attach(self, params: list[torch.Tensor], k: int) -> None:
        """Point the member at slice k of the stacked ``params``; the first call builds its optimizer
        and schedule, later calls (after the stack shrank) move them to the new tensors."""
        proxies = [p.data[k] for p in params]
        if self.optimizer is None:
            t, c = self.cfg.trainer, self.cfg
            self.optimizer = optimizer_lib.build(proxies, c.optimizer, t.batch_size * t.accumulate)
            self.schedule = Schedule(self.optimizer, c.scheduler, t.epochs, t.steps_per_epoch(self.n_train))
        else:
            for old, new in zip(self.proxies, proxies):
                if old in self.optimizer.state:
                    self.optimizer.state[new] = self.optimizer.state.pop(old)
            for group in self.optimizer.param_groups:
                group["params"] = [proxies[self._index[id(p)]] for p in group["params"]]
        self.proxies = proxies
        self._index = {id(p): i for i, p in enumerate(proxies)}

    def step(self, params: list[torch.Tensor], k: int, watcher=None) -> None:
        """Take slice k of the stacked ``params``' gradients, clip (per member), step the optimizer, step a per-batch
        schedule; ``watcher`` sees the step."""
        for proxy, p in zip(self.proxies, params):
            proxy.grad = p.grad[k] if p.grad is not None else None
        if watcher is not None:
            watcher.before_step()  # the gradient as computed, before any clipping
        if self.cfg.trainer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.proxies, self.cfg.trainer.grad_clip)
        self.optimizer.step()
        if watcher is not None:
            watcher.after_step()
        for proxy in self.proxies:
            proxy.grad = None
        self.schedule.after_batch()

    def end_epoch(self, epoch: int, row: dict | None, train_loss: float, snapshot) -> None:
        """Update the state from the epoch's row (None if not evaluated); ``snapshot()`` copies the
        member's model, optimizer and schedule for best.pt."""
        state, t = self.state, self.cfg.trainer
        state.epoch = epoch
        if not math.isfinite(train_loss):
            state.status, state.stopped_at = "diverged", epoch
            return
        if row is not None:
            state.history.append(row)
            objective = self.cfg.objective
            if state.best is None or better(objective, row[objective], state.best[objective]):
                state.best, state.best_snapshot = row, snapshot()
            es = t.early_stopping
            if es.enabled:
                if better(es.monitor, row[es.monitor], state.monitor_best, es.min_delta):
                    state.monitor_best, state.stale_evals = row[es.monitor], 0
                else:
                    state.stale_evals += 1
                    if state.stale_evals >= es.patience:
                        state.status, state.stopped_at = "early_stopped", epoch
        self.schedule.after_epoch(row)
        if state.status == "running" and epoch >= t.epochs:
            state.status = "completed"

    def snapshot(self, model_state: dict) -> dict:
        return dict(model=model_state, optimizer=copy.deepcopy(self.optimizer.state_dict()),
                    scheduler=copy.deepcopy(self.schedule.state_dict()))

    def save_point(self) -> dict:
        """What ``restore`` takes back to: the member as it is now, but for its model (the stack's)."""
        return dict(self.snapshot(None), rng=self.rng_state(), state=dict(vars(self.state)))

    def rng_state(self) -> dict:
        return {name: g.get_state() for name, g in self.gens.items()}

    def checkpoint(self, model_state: dict, timing: dict) -> dict:
        """A lone run's ``last.pt``."""
        return dict(model=model_state, optimizer=self.optimizer.state_dict(), scheduler=self.schedule.state_dict(),
                    epoch=self.state.epoch, rng=self.rng_state(), state=vars(self.state), timing=timing,
                    config=self.config)

    def restore(self, checkpoint: dict) -> None:
        """Optimizer, schedule, random streams and loop state from a ``last.pt`` or a ``save_point`` (the model is
        the stack's)."""
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        for name, g in self.gens.items():
            g.set_state(checkpoint["rng"][name])
        self.state = TrainState(**checkpoint["state"])
        self.state.status = "running"  # it was running, interrupted or failed; finished runs are refused

    def metrics(self, data_info: dict | None, n_params: int | None, timing: dict, size: dict | None = None) -> dict:
        """The content of metrics.json; only ``timing`` differs between two runs of the same config on CPU. ``size``:
        the network's FLOPs per image and share of near-zero weights at the best epoch (``model.measures``)."""
        state, objective = self.state, self.cfg.objective
        return dict(
            status=state.status,
            seed=self.seed,
            objective=objective,
            tags=list(self.cfg.tags),
            notes=self.cfg.notes,
            epochs_run=state.epoch,
            epochs_planned=self.cfg.trainer.epochs,
            stopped_at=state.stopped_at,
            best_epoch=state.best["epoch"] if state.best else None,
            best_val=state.best[objective] if state.best else None,
            test_at_best={k.removeprefix("test/"): v for k, v in state.best.items() if k.startswith("test/")}
            if state.best else None,
            best=state.best,
            final=state.history[-1] if state.history else None,
            n_parameters=n_params,
            size=size,
            data=data_info,
            timing=timing,
        )

