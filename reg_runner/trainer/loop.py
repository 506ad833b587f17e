"""The training loop: per-epoch permutation of on-device tensors, evaluation in large batches.

Protocol (as in the course): ``model.train()`` for the training steps (dropout active, BatchNorm
uses batch statistics and updates its running ones), ``model.eval()`` under ``inference_mode``
for evaluation (dropout off, BatchNorm uses running statistics). The train metrics of an epoch
are the means over its training batches, in train mode; validation and test are evaluated on the
whole sets every ``eval_every`` epochs and at the last epoch. The best epoch is chosen on the
validation metric named by ``objective`` only; test metrics are only reported, never used to choose.
"""

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from reg_runner.config import batches_per_epoch
from reg_runner.data.tensors import Data, Split
from reg_runner.logging import probe
from reg_runner.trainer.precision import EvalPrecision


@dataclass
class TrainState:
    """Everything the loop carries from epoch to epoch (and what a checkpoint must restore)."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    best: dict | None = None  # the history row of the best epoch so far
    best_snapshot: dict | None = None  # model / optimizer / scheduler state at the best epoch
    stale_evals: int = 0  # evaluations since the early-stopping monitor last improved
    monitor_best: float | None = None
    status: str = "running"  # running | completed | early_stopped | diverged | interrupted
    stopped_at: int | None = None


def better(metric: str, new: float, old: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``new`` improves on ``old`` for ``metric`` (accuracies go up, losses down)."""
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new > old + min_delta if metric.endswith("acc") else new < old - min_delta


def host_means(sums: dict[str, tuple[torch.Tensor, int]]) -> dict[str, float]:
    """``{name: (per-batch sums, count)}`` -> ``{name: total / count}``: one transfer to the host,
    the totals added up there in float64, in batch order."""
    names = list(sums)
    parts = [sums[n][0].float() for n in names]
    values = torch.cat(parts).cpu().tolist() if parts else []
    out, at = {}, 0
    for name, part in zip(names, parts):
        total = math.fsum(values[at : at + len(part)])
        at += len(part)
        out[name] = total / sums[name][1] if sums[name][1] else math.nan
    return out


class Trainer:
    def __init__(self, model, data: Data, optimizer, schedule, penalty, cfg, objective: str, generators, augment=None):
        self.model, self.data, self.optimizer = model, data, optimizer
        self.schedule, self.penalty, self.cfg, self.objective = schedule, penalty, cfg, objective
        self.generators = generators  # "batches" and "augment"; separate from the global RNG used by dropout
        self.augment = augment  # training batches only
        self.val_entropy = None  # set by an evaluation asked to keep the validation output entropies
        self.eval_precision = EvalPrecision(cfg.eval_precision)

    def train_epoch(self, watcher=None) -> dict[str, torch.Tensor]:
        """One pass over the training set; ``watcher`` (a probe.StepWatcher) sees the last optimizer step.

        The epoch's sums are kept per batch in float32 and added up on the host in float64 when the
        row is read: nothing float64 is made on the device (MPS has no float64)."""
        cfg, train = self.cfg, self.data.train
        n = len(train)
        n_batches = batches_per_epoch(n, cfg.batch_size, cfg.drop_last)
        perm = torch.randperm(n, device=train.x.device, generator=self.generators["batches"])
        self.model.train()
        losses, penalties, corrects = [], [], []
        for i in range(n_batches):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x, y = train.x[idx], train.y[idx]
            if self.augment is not None:
                x = self.augment(x, self.generators["augment"])
            logits = self.model(x)
            data_loss = F.cross_entropy(logits, y)
            loss = data_loss
            if self.penalty.active:
                penalty = self.penalty()
                loss = loss + penalty
                penalties.append(penalty.detach())
            group_start = i - i % cfg.accumulate  # micro-batches in this optimizer step
            group_size = min(cfg.accumulate, n_batches - group_start)
            (loss / group_size if group_size > 1 else loss).backward()
            if i - group_start == group_size - 1:
                last_step = watcher is not None and i == n_batches - 1
                if last_step:
                    watcher.before_step()  # the gradient as computed, before any clipping
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                if last_step:
                    watcher.after_step()
                self.optimizer.zero_grad(set_to_none=True)
                self.schedule.after_batch()
            losses.append(data_loss.detach() * len(y))
            corrects.append((logits.detach().argmax(1) == y).sum())
        return {
            "train/loss": (torch.stack(losses), n),
            "train/acc": (torch.stack(corrects), n),
            "train/penalty": (torch.stack(penalties), n_batches) if penalties else None,
        }

    @torch.inference_mode()
    def evaluate(self, split: Split, entropy: bool = False) -> dict:
        """Per-batch sums of the loss and of the correct predictions over ``split`` (float32 and
        int64 on the device), and with ``entropy`` the output entropy of every example (from the same
        logits: no extra pass). The forward pass runs at ``trainer.eval_precision``; the loss is
        computed in float32 from its logits."""
        self.model.eval()
        bs = self.cfg.eval_batch_size
        losses, corrects, entropies = [], [], []
        precision = self.eval_precision
        x = precision.inputs(split.x)
        for start in range(0, len(split), bs):
            with precision.autocast(x.device):
                logits = self.model(x[start : start + bs])
            logits = logits.float()  # a no-op in float32
            y = split.y[start : start + bs]
            # cross-entropy as logsumexp - target logit: log_softmax's kernel is slow for 10 classes on CPU
            losses.append((torch.logsumexp(logits, 1) - logits.gather(1, y[:, None]).squeeze(1)).sum())
            corrects.append((logits.argmax(1) == y).sum())
            if entropy:
                entropies.append(probe.entropy(logits))
        return dict(loss=(torch.stack(losses), len(split)), acc=(torch.stack(corrects), len(split)),
                    entropy=torch.cat(entropies) if entropies else None)

    def epoch_row(self, epoch: int, train_metrics: dict, entropy: bool = False) -> dict:
        """Evaluate val and test and gather the epoch's metrics, with a single device sync.
        With ``entropy``, keeps the validation output entropies in ``self.val_entropy``."""
        val = self.evaluate(self.data.val, entropy)
        test = self.evaluate(self.data.test)
        self.val_entropy = val["entropy"]
        sums = {**{k: v for k, v in train_metrics.items() if v is not None},
                "val/loss": val["loss"], "val/acc": val["acc"], "test/loss": test["loss"], "test/acc": test["acc"]}
        row = {"epoch": epoch, **host_means(sums), "lr": self.schedule.lr}
        return row

    def snapshot(self) -> dict:
        """A detached copy of the model / optimizer / scheduler state, kept in memory."""
        return copy.deepcopy(
            dict(
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.schedule.state_dict(),
            )
        )

    def run_epoch(self, state: TrainState, watcher=None) -> dict | None:
        """Train one epoch and evaluate if due; update ``state``. Returns the history row, if evaluated.

        ``watcher`` (a probe.StepWatcher) marks an epoch with histograms: it sees the last optimizer
        step, and the evaluation keeps the validation output entropies.
        """
        epoch = state.epoch + 1
        train_metrics = self.train_epoch(watcher)
        state.epoch = epoch
        evaluated = epoch % self.cfg.eval_every == 0 or epoch == self.cfg.epochs
        self.val_entropy = None
        row = self.epoch_row(epoch, train_metrics, entropy=watcher is not None) if evaluated else None
        train_loss = row["train/loss"] if row else host_means({"l": train_metrics["train/loss"]})["l"]
        if not math.isfinite(train_loss):
            state.status, state.stopped_at = "diverged", epoch
            return row
        if row is not None:
            state.history.append(row)
            if state.best is None or better(self.objective, row[self.objective], state.best[self.objective]):
                state.best, state.best_snapshot = row, self.snapshot()
            self._early_stopping(state, row)
        monitored = row[self.schedule.monitor] if (row and self.schedule.monitor) else None
        self.schedule.after_epoch(monitored)
        if state.status == "running" and epoch >= self.cfg.epochs:
            state.status = "completed"
        return row

    def _early_stopping(self, state: TrainState, row: dict) -> None:
        es = self.cfg.early_stopping
        if not es.enabled:
            return
        value = row[es.monitor]
        if better(es.monitor, value, state.monitor_best, es.min_delta):
            state.monitor_best, state.stale_evals = value, 0
        else:
            state.stale_evals += 1
            if state.stale_evals >= es.patience:
                state.status, state.stopped_at = "early_stopped", state.epoch
