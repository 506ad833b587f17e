"""The training loop, for a stack of K runs: one stacked model, one step, one evaluation, K records. A single
run is a stack of one; there is no other loop. The protocol (train and eval modes, when validation and test are
evaluated, the best epoch chosen on validation alone) is docs/runs.md's "Protocol".

Each member draws its own batch order and augmentations (a batch is (K, B, features)); its loss is its own mean,
so the gradient of their sum is each member's own. The epoch's sums stay on the device in float32 and are added up
on the host in float64 once per epoch (MPS has no float64). After each epoch the listeners see every member's
row, and the members that finished (completed, early-stopped, pruned, diverged) leave the stack.

A signal (``reg_runner.signals.STOP``) ends the run at the end of a quick epoch, or gives a longer one up, every
member back at the copy made as it began (``QUICK_EPOCH``; docs/reliability.md, "Signals").
"""

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from reg_runner.logging import probe
from reg_runner.private import cpu_has_bf16_units
from reg_runner.reg.penalty import Penalties
from reg_runner.signals import STOP

log = logging.getLogger(__name__)
QUICK_EPOCH = 0.5  # seconds: a signal waits for the end of an epoch no longer than this (no copy of the state)
CHUNK = 16384  # columns per row reduction: below torch's grain size, so a row's sum never depends on K


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """(K, n) -> (K,): each row's sum, computed the same way whatever K is (torch splits one long
    row over threads, but not K rows)."""
    parts = [t[:, i : i + CHUNK].sum(1) for i in range(0, t.shape[1], CHUNK)]
    return parts[0] if len(parts) == 1 else torch.stack(parts, 1).sum(1)


class Stopped(Exception):
    """A signal came during an epoch: the epoch is given up."""


@dataclass
class Epoch:
    """What the listeners see of an epoch (each member's number is its ``state.epoch``: members resumed
    from different checkpoints train side by side)."""

    rows: dict = field(default_factory=dict)  # member -> its history row, or None if not evaluated
    steps: dict = field(default_factory=dict)  # member -> StepWatcher stats (histogram epochs)
    entropies: dict = field(default_factory=dict)  # member -> validation output entropies (histogram epochs)


class Engine:
    def __init__(self, model, data, members: list, listeners: list, detail=lambda member, epoch: False):
        """``detail(member, epoch)``: whether the epoch records histograms for the member."""
        self.model, self.data, self.members, self.listeners, self.detail = model, data, members, listeners, detail
        self.tc = members[0].cfg.trainer  # every member has the same trainer structure
        self.params = list(model.parameters())
        self.penalty = Penalties(model, [(m.cfg.reg.l1, m.cfg.reg.l2, m.cfg.reg.apply_to) for m in members])
        self.precision = EvalPrecision(self.tc.eval_precision)
        self.interrupted = False
        self.longest = None  # the longest epoch so far, in seconds

    def tell(self, hook: str, *args) -> None:
        """Each listener's ``hook`` (``start``, ``epoch``, ``member_end``, ``close``), where it has one."""
        for listener in self.listeners:
            if hasattr(listener, hook):
                getattr(listener, hook)(self, *args)

    def run(self) -> None:
        self.tell("start")
        STOP.starting = False  # from here a signal ends the run with a checkpoint (the first ones are written)
        try:
            if STOP.signal is not None:  # one that came before the run started: every member keeps its first state
                self.interrupt()
            while self.members:
                self.epoch()
        finally:
            self.tell("close")

    def interrupt(self) -> None:
        """A signal came: the members still running end ``interrupted``, and every member leaves."""
        for m in self.members:
            if m.state.status == "running":
                m.state.status = "interrupted"
        self.interrupted = True
        self.leave(list(range(len(self.members))))

    def epoch(self) -> None:
        members = self.members
        numbers = [m.state.epoch + 1 for m in members]
        index = {id(p): i for i, p in enumerate(self.params)}  # a weight's member slice: proxies[index[id(weight)]]
        watchers = {k: probe.StepWatcher({name: m.proxies[index[id(w)]] for name, w in self.model.weights().items()})
                    for k, m in enumerate(members) if self.detail(m, numbers[k])}
        began = time.perf_counter()
        stop = self.longest is None or self.longest > QUICK_EPOCH  # a signal may give the epoch up
        if stop:  # where the epoch's start is, to go back to
            saved = ({name: t.clone() for name, t in self.model.state_dict().items()},
                     [m.save_point() for m in members])
        due = [n % self.tc.eval_every == 0 or n == self.tc.epochs for n in numbers]
        entropies = None
        try:
            sums = self.train_epoch(watchers, stop)
            if any(due):
                val = self.evaluate(self.data.val, entropy=bool(watchers), stop=stop)
                test = self.evaluate(self.data.test, stop=stop)
                sums.update({"val/loss": val["loss"], "val/acc": val["acc"], "test/loss": test["loss"],
                             "test/acc": test["acc"]})
                entropies = val["entropy"]
        except Stopped:
            self.model.zero_grad(set_to_none=True)
            self.model.load_state_dict(saved[0])
            for m, point in zip(members, saved[1]):
                m.restore(point)
            self.interrupt()
            return
        means = host_means(sums)  # the epoch's one read back to the host: on a GPU, its work is done here
        self.longest = max(self.longest or 0.0, time.perf_counter() - began)
        result = Epoch()
        for k, m in enumerate(members):
            row = None
            if due[k]:
                row = {"epoch": numbers[k], **{name: values[k] for name, values in means.items()
                                               if name != "train/penalty" or self.penalty.on(k)}, "lr": m.schedule.lr}
            m.end_epoch(numbers[k], row, means["train/loss"][k],
                        lambda k=k, m=m: m.snapshot(self.model.member_state(k)))
            result.rows[m] = row
            if k in watchers:
                result.steps[m] = watchers[k].stats
                if entropies is not None:
                    result.entropies[m] = entropies[k]
        self.tell("epoch", result)
        if STOP.signal is not None:
            self.interrupt()
        else:
            self.leave([k for k, m in enumerate(members) if m.state.status != "running"])

    def leave(self, done: list[int]) -> None:
        """The members ``done`` (indices) end: listeners record them, then their slices are dropped."""
        if not done:
            return
        for k in done:
            self.tell("member_end", self.members[k], k)
        keep = [k for k in range(len(self.members)) if k not in done]
        self.members = [self.members[k] for k in keep]
        if not self.members:
            return
        self.model.keep(keep)
        self.penalty.keep(keep)
        self.params = list(self.model.parameters())
        for k, m in enumerate(self.members):
            m.attach(self.params, k)

    def train_epoch(self, watchers: dict, stop: bool = False) -> dict:
        """One pass over the training set for every member: per-batch, per-member sums. ``stop``: a signal raises
        ``Stopped`` before the next step."""
        members, tc, train, model, params = self.members, self.tc, self.data.train, self.model, self.params
        n, size, k_members = len(train), tc.batch_size, len(self.members)
        n_batches = tc.batches_per_epoch(n)
        perms = torch.stack([torch.randperm(n, device=train.x.device, generator=m.gens["batches"]) for m in members])
        augmented = [(k, m) for k, m in enumerate(members) if m.augment is not None]
        model.train()
        losses, corrects, penalties = [], [], []
        for i in range(n_batches):
            if stop and STOP.signal is not None:
                raise Stopped
            idx = perms[:, i * size : (i + 1) * size]
            x, y = train.x[idx], train.y[idx]  # (K, b, features), (K, b)
            for k, m in augmented:
                x[k] = m.augment(x[k], m.gens["augment"])
            logits = model(x)
            b = y.shape[1]
            per_example = F.cross_entropy(logits.reshape(k_members * b, -1), y.reshape(-1), reduction="none")
            data_loss = row_sums(per_example.view(k_members, b)) / b  # each member's mean
            if self.penalty.active:
                penalties.append(self.penalty.values(params))
            group_start = i - i % tc.accumulate  # micro-batches in this optimizer step
            group_size = min(tc.accumulate, n_batches - group_start)
            total = data_loss.sum()  # its gradient is each member's own
            (total / group_size if group_size > 1 else total).backward()
            if i - group_start == group_size - 1:
                if self.penalty.active:
                    self.penalty.add_gradients(params)
                last = i == n_batches - 1
                for k, m in enumerate(members):
                    m.step(params, k, watchers.get(k) if last else None)
                model.zero_grad(set_to_none=True)
            losses.append(data_loss.detach() * b)
            corrects.append((logits.detach().argmax(2) == y).sum(1))
        sums = {"train/loss": (torch.stack(losses), n), "train/acc": (torch.stack(corrects), n)}
        if penalties:
            sums["train/penalty"] = (torch.stack(penalties), n_batches)
        return sums

    def evaluate(self, split, entropy: bool = False, stop: bool = False) -> dict:
        return evaluate(self.model, split, self.tc.eval_batch_size, self.precision, entropy, stop)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def bf16_unsupported(device: torch.device) -> str | None:
    """Why bfloat16 matmuls would not be fast on ``device``, or None when they are."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported(including_emulation=False) else "this GPU has no bf16 units"
    if device.type == "cpu":
        if cpu_has_bf16_units() is not False:
            return None  # fast, or this torch cannot tell (let the user judge)
        return "this CPU has neither AVX512-BF16 nor AMX: bf16 matmuls are emulated, slower than float32"
    return f"bf16 evaluation is not measured on {device.type}"


def warn_if_slow(precision: str, device: torch.device) -> None:
    if PRECISIONS[precision] is not None and (reason := bf16_unsupported(device)):
        log.warning("trainer.eval_precision=%s: %s", precision, reason)


class EvalPrecision:
    """The autocast context and the bfloat16 copies of the validation and test inputs (made once) for evaluation
    at ``trainer.eval_precision`` (docs/speed.md, "bf16 evaluation": training stays float32)."""

    def __init__(self, precision: str):
        self.dtype = PRECISIONS[precision]
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the evaluation dtype, converted once per tensor (the val and test sets)."""
        if self.dtype is not None and id(x) not in self._inputs:
            self._inputs[id(x)] = (x, x.to(self.dtype))  # keeps x alive, so its id stays its own
        return x if self.dtype is None else self._inputs[id(x)][1]

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


@torch.inference_mode()
def evaluate(model, split, batch_size: int, precision: EvalPrecision, entropy=False, stop=False) -> dict:
    """Per-batch, per-member sums of the loss and of the correct predictions of a stacked ``model`` over ``split``,
    and with ``entropy`` every member's output entropy for every example. The forward pass runs at ``precision``,
    the loss in float32 from its logits; ``stop``: a signal raises ``Stopped`` before the next batch."""
    model.eval()
    x = precision.inputs(split.x)
    losses, corrects, entropies = [], [], []
    for start in range(0, len(split), batch_size):
        if stop and STOP.signal is not None:
            raise Stopped
        with precision.autocast(x.device):
            logits = model(x[start : start + batch_size])
        logits = logits.float()  # (K, n, classes); a no-op in float32
        y = split.y[start : start + batch_size]
        target = logits.gather(2, y.view(1, -1, 1).expand(len(logits), -1, 1)).squeeze(2)
        # cross-entropy as logsumexp - target logit: log_softmax's kernel is slow for 10 classes on CPU
        losses.append(row_sums(torch.logsumexp(logits, 2) - target))
        corrects.append((logits.argmax(2) == y).sum(1))
        if entropy:
            entropies.append(probe.entropy(logits))
    return dict(loss=(torch.stack(losses), len(split)), acc=(torch.stack(corrects), len(split)),
                entropy=torch.cat(entropies, 1) if entropies else None)


def host_means(sums: dict[str, tuple[torch.Tensor, int]]) -> dict[str, list[float]]:
    """``{name: ((batches, K) sums, count)}`` -> ``{name: [each member's total / count]}``: one transfer
    to the host, the totals added up there exactly (``math.fsum``), whatever the order."""
    parts = [t.float() for t, _ in sums.values()]
    host = torch.cat([p.reshape(-1) for p in parts]).cpu().split([p.numel() for p in parts]) if parts else ()
    return {name: [math.fsum(column) / count if count else math.nan for column in h.view(p.shape).T.tolist()]
            for (name, (_, count)), p, h in zip(sums.items(), parts, host)}
