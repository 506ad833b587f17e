"""A search's pruner, checked before any trial against what it will do with the runs' epochs (what is refused, what
warned: docs/search.md, "Pruning, and several seeds per trial"): a pruner acts only at a step before the last epoch."""

import logging
import math

from reg_runner.errors import ConfigError

log = logging.getLogger(__name__)
KEY = "hydra.sweeper.pruner"


class Reach:
    """What a search gives its pruner: the steps a run can be pruned at and the last of them, how many trials
    have finished when the last batch starts, the objective, and the runs' settings as a message names them."""

    def __init__(self, epochs: int, eval_every: int, n_trials: int, n_jobs: int, objective: str):
        self.epochs, self.n_trials, self.n_jobs, self.objective = epochs, n_trials, n_jobs, objective
        # a run reports every eval_every epochs and at its last, where pruning would save nothing
        self.prunable = list(range(eval_every, epochs, eval_every))
        self.last = self.prunable[-1] if self.prunable else None
        # trials are told in batches of n_jobs: the last batch starts with all the others finished
        self.finished_before_last = 0 if n_trials <= n_jobs else n_trials - (n_trials % n_jobs or n_jobs)
        self.runs = f"trainer.epochs={epochs}" + (f", trainer.eval_every={eval_every}" if eval_every > 1 else "")


def check(spec: dict, reach: Reach) -> None:
    """Refuse settings the pruner of ``spec`` cannot run with, or with which it would never prune; warn of a
    part that never acts."""
    name = str(spec.get("_target_", "")).rpartition(".")[2]
    if name == "NopPruner":
        return
    if not reach.prunable:
        raise ConfigError(f"{KEY}._target_", spec.get("_target_"), f"a pruner with runs that have a step to prune "
                          f"at: with {reach.runs} a run is evaluated only at its last epoch, where stopping saves "
                          "nothing (use hydra/sweeper/pruner=none)")
    if name == "PatientPruner":
        raise ConfigError(f"{KEY}._target_", "optuna.pruners.PatientPruner", "a pruner that compares trials: a trial "
                          "reports its best value so far, which never gets worse, so PatientPruner (a value worse "
                          "than patience steps before) would never prune")
    check_one = {"MedianPruner": _median, "PercentilePruner": _median, "ThresholdPruner": _threshold,
                 "SuccessiveHalvingPruner": _successive_halving, "HyperbandPruner": _hyperband,
                 "WilcoxonPruner": _wilcoxon}.get(name)
    if check_one is not None:
        check_one({k: v for k, v in spec.items() if k == "_target_" or not str(k).startswith("_")}, reach)


def _integer(args: dict, name: str, default, lo: int, auto: bool = False, note: str = "") -> int | str:
    value = args.get(name, default)
    if auto and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{KEY}.{name}", value, f"{'auto or ' if auto else ''}an integer >= {lo}{note}")
    return value


def _warmup(args: dict, reach: Reach) -> None:
    warmup = _integer(args, "n_warmup_steps", 0, 0)
    _integer(args, "interval_steps", 1, 1)
    if warmup > reach.last:
        raise ConfigError(f"{KEY}.n_warmup_steps", warmup, f"at most {reach.last}, the last step a run can be pruned "
                          f"at ({reach.runs}): with more, the pruner never prunes")


def _finished_trials(args: dict, names: tuple, reach: Reach) -> None:
    """A pruner that compares with finished trials: some must have finished before a trial it could prune."""
    have = reach.finished_before_last
    for name, default in names:
        need = _integer(args, name, default, 1 if name == "n_min_trials" else 0)
        if max(1, need) > have:
            if have == 0:
                raise ConfigError(f"{KEY}._target_", args["_target_"], f"a pruner that compares with trials "
                                  f"that have finished: with hydra.sweeper.n_trials={reach.n_trials} and n_jobs="
                                  f"{reach.n_jobs}, every trial starts before any has finished (run more trials "
                                  "than n_jobs, or no pruner)")
            raise ConfigError(f"{KEY}.{name}", need, f"at most {have}: with hydra.sweeper.n_trials={reach.n_trials} "
                              f"and n_jobs={reach.n_jobs}, the last trials start when {have} have finished; with "
                              "more, the pruner never prunes")


def _median(args: dict, reach: Reach) -> None:
    _warmup(args, reach)
    _finished_trials(args, (("n_startup_trials", 5), ("n_min_trials", 1)), reach)


def _threshold(args: dict, reach: Reach) -> None:
    _warmup(args, reach)
    lower, upper = args.get("lower"), args.get("upper")
    top = 1.0 if reach.objective == "val/acc" else math.inf  # the objective's range: accuracy, or a loss >= 0
    if (lower is None or lower <= 0) and (upper is None or upper >= top):
        raise ConfigError(KEY, {"lower": lower, "upper": upper}, f"a lower bound above 0 or an upper bound below "
                          f"{top:g}: the objective, {reach.objective}, never leaves [0, {top:g}], so the pruner "
                          "would never prune")


def _wilcoxon(args: dict, reach: Reach) -> None:
    startup = _integer(args, "n_startup_steps", 2, 0)
    if max(2, startup) > len(reach.prunable):
        raise ConfigError(f"{KEY}.n_startup_steps", startup, f"at most {len(reach.prunable)}, the steps a run "
                          f"can be pruned at ({reach.runs}); and the pruner compares at least 2")
    _finished_trials(args, (("n_startup_trials", 1),), reach)


def _successive_halving(args: dict, reach: Reach) -> None:
    r = _integer(args, "min_resource", "auto", 1, auto=True)
    factor = _integer(args, "reduction_factor", 4, 2)
    rate = _integer(args, "min_early_stopping_rate", 0, 0)
    _integer(args, "bootstrap_count", 0, 0)
    resource = max(reach.epochs // 100, 1) if r == "auto" else r  # Optuna's auto: a hundredth of a run's steps
    rung = resource * factor ** rate
    if rung > reach.last:
        name = "min_resource" if rate == 0 or r == "auto" else "min_early_stopping_rate"
        raise ConfigError(f"{KEY}.{name}", args.get(name, r), f"a first rung (min_resource x reduction_factor ^ "
                          f"min_early_stopping_rate = {rung}) at most {reach.last}, the last step a run can be "
                          f"pruned at ({reach.runs}): with a later one, the pruner never prunes")


def brackets(min_resource: int, max_resource: int, factor: int) -> list[dict]:
    """Hyperband's brackets as Optuna makes them: each one's first rung and share of the trials."""
    n = math.floor(math.log(max_resource / min_resource, factor)) + 1
    budgets = [math.ceil(n * factor ** (n - 1 - i) / (n - i)) for i in range(n)]
    return [dict(bracket=i, first_rung=min_resource * factor ** i, share=b / sum(budgets))
            for i, b in enumerate(budgets)]


def _hyperband(args: dict, reach: Reach) -> None:
    r = _integer(args, "min_resource", 1, 1)
    factor = _integer(args, "reduction_factor", 3, 2)
    _integer(args, "bootstrap_count", 0, 0)
    if r > reach.last:
        raise ConfigError(f"{KEY}.min_resource", r, f"at most {reach.last}, the last step a run can be pruned at "
                          f"({reach.runs}): every bracket's first rung would come later, so the pruner never prunes")
    top = _integer(args, "max_resource", "auto", r, auto=True, note=f" ({KEY}.min_resource={r})")
    top = reach.epochs + 1 if top == "auto" else top  # Optuna's auto: a finished trial's last step, plus 1
    every = brackets(r, top, factor)  # the first one's first rung is min_resource: it acts
    if idle := [b for b in every if b["first_rung"] > reach.last]:
        log.warning("%s: %d of hyperband's %d brackets (first rungs at epochs %s) never act: they come after the last "
                    "step a run can be pruned at (%d, %s); their trials, about %.0f%% of them, run unpruned",
                    KEY, len(idle), len(every), ", ".join(str(b["first_rung"]) for b in idle),
                    reach.last, reach.runs, 100 * sum(b["share"] for b in idle))
