"""The Optuna sweeper, made resumable and readable.

It is hydra-optuna-sweeper's ``OptunaSweeper`` (Optuna's storage, Hydra's launchers: nothing of
ours in the search itself), with five additions:

1. ``n_trials`` is the number of finished trials the study should hold in total, not a number to
   add: re-running the same command continues an interrupted sweep up to it, and a finished sweep
   runs nothing more. Finished means complete or failed (a diverging configuration is a result);
   a trial cut off by a kill is marked failed and run again.
2. Each run folder is numbered by its Optuna trial number (``<number>_<overrides>``), so runs of a
   resumed sweep never collide with earlier ones, and each trial records its run folder.
3. A trial left RUNNING by a sweeper process that died on this host is marked failed.
4. A seeded sampler is re-seeded with ``seed + trials already in the study`` on resume, so it does
   not draw the first trials' parameters again.
5. At the end, ``sweep_summary.json`` and ``sweep_summary.md`` in the sweep folder: best trial, its
   parameters, validation and test accuracy (read from its run's metrics.json), counts, wall time,
   the command that re-runs it, and the top 10.
"""

import json
import logging
import os
import shlex
import socket
import time
from pathlib import Path

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from reg_runner import atomic

# optuna is imported inside the functions: the CLI registers this class on every start.
log = logging.getLogger(__name__)
HOST, PID, RUN_DIR = "reg_runner.host", "reg_runner.pid", "reg_runner.run_dir"
INTERRUPTED = "reg_runner.interrupted"  # study attribute: numbers of the trials cut off by a kill


class StudySweeper(OptunaSweeper):
    def __init__(self, sampler, **kwargs):
        import optuna

        super().__init__(sampler=sampler, **kwargs)
        self.sampler_cfg = sampler
        impl = self.sweeper
        if impl.storage is None:  # keep the in-memory study reachable for the summary
            impl.storage = optuna.storages.InMemoryStorage()
        impl.study_name = impl.study_name or "reg_runner"
        self.batch: list = []  # the optuna trials of the batch being launched
        configure = impl._configure_trials

        def configure_and_tag(trials, *args):
            for trial in trials:
                trial.set_user_attr(HOST, socket.gethostname())
                trial.set_user_attr(PID, os.getpid())
            self.batch = trials
            return configure(trials, *args)

        impl._configure_trials = configure_and_tag

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config = config
        self.sweeper.launcher = TrialNumberedLauncher(self.sweeper.launcher, self)

    def study(self):
        import optuna

        impl = self.sweeper
        return optuna.create_study(
            study_name=impl.study_name,
            storage=impl.storage,
            directions=impl._get_directions(),
            load_if_exists=True,
        )

    def sweep(self, arguments: list[str]) -> None:
        t0 = time.time()
        impl = self.sweeper
        study = self.study()
        fail_orphans(study)
        done = count_finished(study)
        requested = impl.n_trials
        impl.n_trials = max(0, requested - done)
        log.info("study %r: %d finished trials, %d requested in total, %d to run", impl.study_name, done,
                 requested, impl.n_trials)
        if done and self.sampler_cfg is not None and OmegaConf.select(self.sampler_cfg, "seed") is not None:
            reseeded = OmegaConf.to_container(self.sampler_cfg, resolve=True)
            reseeded["seed"] = int(reseeded["seed"]) + len(study.trials)
            impl.sampler = instantiate(reseeded, _execution_whitelist_=("optuna.samplers.*",))
        if impl.n_trials > 0:
            impl.sweep(arguments)
        summary = summarize(self.study(), requested, time.time() - t0, impl._get_directions()[0])
        write_summary(Path(self.config.hydra.sweep.dir), summary)
        print_summary(summary, Path(self.config.hydra.sweep.dir))


class TrialNumberedLauncher:
    """Launches each batch with job numbers equal to its trials' numbers, then records run folders."""

    def __init__(self, launcher, sweeper: StudySweeper):
        self.launcher, self.sweeper = launcher, sweeper

    def launch(self, job_overrides, initial_job_idx: int):
        trials = self.sweeper.batch
        numbers = [t.number for t in trials]
        returns, start = [], 0
        for end in range(1, len(numbers) + 1):  # launch each run of consecutive numbers together
            if end == len(numbers) or numbers[end] != numbers[end - 1] + 1:
                returns += self.launcher.launch(job_overrides[start:end], initial_job_idx=numbers[start])
                start = end
        for trial, ret in zip(trials, returns):
            trial.set_user_attr(RUN_DIR, str(Path(ret.hydra_cfg.hydra.runtime.output_dir).resolve()))
        return returns

    def __getattr__(self, name):
        return getattr(self.launcher, name)


def count_finished(study) -> int:
    """Trials that ran to an end: complete, pruned, or failed (diverged), but not cut off by a kill."""
    cut = set(study.user_attrs.get(INTERRUPTED, []))
    return sum(
        t.state.name in ("COMPLETE", "PRUNED") or (t.state.name == "FAIL" and t.number not in cut)
        for t in study.get_trials(deepcopy=False)
    )


UNTAGGED_GRACE_S = 60  # a live sweeper tags the trial it asked within milliseconds


def fail_orphans(study) -> None:
    """Mark failed the RUNNING trials whose sweeper process is gone, and note them as interrupted
    so they do not count towards ``n_trials``: trials of a dead process on this host, and trials
    never tagged (a sweeper killed between asking and tagging) once older than a grace period."""
    import datetime

    from optuna.trial import TrialState

    cut = set(study.user_attrs.get(INTERRUPTED, []))
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        dead_here = attrs.get(HOST) == socket.gethostname() and not _alive(attrs.get(PID))
        untagged = HOST not in attrs and trial.datetime_start is not None and (
            now - trial.datetime_start).total_seconds() > UNTAGGED_GRACE_S
        if dead_here or untagged:
            study.tell(trial.number, state=TrialState.FAIL)
            cut.add(trial.number)
            log.warning("trial %d was cut off (its sweeper process %s is gone): marked failed, run again",
                        trial.number, attrs.get(PID))
    if cut:
        study.set_user_attr(INTERRUPTED, sorted(cut))


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_record(trial) -> dict:
    run_dir = trial.user_attrs.get(RUN_DIR)
    record = dict(number=trial.number, state=trial.state.name, value=trial.value, params=trial.params,
                  run_dir=run_dir, test_acc_at_best=None, best_epoch=None, command=None)
    if run_dir is None:
        return record
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        record["test_acc_at_best"] = (metrics.get("test_at_best") or {}).get("acc")
        record["best_epoch"] = metrics.get("best_epoch")
        record["run_status"] = metrics.get("status")
    except (OSError, ValueError):
        pass
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / ".hydra" / "overrides.yaml"))
        record["command"] = "python -m reg_runner " + " ".join(shlex.quote(o) for o in overrides)
    except (OSError, ValueError):
        pass
    return record


def summarize(study, requested: int, wall_s: float, direction: str) -> dict:
    trials = study.get_trials(deepcopy=False)
    cut = set(study.user_attrs.get(INTERRUPTED, []))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    complete.sort(key=lambda t: t.value, reverse=direction == "maximize")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return dict(
        study_name=study.study_name,
        direction=direction,
        n_trials_requested=requested,
        n_complete=len(complete),
        n_failed=sum(t.state.name == "FAIL" and t.number not in cut for t in trials),
        n_interrupted=len(cut),
        n_running=sum(t.state.name == "RUNNING" for t in trials),
        wall_s_this_invocation=wall_s,
        wall_s_study=(max(ends) - min(starts)).total_seconds() if starts and ends else None,
        best=_run_record(complete[0]) if complete else None,
        top=[_run_record(t) for t in complete[:10]],
    )


def write_summary(sweep_dir: Path, s: dict) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(sweep_dir / "sweep_summary.json", s)
    lines = [f"# Sweep summary: study `{s['study_name']}`", ""]
    lines.append(
        f"{s['n_complete']} complete, {s['n_failed']} failed (diverged or crashed), "
        f"{s['n_interrupted']} cut off by a kill and run again, {s['n_running']} running; "
        f"{s['n_trials_requested']} requested. Objective: best validation accuracy of each run ({s['direction']})."
    )
    if s["wall_s_study"] is not None:
        lines.append(f"Wall time: {s['wall_s_this_invocation']:.0f} s this invocation, "
                     f"{s['wall_s_study']:.0f} s from the study's first trial to its last.")
    best = s["best"]
    if best:
        lines += ["", f"## Best: trial {best['number']}", "",
                  f"- validation accuracy (objective): {best['value']:.4f}",
                  f"- test accuracy at its best-validation epoch: {_fmt(best['test_acc_at_best'])}",
                  f"- parameters: `{best['params']}`",
                  f"- run folder: `{best['run_dir']}`",
                  f"- re-run: `{best['command']}`"]
    lines += ["", "## Top 10", "", "| trial | val acc | test acc at best | best epoch | parameters |",
              "|---|---|---|---|---|"]
    for t in s["top"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['value']:.4f} | {_fmt(t['test_acc_at_best'])} | "
                     f"{_fmt(t['best_epoch'])} | {params} |")
    atomic.write_text(sweep_dir / "sweep_summary.md", "\n".join(lines) + "\n")


def print_summary(s: dict, sweep_dir: Path) -> None:
    print(f"study {s['study_name']}: {s['n_complete']} complete, {s['n_failed']} failed", flush=True)
    best = s["best"]
    if best:
        print(f"best trial {best['number']}: val/acc {best['value']:.4f}, test/acc at best "
              f"{_fmt(best['test_acc_at_best'])}; {best['params']}")
        print(f"re-run: {best['command']}")
    print(f"summary: {sweep_dir / 'sweep_summary.md'}", flush=True)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
