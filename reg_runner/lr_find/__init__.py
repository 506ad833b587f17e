"""The ``lr_find`` group: the learning-rate range test's settings, its checks, and how it reads a curve (the test
itself: ``__main__``; the method, its sources and where the suggestions land: docs/lr_find.md).
Nothing here imports torch: the checks run before it loads.
"""

import bisect
import math

from omegaconf import OmegaConf

from reg_runner.cli import EarlyChecks, handed_over
from reg_runner.overrides import chosen_by_group, override_items, plain_overrides, typed_value
from reg_runner.kinds import LR_FIND
from reg_runner.errors import ConfigError, UserError, exit_on_user_error
from reg_runner.schema import Group, LearningRate, integer, number, optional, parse

SKIP_END = 5  # points left out at the end of the curve (fastai)
MIN_WINDOW = 10  # points the suggestions are read from, at least: fewer cannot tell a fall from noise
MIN_STEPS = 20  # the fewest lr_find.steps: 20 leave 13 points to read (a tenth in, 5 from the end)


class LrFindConfig(Group):
    min_lr: LearningRate
    """the first step's lr (the lr the optimizer uses, after lr_scaling)"""
    max_lr: LearningRate
    """the last step's"""
    steps: integer(MIN_STEPS, 100_000)
    """optimizer steps; suggestions need a curve of at least this many points"""
    smoothing: number(0, 1, hi_open=True)
    """β of the moving average; 0: none"""
    stop_factor: optional(number(1, lo_open=True), "null (run every step)")
    """stop when the smoothed loss exceeds this times its best"""


# the keys of the run config that the range test does not read, and why: a command line that sets one is refused
UNREAD = {
    "optimizer.lr": "the range test sets the lr itself, from lr_find.min_lr to lr_find.max_lr",
    "scheduler": "the range test sets the lr itself: no schedule runs (its suggestions for onecycle and cyclic "
                 "are printed whatever the config's schedule)",
    **dict.fromkeys(("objective", "trainer.eval_every", "trainer.eval_batch_size", "trainer.eval_precision",
                     "data.val_size"), "the range test evaluates nothing"),
    "trainer.epochs": "the range test runs lr_find.steps optimizer steps",
    "trainer.early_stopping": "the range test stops on lr_find.stop_factor",
    "trainer.checkpoint_every": "the range test writes no checkpoint",
    "logging": "the range test writes lr_find.json and lr_find.png, no TensorBoard",
    "hparams_search": "the range test is one run, not a search",
}


def unread(key: str) -> str | None:
    """Why the range test does not read ``key`` (a dotted key or a group), or None if it does."""
    return next((why for prefix, why in UNREAD.items() if key == prefix or key.startswith(prefix + ".")), None)


class Checks(EarlyChecks):
    """The run's checks (every stage of ``reg_runner.checks.check``) on the config less ``lr_find``,
    then the range test's own keys; and the command-line keys it would not read are refused."""

    kind = LR_FIND

    def check_config(self, config, overrides) -> None:
        from reg_runner import checks
        from reg_runner.optimizer import build as optimizer_build

        chosen_by_group(overrides)  # a key given twice, lr_find's included
        for key, value in override_items(overrides):
            if why := unread(key):
                raise ConfigError(key, typed_value(value), f"not set for lr_find: {why}")
        s = settings(config)
        run = OmegaConf.masked_copy(config, [k for k in config if k != "lr_find"])
        checked = checks.check(run, [o for o in plain_overrides(overrides)
                                         if not o.lstrip("+~").startswith("lr_find.")])
        t = checked.cfg.trainer  # the last step's rate must be one the optimizer can step at
        optimizer_build.step_at(checked.cfg.optimizer, t.batch_size * t.accumulate, s.max_lr, "lr_find.max_lr",
                                s.max_lr)

    def on_multirun_start(self, config, **kwargs) -> None:
        handed_over()
        with exit_on_user_error(in_callback=True):
            raise UserError("lr_find runs one range test: run it once per config, without --multirun")


def settings(config) -> LrFindConfig:
    """The ``lr_find`` keys of a composed config, checked."""
    from reg_runner.config import as_data

    s = parse(LrFindConfig, as_data(config).get("lr_find"), "lr_find")
    if s.max_lr <= s.min_lr:
        raise ConfigError("lr_find.max_lr", s.max_lr, f"a number > lr_find.min_lr={s.min_lr:g}")
    return s


def lrs(s: LrFindConfig) -> list[float]:
    """The lr of each step: geometric from ``min_lr`` to ``max_lr``, computed in log space (their ratio may
    overflow a float)."""
    lo, hi = math.log(s.min_lr), math.log(s.max_lr)
    return [math.exp(lo + (hi - lo) * j / (s.steps - 1)) for j in range(s.steps)]


class Curve:
    """The losses of the steps so far, their smoothed values (the bias-corrected exponential moving average
    of fastai and Lightning) and whether the smoothed loss has passed ``factor`` times its best: O(1) a step."""

    def __init__(self, beta: float, factor: float | None = None):
        self.beta, self.factor = beta, factor
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._avg, self._best = 0.0, math.inf

    def add(self, loss: float) -> bool:
        """Record a step's loss; True if the smoothed loss now exceeds ``factor`` times the best before it."""
        self.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        value = self._avg / (1 - self.beta ** len(self.losses))
        self.smoothed.append(value)
        blew_up = self.factor is not None and value > self.factor * self._best
        self._best = min(self._best, value)
        return blew_up


def valley(losses: list[float]) -> int:
    """fastai's valley: the longest strictly decreasing run of points (not necessarily adjacent), two
    thirds of the way from its start to its end. fastai finds it in O(n^2); the same indices in
    O(n log n): ``lds[i]``, the longest decreasing subsequence ending at i, by patience sorting."""
    tails: list[float] = []  # tails[l]: the largest last value (negated, smallest) of a run of length l + 1
    best_len, max_end = 0, 0
    for i, loss in enumerate(losses):
        at = bisect.bisect_left(tails, -loss)
        tails[at : at + 1] = [-loss]  # replaces tails[at], or appends
        if at + 1 > best_len:  # fastai keeps the first index reaching the longest length
            best_len, max_end = at + 1, i
    max_start = max_end - best_len  # fastai's: one before the run's first point (-1 for a run from point 0,
    sections = (max_end - max_start) / 3
    return max(0, max_start + int(sections) + int(sections / 2))  # which fastai would read as its last point)


def steepest(lrs_: list[float], losses: list[float]) -> int:
    """The point where the loss falls fastest against log lr (the forward difference, as fastai's
    ``steep``; the lr grid is geometric, so this is the steepest slope per step too)."""
    slopes = [(losses[j + 1] - losses[j]) / (math.log(lrs_[j + 1]) - math.log(lrs_[j])) for j in range(len(losses) - 1)]
    return min(range(len(slopes)), key=slopes.__getitem__)


def suggest(lrs_: list[float], smoothed: list[float], planned: int) -> dict:
    """The suggestions (lrs the optimizer would use) from the curve; ``planned``: the steps asked for."""
    # fastai's window: before the first steps move anything, and after the blow-up, the curve says nothing
    start, end = planned // 10, len(smoothed) - SKIP_END
    if end - start < MIN_WINDOW:
        stopped = " before the loss blew up" if len(smoothed) < planned else ""
        return dict(reason=f"only {len(smoothed)} steps{stopped}: {max(0, end - start)} points to read, too few to "
                    f"tell a fall of the loss from noise (at least {MIN_WINDOW}: lower lr_find.min_lr, or raise "
                    "lr_find.steps)")
    window_lrs, window = lrs_[start:end], smoothed[start:end]
    at = dict(valley=valley(window), steepest=steepest(window_lrs, window),
              minimum=min(range(len(window)), key=window.__getitem__))
    if at["minimum"] == 0:  # the three would all point at the first lr read: the curve says nothing of a good one
        return dict(reason=f"the smoothed loss never fell below its value at the first lr read "
                    f"({window_lrs[0]:.2g}): no lr in the range is better than the smallest (lower lr_find.min_lr, "
                    "or raise lr_find.steps)")
    out = {name: dict(step=start + j, lr=window_lrs[j], loss=window[j]) for name, j in at.items()}
    # fastai's lr_min, a tenth of the minimum's lr: near where the loss stops falling (Smith), clear of the blow-up;
    # the cyclic lower bound a quarter of that (Smith 2017 puts the ratio at 3 to 4)
    top = out["minimum"]["lr"] / 10
    return {**out, "onecycle": dict(max_lr=top), "cyclic": dict(base_lr=top / 4, max_lr=top)}
