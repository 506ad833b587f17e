"""Runs, top to bottom (``run_stack``): check, lock, record, assemble (``reg_runner.assembly``), train. A single run
is a stack of one; what a run in a larger stack records and computes: docs/stacking.md, "Records", "The same numbers".
"""

import logging
import math
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner import checks, dotted
from reg_runner import config as config_lib
from reg_runner.assembly import Assembly, Job, assemble
from reg_runner.device import resolve as resolve_device
from reg_runner.errors import UserError
from reg_runner.logging.tensorboard import TensorBoard
from reg_runner.records import RunFolder
from reg_runner.seeding import deterministic, resolve_seed
from reg_runner.signals import STOP, in_worker, settle
from reg_runner.trainer.trial import Pruning
from reg_runner.trainer.engine import Engine, warn_if_slow
from reg_runner.trainer.listeners import Progress, Records

log = logging.getLogger(__name__)


def check(job: Job) -> checks.Checked:
    """The job's config through the stages its ``checked`` has not passed, or all of them if it comes unchecked."""
    if job.checked is None:
        return checks.check(job.composed, job.overrides)
    return checks.carry_on(job.checked)


def run_stack(jobs: list[Job], multirun: bool = False, resume: bool = False) -> list[float]:
    """Train ``jobs`` as one stack (they must share their structure: ``keys.structural_keys``): check, lock,
    record, assemble, train."""
    t0 = time.perf_counter()
    STOP.install(starting=True)  # installed by the CLI's first callback already, before any folder existed
    for job in jobs:  # nothing is written before this passes
        job.checked = check(job)
    if differing := config_lib.structural_difference([job.settings for job in jobs]):
        raise UserError(f"these runs cannot train as one stack: they differ in {differing}")
    locked = []
    try:
        for job in jobs:
            job.folder = job.folder or RunFolder(job.run_dir)
            job.folder.lock()
            locked.append(job.folder)
        STOP.resume_hint = "python -m reg_runner.resume " + " ".join(str(job.folder.path) for job in jobs)
        for job in jobs:
            record(job, resume)
            if not resume and job.run_dir not in STOP.made:  # a new run's: removed if a signal ends its start-up
                STOP.made.append(job.run_dir)
        with deterministic(jobs[0].settings.trainer.deterministic):
            return _train(jobs, multirun, t0)
    finally:
        STOP.starting = False
        if STOP.signal is None:  # the next run of a multirun has its own; a stopped run's stands for a second Ctrl-C
            STOP.resume_hint = None
        for folder in locked:
            folder.unlock()
        if in_worker():  # idle now: its command's signal ends it as a worker ends (``signals.settle``)
            STOP.restore()
            if STOP.signal is not None:  # it came as the run ended
                settle(128 + STOP.signal)


def record(job: Job, resume: bool) -> None:
    """The job's folder made ready and its config recorded (a new run, with the seed it uses), or its checkpoint
    loaded once its config is the one it started with (a resumed run)."""
    folder = job.folder
    if resume:
        job.checkpoint = check_resumable(job.composed, folder)
    else:
        folder.refuse_existing()
    folder.prepare()
    job.recorded = config_lib.as_data(job.composed)
    if not resume:
        job.recorded["seed"] = resolve_seed(job.recorded["seed"])  # the seed actually used is what gets recorded
        folder.write_config(OmegaConf.create(job.recorded))


def check_resumable(cfg, folder: RunFolder) -> dict | None:
    """The checkpoint the run in ``folder`` resumes from (None: its first epoch), once ``cfg`` is the config it started
    with (every run checkpoints its epoch 0); ``reg_runner.resume`` checks every run so before any trains."""
    checkpoint = folder.load_last()
    config = config_lib.as_data(cfg)
    started = checkpoint["config"] if checkpoint is not None else config
    if started != config:
        key = config_lib.first_difference(started, config)
        raise UserError(f"{folder.config} was edited after the run started ({key}: {dotted.get(started, key)!r} in "
                        f"its checkpoint, {dotted.get(config, key)!r} in the file); a run resumes with the config it "
                        "started with: restore the file")
    return checkpoint


def _train(jobs: list[Job], multirun: bool, t0: float) -> list[float]:
    first = jobs[0].settings
    tc = first.trainer
    built: Assembly | None = None  # a failed run's record says what it had reached

    try:
        device = resolve_device(tc.device)
        warn_if_slow(tc.eval_precision, device)
        stack = [str(job.folder.path) for job in jobs] if len(jobs) > 1 else None
        for job in jobs:
            resumed_at = job.checkpoint["state"]["epoch"] if job.checkpoint else None
            trial = job.trial.describe() if job.trial else None
            job.folder.write_environment(device, tc.eval_precision, resumed_at, stack, trial)
        built = assemble(jobs)
        members, data, n_params = built.members, built.data, built.n_parameters
        show = first.logging.progress if first.logging.progress != "auto" else (sys.stderr.isatty() and not multirun)
        tensorboard = TensorBoard(data, built.plain, built.resumed)
        pruning = Pruning(members)  # first: a run it stops is recorded as pruned at this epoch
        listeners = [pruning] if pruning.active else []
        # TensorBoard before Records: an epoch's events are written (and flushed at a checkpoint) before its
        # checkpoint, so a kill between the two never loses them
        listeners += [tensorboard, Records(data.info, n_params, t0, built.resumed),
                      Progress(show, tc.epochs, min(m.state.epoch for m in members))]
        engine = Engine(built.model, data, members, listeners, detail=tensorboard.wants_histograms)
        seeds = ", ".join(str(m.seed) for m in members)
        log.info("model: %s, %d parameters, on %s; %s %s", first.model.describe(), n_params, built.device,
                 "seed" if len(members) == 1 else f"{len(members)} runs as one stack, seeds", seeds)
        for trainer in {m.cfg.trainer.early_stopping.patience: m.cfg.trainer for m in members}.values():
            es = trainer.early_stopping  # a patience that outlasts the run's evaluations can never stop it: said
            if es.enabled and es.patience >= trainer.evaluations:
                log.warning("trainer.early_stopping.patience=%d is not less than the %d evaluations of this run "
                            "(trainer.epochs=%d, trainer.eval_every=%d): early stopping cannot stop it", es.patience,
                            trainer.evaluations, trainer.epochs, trainer.eval_every)
        engine.run()
    except Exception as e:  # recorded as each run's failure: a user's mistake as it is, any other error with its type
        error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        for i, job in enumerate(jobs):
            if built is not None:
                metrics = built.members[i].metrics(built.data.info or None, built.n_parameters, {})
            else:
                metrics = dict(status=None, seed=job.recorded["seed"], objective=job.settings.objective, epochs_run=0)
            job.folder.write_metrics(dict(metrics, status="failed", error=error))
        raise
    if engine.interrupted:
        if any(m.state.status == "interrupted" for m in members):
            print(f"interrupted by {STOP.name} after epoch {max(m.state.epoch for m in members)}; checkpoint saved. "
                  f"Resume with: {STOP.resume_hint}", file=sys.stderr, flush=True)
        else:  # it came during the last epoch's records: nothing is left to resume
            print(f"interrupted by {STOP.name} as the run ended; every run had recorded its end", file=sys.stderr,
                  flush=True)
        if in_worker():  # its command ends the sweep and says so; Hydra would send the exit back to it, pickled
            settle(128 + STOP.signal)
        sys.exit(128 + STOP.signal)  # a multirun stops with its run: the signal was meant for the whole command
    return [_summarize(m, time.perf_counter() - t0) for m in members]


def _summarize(member, wall: float) -> float:
    state, objective = member.state, member.cfg.objective
    if state.best is None:
        value = math.nan
        line = f"{state.status} at epoch {state.stopped_at} before any evaluation"
    else:
        value = math.nan if state.status == "diverged" else state.best[objective]  # diverged: a failed trial
        test, final = state.best["test/acc"], state.history[-1]["test/acc"]
        line = (f"{state.status}: best {objective} {state.best[objective]:.4f} at epoch {state.best['epoch']}, "
                f"test/acc {test:.4f} there (final epoch {state.history[-1]['epoch']}: {final:.4f})")
    line = f"{line}; {wall:.1f} s; {member.run_dir}"
    print(line, flush=True)
    # and as an INFO line in its own log file alone: printed already, and in a stack each log file is a root handler
    folder = Path(member.run_dir).resolve()
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            handler.handle(record)
    return value
