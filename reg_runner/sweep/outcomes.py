"""What a search's trials came to, as their runs' records say. A trial's outcome: how its runs ended, telling the
study, the marks on a trial a kill cut off, and the count of trials that ran to an end (the trial attributes of a
refusal by the checks and of a cut are defined here). The study's summary at the end of a sweep (counts, best trial,
top 10, epochs spent, batch waits): ``sweep_summary.json``, ``sweep_summary.md`` and the lines printed."""

import math
import shlex
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner import atomic, kinds
from reg_runner.records import FINISHED, TRAINED, RunFolder, ThreadsUnknown
from reg_runner.sweep import objectives as objectives_lib
from reg_runner.sweep.analysis import record_trial, trial_dirs
from reg_runner.trainer.trial import trial_id

REJECTED = "reg_runner.rejected"  # the checks' one line, for a trial whose config was refused
CUT = "reg_runner.cut"  # on a trial told failed because a kill cut it off: it is run again
INTERRUPTED = "reg_runner.interrupted"  # the same as a study attribute (a list of numbers), as studies before kept it


def outcome(dirs: list[str], objectives: list | None = None, unrecorded: str = "failed"):
    """How a trial's runs ended, from their records: ``complete`` with the mean of their best objectives (with
    several ``objectives``, a list of each one's mean), ``pruned``, ``failed`` (a run diverged or failed: a result,
    a failed one), or ``cut`` (a run was interrupted or killed: the trial is run again). ``unrecorded``: what a run
    without a record counts as (after its launcher returned, a crash: failed; after the sweeper died, a kill: cut)."""
    statuses = [(RunFolder(Path(d)).status() if d else None) or unrecorded for d in dirs] or [unrecorded]
    if any(s not in FINISHED and s != "failed" for s in statuses):
        return "cut", None
    if all(s in TRAINED for s in statuses):
        records = [RunFolder(Path(d)).recorded() for d in dirs]
        values = [[objectives_lib.value(r, o) for r in records] for o in objectives or [None]]
        if any(v is None for per_objective in values for v in per_objective):
            return "failed", None
        means = [math.fsum(v) / len(v) for v in values]
        return "complete", means if objectives else means[0]
    if "pruned" in statuses and all(s in (*TRAINED, "pruned") for s in statuses):
        return "pruned", None
    return "failed", None


def tell(study, trial, storage, artifacts: Path | None, objectives: list | None,
         unrecorded: str = "failed") -> tuple[str, object]:
    """Tell the study how the trial's runs ended, as their records say (``storage``: the study's; ``trial``: one
    asked, or one read back that a dead sweeper left running). A trial that ran to its end first gets its results
    and artifacts recorded (``analysis.record_trial``). Returns the outcome and the value told."""
    from optuna.trial import Trial, TrialState

    dirs = trial_dirs(trial)
    result, value = outcome(dirs, objectives, unrecorded)
    if not isinstance(trial, Trial):  # a FrozenTrial read back: written to through a public Trial over the storage
        trial = Trial(study, trial_id(storage, study.study_name, trial.number))
    if result == "cut":
        # marked on the trial itself: sweepers sharing a study each mark their own trials, so no mark is lost to
        # another's write (a list on the study was); and on its runs' folders, for report and resume to know them
        trial.set_user_attr(CUT, True)
        for folder in map(Path, dirs):
            if folder.is_dir() and kinds.kind_of(folder) in (None, kinds.RUN):
                kinds.mark(folder, kinds.RUN, cut=dict(study=study.study_name, trial=trial.number))
    else:
        record_trial(trial, dirs, artifacts)
    if result == "complete":
        study.tell(trial.number, value)
    else:
        study.tell(trial.number, state=TrialState.PRUNED if result == "pruned" else TrialState.FAIL)
    return result, value


def cut_numbers(study, trials=None) -> set[int]:
    """The numbers of the trials cut off by a kill (and run again)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return set(study.user_attrs.get(INTERRUPTED, [])) | {t.number for t in trials if t.user_attrs.get(CUT)}


def failed(trial, cut: set[int]) -> bool:
    """A trial that failed as a result (it diverged or crashed): told failed, but not cut off by a kill (``cut``), nor
    refused by the checks (a refused trial is no result: a corrected command runs its share again)."""
    return trial.state.name == "FAIL" and trial.number not in cut and REJECTED not in trial.user_attrs


def count_finished(study) -> int:
    """Trials that ran to an end: complete, pruned, or ``failed``."""
    trials = study.get_trials(deepcopy=False)
    cut = cut_numbers(study, trials)
    return sum(t.state.name in ("COMPLETE", "PRUNED") or failed(t, cut) for t in trials)


# --- the study's summary -----------------------------------------------------------------------------------


def _run_record(trial, objectives: list | None = None) -> dict:
    """A finished trial as the summary shows it: its value (with several ``objectives``, its values by name) and
    parameters; its runs' best epochs and test accuracy at them; over several seeds, mean and standard deviation;
    the command that re-runs it."""
    dirs = trial_dirs(trial)
    value = dict(zip(objectives, trial.values)) if objectives else trial.value
    record = dict(number=trial.number, state=trial.state.name, value=value, params=trial.params,
                  run_dir=dirs[0] if len(dirs) == 1 else None, run_dirs=dirs, test_acc_at_best=None,
                  best_epoch=None, command=None)
    if not dirs:
        return record
    runs = [RunFolder(Path(d)).recorded() or {} for d in dirs]
    tests = [(m.get("test_at_best") or {}).get("acc") for m in runs]
    epochs = [m.get("best_epoch") for m in runs]
    record["run_status"] = runs[0].get("status") if len(runs) == 1 else [m.get("status") for m in runs]
    if len(dirs) == 1:
        record["test_acc_at_best"], record["best_epoch"] = tests[0], epochs[0]
    else:
        vals = [m.get("best_val") for m in runs]
        record["seeds"] = [dict(seed=m.get("seed"), best_val=v, test_acc_at_best=t, best_epoch=e)
                           for m, v, t, e in zip(runs, vals, tests, epochs)]
        record["val_mean"], record["val_std"] = _mean_std(vals)
        record["test_acc_mean"], record["test_acc_std"] = _mean_std(tests)
        record["test_acc_at_best"] = record["test_acc_mean"]
        record["best_epoch"] = epochs
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(Path(dirs[0]) / ".hydra" / "overrides.yaml"))
    except (OSError, ValueError):
        return record
    # on a CPU the numbers depend on the torch threads the run had (joblib's workers share the cores): the
    # command sets the same number
    try:
        threads = RunFolder(Path(dirs[0])).recorded_threads()
    except ThreadsUnknown:
        threads = None
    python = (f"OMP_NUM_THREADS={threads} " if threads else "") + "python -m reg_runner"
    if len(dirs) == 1:
        record["command"] = f"{python} " + " ".join(shlex.quote(o) for o in overrides)
    else:  # each seed alone gives back its run's numbers (a search preset's sweeper settings rule out a grid)
        kept = " ".join(shlex.quote(o) for o in overrides if o.partition("=")[0].lstrip("+") != "seed")
        record["commands"] = [f"{python} {kept} seed={m.get('seed')}" for m in runs]
        record["command"] = (f"for seed in {' '.join(str(m.get('seed')) for m in runs)}; do {python} "
                             f"{kept} seed=$seed; done")
    return record


def _mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of two or more values, or None if one is missing."""
    if any(not isinstance(v, (int, float)) for v in values):
        return None, None
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def epochs_spent(trials, cut: set) -> dict:
    """Epochs the finished trials' runs trained, against what they would have trained unpruned; apart, the
    epochs of the trials a kill cut off (run again: neither a saving nor a result)."""
    run, planned, lost = 0, 0, 0
    for t in trials:
        if t.state.name not in ("COMPLETE", "PRUNED", "FAIL") or REJECTED in t.user_attrs:
            continue
        for d in trial_dirs(t):
            m = RunFolder(Path(d)).recorded() or {}
            if not isinstance(m.get("epochs_run"), int):
                continue
            if t.number in cut:
                lost += m["epochs_run"]
            elif isinstance(m.get("epochs_planned"), int):
                run += m["epochs_run"]
                planned += m["epochs_planned"]
    return dict(run=run, unpruned=planned, share=run / planned if planned else None, cut=lost)


def batch_wait(dirs: list[list[str]], parallel: int) -> dict:
    """What waiting for a batch's slowest run cost: with runs side by side (``parallel`` at most: joblib, SLURM), a
    worker whose run ended early (pruned, early-stopped) idles until the batch's last run ends. ``idle_s``: the
    worker-seconds idle; ``busy_s``: the runs' own wall time."""
    timings = [(RunFolder(Path(d)).recorded() or {}).get("timing") or {} for trial in dirs for d in trial]
    walls = [t["wall_s"] for t in timings if isinstance(t.get("wall_s"), (int, float))]
    side_by_side = 2 <= len(walls) <= parallel  # more runs than workers: no single batch end to wait for
    return dict(busy_s=sum(walls), idle_s=sum(max(walls) - w for w in walls) if side_by_side else 0.0)


def summarize(study, requested: int, wall_s: float, direction, waits: list, objectives: list | None) -> dict:
    """With several ``objectives``: ``pareto``, the Pareto-optimal trials (by their first objective, best first),
    in place of a best trial and a top 10."""
    trials = study.get_trials(deepcopy=False)
    cut = cut_numbers(study, trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if objectives:
        front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=direction[0] == "maximize")
    else:
        complete.sort(key=lambda t: t.value, reverse=direction == "maximize")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    rejected = [t for t in trials if REJECTED in t.user_attrs]
    return dict(
        study_name=study.study_name,
        objective=_objective(trials),
        direction=direction,
        n_trials_requested=requested,
        n_complete=len(complete),
        n_pruned=sum(t.state.name == "PRUNED" for t in trials),
        n_failed=sum(failed(t, cut) for t in trials),
        n_rejected=len(rejected),
        n_interrupted=len(cut),
        n_running=sum(t.state.name == "RUNNING" for t in trials),
        rejected=[dict(number=t.number, reason=t.user_attrs[REJECTED]) for t in rejected[:10]],
        wall_s_this_invocation=wall_s,
        wall_s_study=(max(ends) - min(starts)).total_seconds() if starts and ends else None,
        epochs=epochs_spent(trials, cut),
        batch_wait=dict(batches=len(waits), idle_worker_s=sum(w["idle_s"] for w in waits),
                        busy_worker_s=sum(w["busy_s"] for w in waits)),
        **(dict(objectives=objectives, pareto=[_run_record(t, objectives) for t in front], best=None, top=[])
           if objectives else dict(best=_run_record(complete[0]) if complete else None,
                                   top=[_run_record(t) for t in complete[:10]])),
    )


def _objective(trials) -> str | None:
    """The metric the trials' runs optimized, from their own records."""
    for t in trials:
        dirs = trial_dirs(t)
        record = RunFolder(Path(dirs[0])).recorded() if dirs else None
        if record and record.get("objective"):
            return record["objective"]
    return None


def write_summary(sweep_dir: Path, s: dict) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)  # removed while the search ran: its trials' summary still lands
    atomic.write_json(sweep_dir / "sweep_summary.json", s)
    metric, best = s["objective"] or "the objective", s["best"]
    lines = [f"# Sweep summary: study `{s['study_name']}`", ""]
    pruned = f"{s['n_pruned']} pruned, " if s.get("n_pruned") else ""
    lines.append(
        f"{s['n_complete']} complete, {pruned}{s['n_failed']} failed (diverged or crashed), {s['n_rejected']} "
        f"rejected by the checks, {s['n_interrupted']} cut off by a kill and run again, {s['n_running']} running; "
        f"{s['n_trials_requested']} requested. " + (
            "Objectives: " + ", ".join(f"{o} ({d}d)" for o, d in zip(s["objectives"], s["direction"]))
            + " (reg_runner.sweep.objectives), each the mean over a trial's seeds." if s.get("objectives") else
            f"Objective: the best {metric} of each run ({s['direction']}d)"
            + (", a trial's value the mean over its seeds." if best and best.get("seeds") else ".")))
    epochs = s.get("epochs") or {}
    if epochs.get("unpruned"):
        lines.append(f"Epochs trained: {epochs['run']:,} of the {epochs['unpruned']:,} the finished trials' runs would "
                     f"have trained unpruned ({epochs['share']:.0%}).")
    if s.get("n_interrupted"):
        lines.append(f"Cut off by a kill: {s['n_interrupted']} trials, {epochs.get('cut', 0):,} epochs trained before "
                     "the kill, counted apart: other trials ran in their place, and their folders are not resumed.")
    wait = s.get("batch_wait") or {}
    if wait.get("idle_worker_s"):
        total = wait["idle_worker_s"] + wait["busy_worker_s"]
        lines.append(f"Waiting for each batch's slowest run: {wait['idle_worker_s']:.0f} worker-seconds idle, "
                     f"{wait['idle_worker_s'] / total:.0%} of the workers' time (hydra/launcher=stacked wastes none).")
    if s["wall_s_study"] is not None:
        lines.append(f"Wall time: {s['wall_s_this_invocation']:.0f} s this invocation, "
                     f"{s['wall_s_study']:.0f} s from the study's first trial to its last.")
    if best:
        lines += ["", f"## Best: trial {best['number']}", "", f"- {metric} (objective): {best['value']:.4f}"]
        if best.get("seeds"):
            lines += [f"- over its {len(best['seeds'])} seeds: {metric} {_pm(best['val_mean'], best['val_std'])}, "
                      f"test accuracy at each run's best-validation epoch {_pm(best['test_acc_mean'], best['test_acc_std'])}",
                      "- runs: " + ", ".join(f"`{d}`" for d in best["run_dirs"])]
        else:
            lines += [f"- test accuracy at its best-validation epoch: {_fmt(best['test_acc_at_best'])}",
                      f"- run folder: `{best['run_dir']}`"]
        lines += [f"- parameters: `{best['params']}`", f"- re-run: `{best['command']}`"]
    if s.get("objectives"):
        lines += _front_lines(s)
    else:
        lines += ["", "## Top 10", "", f"| trial | {metric} | test acc at best | best epoch | parameters |",
                  "|---|---|---|---|---|"]
    for t in s["top"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['value']:.4f} | {_fmt(t['test_acc_at_best'])} | "
                     f"{_fmt(t['best_epoch'])} | {params} |")
    if s["rejected"]:
        lines += ["", "## Rejected by the checks", ""] + [f"- trial {r['number']}: {r['reason']}" for r in s["rejected"]]
    atomic.write_text(sweep_dir / "sweep_summary.md", "\n".join(lines) + "\n")


def _front_lines(s: dict) -> list[str]:
    """The Pareto front as the summary's markdown: a table, then each member's re-run command."""
    names = s["objectives"]
    lines = ["", f"## Pareto front: {len(s['pareto'])} trials", "",
             "No other complete trial is at least as good in every objective and better in one.", "",
             "| trial | " + " | ".join(names) + " | test acc at best | parameters |",
             "|" + "---|" * (len(names) + 3)]
    for t in s["pareto"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | " + " | ".join(_fmt(t["value"][o]) for o in names)
                     + f" | {_fmt(t['test_acc_at_best'])} | {params} |")
    lines += ["", "Re-run a member of the front:", ""]
    lines += [f"- trial {t['number']}: `{t['command']}`" for t in s["pareto"]]
    return lines


def print_summary(s: dict, sweep_dir: Path) -> None:
    rejected = f", {s['n_rejected']} rejected" if s["n_rejected"] else ""
    pruned = f", {s['n_pruned']} pruned" if s.get("n_pruned") else ""
    cut = f", {s['n_interrupted']} cut off by a kill (run again)" if s.get("n_interrupted") else ""
    print(f"study {s['study_name']}: {s['n_complete']} complete{pruned}, {s['n_failed']} failed{rejected}{cut}",
          flush=True)
    epochs = s.get("epochs") or {}
    if s.get("n_pruned") and epochs.get("unpruned"):
        print(f"epochs trained: {epochs['run']} of {epochs['unpruned']} unpruned ({epochs['share']:.0%})")
    best = s["best"]
    if s.get("objectives"):
        print(f"Pareto front ({', '.join(s['objectives'])}): {len(s['pareto'])} trials")
        for t in s["pareto"]:
            values = ", ".join(f"{o} {_fmt(v)}" for o, v in t["value"].items())
            print(f"  trial {t['number']}: {values}; test/acc at best {_fmt(t['test_acc_at_best'])}; {t['params']}")
            print(f"    re-run: {t['command']}")
    if best:
        seeds = len(best.get("seeds") or ())
        value = _pm(best["val_mean"], best["val_std"]) if seeds else f"{best['value']:.4f}"
        test = (f"{_pm(best['test_acc_mean'], best['test_acc_std'])} over {seeds} seeds" if seeds
                else _fmt(best["test_acc_at_best"]))
        print(f"best trial {best['number']}: {s['objective'] or 'objective'} {value}, test/acc at best {test}; "
              f"{best['params']}")
        print(f"re-run: {best['command']}")
    print(f"summary: {sweep_dir / 'sweep_summary.md'}", flush=True)


def _pm(mean, std) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{int(v):,}" if v.is_integer() and abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)
