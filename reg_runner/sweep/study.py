"""The Optuna sweeper: a resumable study whose trials are runs, launched by any Hydra launcher.

    python -m reg_runner --multirun hparams_search=regularization

Optuna's storage holds the study (SQLite, PostgreSQL, or memory) and its samplers choose the
trials; Hydra's launchers run them (in process, joblib, submitit/SLURM). The loop that asks, checks,
launches and tells is ours, reading sweep overrides as hydra-optuna-sweeper does (``sweep/overrides.py``):

1. ``n_trials`` is the number of finished trials the study should hold in total, not a number to
   add: re-running the same command continues an interrupted sweep up to it, and a finished sweep
   runs nothing more. Finished means complete or failed (a diverging configuration is a result);
   a trial cut off by a kill is run again.
2. Every trial's config is composed and checked before it is launched: a trial the checks reject
   (a search space that reaches a bad combination) is told failed with the reason, and makes no
   folder. The base config is checked before the first trial is asked.
3. Each run folder is numbered by its Optuna trial number (``<number>_<overrides>``), recorded on
   the trial before launch, so a resumed sweep knows each trial's folder.
4. A trial left RUNNING by a sweeper that died is adopted if its run finished (the study is told
   its value: the work of a killed batch is not redone), and otherwise marked failed and run again.
5. A seeded sampler is re-seeded with ``seed + trials already in the study`` on resume, so it does
   not draw the first trials' parameters again.
6. A value fixed on the command line (``optimizer.lr=0.01``) wins over the search space: the space
   is told the fixed value where it would have suggested one.
7. At the end, ``sweep_summary.json`` and ``sweep_summary.md`` in the sweep folder: best trial, its
   parameters, validation and test accuracy (read from its run's metrics.json), counts, wall time,
   the command that re-runs it, and the top 10.
"""

import datetime
import logging
import math
import os
import shlex
import shutil
import socket
import time
from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reg_runner import atomic, kinds
from reg_runner import config as config_lib
from reg_runner.errors import ConfigError, UserError, exit_on_user_error, show
from reg_runner.records import FINISHED, RunFolder, ThreadsUnknown
from reg_runner.signals import STOP, held_for_workers, stop_if_signalled
from reg_runner.sweep import analysis, flat_params, jobs, labels_not_swept, pruners, stop_workers
from reg_runner.sweep import trial as trial_lib
from reg_runner.sweep.overrides import search_space, suggest

log = logging.getLogger(__name__)
HOST, PID, RUN_DIR = "reg_runner.host", "reg_runner.pid", "reg_runner.run_dir"
RUN_DIRS = "reg_runner.run_dirs"  # a trial of several seeds: its runs' folders
REJECTED = "reg_runner.rejected"  # the checks' one line, for a trial whose config was refused
CUT = "reg_runner.cut"  # on a trial told failed because a kill cut it off: it is run again
INTERRUPTED = "reg_runner.interrupted"  # the same as a study attribute (a list of numbers), as studies before kept it
UNTAGGED_GRACE_S = 60  # a live sweeper tags the trial it asked within milliseconds
MAX_REFUSED = 10  # trials refused in a row before a search is stopped: its space reaches no valid config
SIGNATURE = "reg_runner.signature"  # study attribute: the objective, direction and shared config of its trials


class StudySweeper(Sweeper):
    def __init__(self, sampler, direction, storage, study_name, n_trials, n_jobs, custom_search_space=None,
                 params=None, seeds_per_trial=1, pruner=None):
        self.sampler_cfg, self.direction, self.storage = sampler, direction, storage
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.seeds_per_trial, self.pruner_cfg = seeds_per_trial, pruner
        self.space = instantiate({"_target_": custom_search_space, "_partial_": True}) if custom_search_space else None
        self.params = flat_params(OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params)
                              else params) or {}

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def study(self, n_before: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our log says what its INFO lines would
        sampler_cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
        if n_before and sampler_cfg.get("seed") is not None:
            sampler_cfg["seed"] = int(sampler_cfg["seed"]) + n_before  # a resumed sweep draws new parameters
        sampler = instantiate(sampler_cfg, _execution_whitelist_=("optuna.samplers.*",))
        pruner = pruners.build(self.pruner_cfg) if self.pruner_cfg else None
        try:
            if not hasattr(self, "store"):  # the study's storage, kept: a trial read back is written through it
                self.store = trial_lib.open_storage(self.storage)
                if self.storage is None:
                    trial_lib.MEMORY[self.study_name] = self.store  # the runs of this process report to it
            return optuna.create_study(study_name=self.study_name, storage=self.store, sampler=sampler,
                                       pruner=pruner, direction=self.direction, load_if_exists=True)
        except Exception as e:  # not a database, a server that refuses, a study of another direction...
            raise UserError(f"hydra.sweeper.storage={self.storage!r}: the study {self.study_name!r} cannot be opened "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

    def sweep(self, arguments: list[str]) -> None:
        with exit_on_user_error():
            self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> None:
        t0 = time.time()
        params = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        try:
            space, fixed, fixed_overrides = search_space(params)
        except (ValueError, AssertionError, NotImplementedError) as e:
            raise UserError(f"a sweep override cannot be searched: {e}") from None
        for name in space:
            labels_not_swept(name, next((p for p in params if p.partition("=")[0].lstrip("+~") == name), name))
        fixed_values = _typed_values(fixed)
        for name in fixed:
            space.pop(name, None)
        base = self.precheck(space, fixed, fixed_values, fixed_overrides)
        self.check_ranges(space, fixed, fixed_values, fixed_overrides, dict(p.split("=", 1) for p in params if "=" in p))
        stop_if_signalled("checking the search")
        created = self.make_folders()
        try:
            study = self.study()
            same_study(study, base, self.direction, self.seeds_per_trial)
        except UserError:
            for folder in reversed(created):  # refused before anything ran: leave nothing behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise
        if "study" not in kinds.marker(self.sweep_dir):  # where the report finds the study
            kinds.mark(self.sweep_dir, kinds.SWEEP, study=dict(name=self.study_name,
                                                                storage=analysis.shown_storage(self.storage)))
        self.artifacts = self.sweep_dir / analysis.ARTIFACTS if self.storage else None
        adopt_orphans(study, self.store, self.artifacts)
        done = count_finished(study)
        if done:
            study = self.study(n_before=len(study.trials))
        to_run = max(0, self.n_trials - done)
        log.info("study %r: %d finished trials, %d requested in total, %d to run", self.study_name, done,
                 self.n_trials, to_run)
        refused: list[str] = []  # the reasons of the trials refused in a row
        self.waits = []  # per batch: how long its runs waited for the batch's slowest
        while to_run > 0:
            if STOP.signal is not None:  # between two batches: the next is not asked
                if not study.trials:  # nothing of this search exists yet: neither does its folder
                    for folder in reversed(created):
                        shutil.rmtree(folder, ignore_errors=True)
                done = count_finished(study)
                kept = ("the same command continues it" if self.storage else "its study was in memory: its runs' "
                        "folders hold their results")
                stop_if_signalled("the search ran", f"no trial was cut: {done} finished trials; {kept}"
                                  if study.trials else "nothing was started")
            trials = [study.ask() for _ in range(min(self.n_jobs, to_run))]
            for trial in trials:
                trial.set_user_attr(HOST, socket.gethostname())
                trial.set_user_attr(PID, os.getpid())
            batch, folders = [], set()
            for trial in trials:
                overrides = self.trial_overrides(trial, space, fixed, fixed_values, fixed_overrides)
                runs = self.rejected(study, trial, overrides, folders)
                if isinstance(runs, list):
                    batch.append((trial, runs))
                    refused.clear()
                else:
                    refused.append(runs)
            if len(refused) >= max(MAX_REFUSED, 2 * self.n_jobs):
                # a rejected trial is no result and does not count: a space that reaches no valid config would
                # otherwise ask forever
                raise UserError(f"the last {len(refused)} trials were all refused ({'; '.join(sorted(set(refused))[:3])}"
                                "): the search space reaches no valid config")
            started = time.time()
            try:
                with held_for_workers(self.uses_joblib()):
                    self.launch(batch)
            except (Exception, SystemExit):  # a launcher whose workers the signal reached too (joblib's)
                if STOP.signal is None:
                    raise
                stop_workers()
                stop_if_signalled("trials ran", "their runs stopped with a checkpoint, or before they started; "
                                  + ("the same command continues the search (it takes a trial whose run was "
                                     "resumed to its end as it is, and runs the others again)" if self.storage else
                                     "their study was in memory: their folders hold what they did"))
            self.waits.append(batch_wait([trial_dirs(trial) for trial, _ in batch], time.time() - started,
                                         self.parallel_runs()))
            for trial, _ in batch:  # the runs' records say how each ended (a job that raised recorded it)
                tell(study, trial, self.store, self.artifacts)
            to_run -= len(batch)
        summary = summarize(study, self.n_trials, time.time() - t0, self.direction, self.waits)
        write_summary(self.sweep_dir, summary)
        print_summary(summary, self.sweep_dir)

    def precheck(self, space, fixed, fixed_values, fixed_overrides) -> dict:
        """Before the study is opened: a trial drawn from a throwaway study must search something, and must
        not be refused for a value the search does not set, which every trial would share. Returns the base
        config the trials share (what a resumed study must still have)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction=self.direction)
        trial = dry.ask()
        overrides = self.trial_overrides(trial, space, fixed, fixed_values, fixed_overrides)
        if not trial.params:
            raise UserError("the search has nothing to search: give hydra.sweeper.custom_search_space or sweep a key "
                            "(optimizer.lr=tag(log,interval(1e-4,1e-1)), model.norm=choice(none,batchnorm))")
        job = jobs.compose(self.hydra_context.config_loader, self.config, overrides, 0, "the search")
        if self.seeds_per_trial > 1:
            if "seed" in trial.params:
                raise UserError(f"hydra.sweeper.seeds_per_trial={self.seeds_per_trial} runs each trial over its own "
                                "seeds: seed cannot be searched as well")
            if not isinstance(job.get("seed"), int):
                raise ConfigError("seed", job.get("seed"), f"a number with hydra.sweeper.seeds_per_trial="
                                  f"{self.seeds_per_trial}: a trial runs seeds seed..seed+{self.seeds_per_trial - 1}")
        try:
            config_lib.check(job, overrides)
        except ConfigError as e:
            if e.key not in trial.params:
                raise UserError(f"every trial would be refused: {e}") from None
        shared = config_lib.results_config(config_lib.as_data(job))
        for name in trial.params:  # what the trials search is theirs; the rest is the study's
            node = shared
            *parents, leaf = name.split(".")
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(leaf, None)
        return shared

    def check_ranges(self, space, fixed, fixed_values, fixed_overrides, texts: dict) -> None:
        """Each range swept on the command line, at its ends (each choice of a ``choice``), must be a value its
        key allows: ``model.dropout=interval(0.5,1.5)`` would otherwise run the trials that fall inside and
        refuse the others one by one. The upper end of a float range is checked just below it (a draw never
        reaches it), so ``interval(0,1)`` for a probability in [0, 1) is fine."""
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        base = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction=self.direction).ask()
        self.trial_overrides(base, space, fixed, fixed_values, fixed_overrides)
        for name, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                ends = [(f"its choice {show(c)}", c) for c in dist.choices]
            else:
                top = math.nextafter(dist.high, dist.low) if isinstance(dist, FloatDistribution) and not dist.step \
                    else dist.high
                ends = [(f"its lower end {show(dist.low)}", dist.low), (f"its upper end {show(dist.high)}", top)]
            for which, value in ends:
                trial = optuna.trial.FixedTrial({**base.params, name: value})
                try:
                    overrides = self.trial_overrides(trial, space, fixed, fixed_values, fixed_overrides)
                    job = jobs.compose(self.hydra_context.config_loader, self.config, overrides, 0, "the search")
                    config_lib.check(job, overrides)
                except ConfigError as e:  # another key's: a rule between it and the others' drawn values
                    if e.key == name:
                        raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which} is not "
                                        f"{e.allowed}") from None
                except UserError as e:  # the config cannot be composed with it (a group option that is not there)
                    raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which}: {e}") from None
                except ValueError:  # a conditional space asks for a parameter this combination does not have
                    continue

    def make_folders(self) -> list[Path]:
        """The sweep folder (the folders made, to remove if the study then cannot be opened). An SQLite
        database elsewhere must be in a folder that exists."""
        if isinstance(self.storage, str) and self.storage.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            database = make_url(self.storage).database
            if database and database != ":memory:":
                folder = Path(database).absolute().parent
                inside = folder == self.sweep_dir.absolute() or self.sweep_dir.absolute() in folder.parents
                if not inside and not folder.is_dir():
                    raise UserError(f"hydra.sweeper.storage={self.storage!r}: the folder {folder} does not exist; "
                                    "create it first, or keep the database in the sweep folder")
        created, folder = [], self.sweep_dir.absolute()
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        try:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"hydra.sweep.dir: the folder {self.sweep_dir} cannot be created ({e.strerror}); "
                            "choose another") from None
        return list(reversed(created))

    def trial_overrides(self, trial, space, fixed, fixed_values, fixed_overrides) -> list[str]:
        for name, distribution in space.items():
            suggest(trial, name, distribution)
        if self.space is not None:
            self.space(self.config, FixedAware(trial, fixed_values))
        return [f"{k}={v}" for k, v in trial.params.items()] + [f"{k}={v}" for k, v in fixed.items()] + list(
            fixed_overrides)

    def rejected(self, study, trial, overrides, folders: set) -> list[list[str]] | str:
        """Compose and check the trial's runs: their overrides if they may run; else the reason, and the
        trial is told failed with it (it makes no folder). ``folders``: the batch's, which must differ."""
        from optuna.trial import TrialState

        try:
            runs = self.trial_runs(trial, overrides)
            for run, job in runs:
                jobs.check(job, run)
                folder = jobs.output_dir(job)
                if folder in folders:
                    raise UserError(f"its folder {folder} is another trial's of this batch: hydra.sweep.subdir must "
                                    "tell trials apart")
                folders.add(folder)
        except UserError as e:
            trial.set_user_attr(REJECTED, str(e))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d rejected (told failed, no folder made): %s", trial.number, e)
            return str(e)
        dirs = [str(jobs.output_dir(job)) for _, job in runs]
        if self.seeds_per_trial == 1:
            trial.set_user_attr(RUN_DIR, dirs[0])
        else:
            trial.set_user_attr(RUN_DIRS, dirs)
        return [run for run, _ in runs]

    def trial_runs(self, trial, overrides) -> list[tuple[list[str], object]]:
        """The overrides and composed config of each of a trial's runs: one run, or with ``seeds_per_trial``
        = K the seeds ``seed``, ``seed`` + 1, ... + K - 1, each in ``<trial's folder>/seed=<seed>``. Every run
        carries its trial's number (``hydra.job.env_set``), through which it reports to the study."""
        link = [f"++hydra.job.env_set.{trial_lib.ENV}={trial.number}"]

        def compose(run):
            return jobs.compose(self.hydra_context.config_loader, self.config, run, trial.number)

        if self.seeds_per_trial == 1:
            run = list(overrides) + link
            return [(run, compose(run))]
        trial_job = compose(list(overrides))  # its seed is the first; its folder, less the seed, the trial's
        unseeded = [o for o in overrides if o.partition("=")[0].lstrip("+") != "seed"]
        folder = jobs.subdir(compose(unseeded))
        runs = []
        for seed in range(trial_job.seed, trial_job.seed + self.seeds_per_trial):
            subdir = f"{folder}/seed={seed}".replace("'", "\\'")  # quoted for Hydra's override grammar
            run = unseeded + [f"seed={seed}", f"hydra.sweep.subdir='{subdir}'"] + link
            runs.append((run, compose(run)))
        return runs

    def parallel_runs(self) -> int:
        """How many runs of a batch the launcher runs side by side (1: one after the other, or one stack)."""
        from reg_runner.sweep import joblib_workers

        launcher = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        workers = joblib_workers(launcher)
        if workers is not None:
            return workers
        return 1 if str(launcher.get("_target_", "")).endswith(("BasicLauncher", "StackedLauncher")) else 10**6

    def uses_joblib(self) -> bool:
        from reg_runner.sweep import joblib_workers

        return joblib_workers(OmegaConf.to_container(self.config.hydra.launcher, resolve=True)) is not None

    def launch(self, batch) -> None:
        """Launch the batch's runs together (how each ended is in its records). A trial of one run is numbered
        by its trial (``hydra.job.num`` names its folder); the seeds of a trial have folders named for it."""
        runs = [run for _, trial_runs in batch for run in trial_runs]
        if self.seeds_per_trial > 1:
            self.launcher.launch(runs, initial_job_idx=batch[0][0].number * self.seeds_per_trial)
            return
        start, numbers = 0, [trial.number for trial, _ in batch]
        for end in range(1, len(batch) + 1):
            if end == len(batch) or numbers[end] != numbers[end - 1] + 1:
                self.launcher.launch(runs[start:end], initial_job_idx=numbers[start])
                start = end


class FixedAware:
    """A trial as a search space sees it: a parameter fixed on the command line is not suggested,
    its fixed value is returned (so conditional branches follow it)."""

    def __init__(self, trial, fixed: dict):
        self._trial, self._fixed = trial, fixed

    def _draw(self, kind: str, name: str, *args, **kwargs):
        if name in self._fixed:
            return self._fixed[name]
        if name in self._trial.params:  # searched on the command line (interval(...), choice(...)): that wins
            return self._trial.params[name]
        return getattr(self._trial, kind)(name, *args, **kwargs)

    def suggest_float(self, name, *args, **kwargs):
        return self._draw("suggest_float", name, *args, **kwargs)

    def suggest_int(self, name, *args, **kwargs):
        return self._draw("suggest_int", name, *args, **kwargs)

    def suggest_categorical(self, name, *args, **kwargs):
        return self._draw("suggest_categorical", name, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._trial, name)


def _typed_values(fixed: dict) -> dict:
    """``{"optimizer.lr": "0.01"}`` -> ``{"optimizer.lr": 0.01}``, as Hydra parses a value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return {k: parser.parse_override(f"{k}={v}").value() for k, v in fixed.items()}


def run_status(run_dir) -> str | None:
    return RunFolder(Path(run_dir)).status() if run_dir else None


def trial_dirs(trial) -> list[str]:
    """The folders of a trial's runs (one, or one per seed)."""
    attrs = trial.user_attrs
    return list(attrs[RUN_DIRS]) if RUN_DIRS in attrs else [attrs[RUN_DIR]] if RUN_DIR in attrs else []


def outcome(dirs: list[str], unrecorded: str = "failed") -> tuple[str, float | None]:
    """How a trial's runs ended, from their records: ``complete`` with the mean of their best objectives,
    ``pruned``, ``failed`` (a run diverged or failed: the configuration is a result, a failed one), or
    ``cut`` (a run was interrupted or killed: the trial is run again). ``unrecorded``: what a run without
    a record counts as (after its launcher returned, a crash: failed; after the sweeper died, a kill: cut)."""
    statuses = [run_status(d) or unrecorded for d in dirs] or [unrecorded]
    if any(s not in FINISHED and s != "failed" for s in statuses):
        return "cut", None
    if all(s in ("completed", "early_stopped") for s in statuses):
        values = [RunFolder(Path(d)).recorded().get("best_val") for d in dirs]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return "complete", math.fsum(values) / len(values)
        return "failed", None
    if any(s == "pruned" for s in statuses) and all(s in ("completed", "early_stopped", "pruned") for s in statuses):
        return "pruned", None
    return "failed", None


def tell(study, trial, storage, artifacts: Path | None = None) -> str:
    """Tell the study how the trial's runs ended, as their records say (``storage``: the study's); a trial that
    ran to its end first gets its results as user attributes, and its curves and metrics as artifacts in
    ``artifacts``."""
    from optuna.trial import TrialState

    result, value = outcome(trial_dirs(trial))
    if result != "cut":
        analysis.record_trial(trial, trial_dirs(trial), artifacts)
    if result == "complete":
        study.tell(trial, value)
    elif result == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        if result == "cut":
            _mark_cut(study, trial, storage)
        study.tell(trial, state=TrialState.FAIL)
    return result


def _mark_cut(study, trial, storage) -> None:
    """Mark a trial cut off, on the trial itself before it is told failed: sweepers sharing a study each
    mark their own trials, so no mark is lost to another's write (a list on the study was). Its runs'
    folders are marked too: report and resume then know them for runs no study will read."""
    storage.set_trial_user_attr(trial_lib.trial_id(storage, study.study_name, trial.number), CUT, True)
    for d in trial_dirs(trial):
        folder = Path(d)
        if folder.is_dir() and kinds.kind_of(folder) in (None, kinds.RUN):
            kinds.mark(folder, kinds.RUN, cut=dict(study=study.study_name, trial=trial.number))


def cut_numbers(study, trials=None) -> set[int]:
    """The numbers of the trials cut off by a kill (and run again)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return set(study.user_attrs.get(INTERRUPTED, [])) | {t.number for t in trials if t.user_attrs.get(CUT)}


def count_finished(study) -> int:
    """Trials that ran to an end: complete, pruned, or failed (diverged), but not cut off by a kill, nor
    refused by the checks (a refused trial is no result: a corrected command runs its share again)."""
    trials = study.get_trials(deepcopy=False)
    cut = cut_numbers(study, trials)
    return sum(
        t.state.name in ("COMPLETE", "PRUNED")
        or (t.state.name == "FAIL" and t.number not in cut and REJECTED not in t.user_attrs)
        for t in trials
    )


def same_study(study, base: dict, direction: str, seeds_per_trial: int = 1) -> None:
    """A study continues with the settings it started with: another objective, direction, budget, data or
    number of seeds per trial would rank incomparable values together. The first invocation records them."""
    signature = study.user_attrs.get(SIGNATURE)
    mine = dict(direction=direction, config=base)
    if seeds_per_trial != 1:
        mine["seeds_per_trial"] = seeds_per_trial
    if signature is not None and signature.get("seeds_per_trial", 1) != seeds_per_trial:
        raise UserError(f"the study {study.study_name!r} was started with hydra.sweeper.seeds_per_trial="
                        f"{signature.get('seeds_per_trial', 1)}; this command has {seeds_per_trial}: its trials' "
                        "values would not compare. Use another hydra.sweeper.study_name, or the study's own setting")
    if signature is None:
        if not study.trials:
            study.set_user_attr(SIGNATURE, mine)
        return
    if signature != mine:
        key = "direction" if signature.get("direction") != direction else config_lib.first_difference(
            signature.get("config"), base)
        before = signature.get("direction") if key == "direction" else config_lib.value_at(signature.get("config"), key)
        now = direction if key == "direction" else config_lib.value_at(base, key)
        raise UserError(f"the study {study.study_name!r} was started with {key}={before!r}; this command has "
                        f"{now!r}: its trials would not compare. Use another hydra.sweeper.study_name, or the study's "
                        "own settings")


def adopt_orphans(study, storage, artifacts: Path | None = None) -> None:
    """Settle the RUNNING trials whose sweeper process is gone (a dead process on this host, or never
    tagged and older than a grace period): a trial whose run finished is told its result (adopted);
    the others are marked failed and noted as cut off, so they are run again. ``storage``: the study's."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(trial):
            continue
        attrs = trial.user_attrs
        result, value = outcome(trial_dirs(trial), unrecorded="interrupted")
        if result != "cut":
            analysis.record_trial(trial_lib.live(study, storage, trial), trial_dirs(trial), artifacts)
        if result == "complete":
            study.tell(trial.number, value)
            log.warning("trial %d: its sweeper died after its runs finished; adopted with value %s", trial.number,
                        value)
        elif result == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
        elif result == "failed":  # diverged: a result, not a cut
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            _mark_cut(study, trial, storage)
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("trial %d was cut off (its sweeper process %s is gone): marked failed, run again",
                        trial.number, attrs.get(PID))


def _orphaned(trial) -> bool:
    """Whether a RUNNING trial's sweeper is gone. Its host and pid are two writes after ``ask``: a trial with
    one of them only is a live sweeper between the two (another sweeper sharing the study can look then),
    so only both name a process, and a trial without both is given the grace period."""
    attrs = trial.user_attrs
    if HOST in attrs and PID in attrs:
        return attrs[HOST] == socket.gethostname() and not _alive(attrs[PID])
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > UNTAGGED_GRACE_S


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
    """A finished trial as the summary shows it: its value and parameters; its runs' best epochs and test
    accuracy at them; over several seeds, mean and standard deviation; the command that re-runs it."""
    dirs = trial_dirs(trial)
    record = dict(number=trial.number, state=trial.state.name, value=trial.value, params=trial.params,
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
    """Mean and sample standard deviation (n - 1) of the values, or None if one is missing."""
    if not values or any(not isinstance(v, (int, float)) for v in values):
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
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


def batch_wait(dirs: list[list[str]], wall_s: float, parallel: int) -> dict:
    """What waiting for a batch's slowest run cost: with runs side by side (joblib, SLURM), a worker
    whose run ended early (pruned, early-stopped) idles until the batch's last run ends. ``idle_s``:
    the worker-seconds idle; ``busy_s``: the runs' own wall time."""
    walls = []
    for trial_dirs_ in dirs:
        for d in trial_dirs_:
            timing = (RunFolder(Path(d)).recorded() or {}).get("timing") or {}
            if isinstance(timing.get("wall_s"), (int, float)):
                walls.append(timing["wall_s"])
    if parallel <= 1 or len(walls) < 2 or len(walls) > parallel:
        return dict(wall_s=wall_s, busy_s=sum(walls), idle_s=0.0)
    return dict(wall_s=wall_s, busy_s=sum(walls), idle_s=sum(max(walls) - w for w in walls))


def summarize(study, requested: int, wall_s: float, direction: str, waits: list | None = None) -> dict:
    trials = study.get_trials(deepcopy=False)
    cut = cut_numbers(study, trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
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
        n_failed=sum(t.state.name == "FAIL" and t.number not in cut and REJECTED not in t.user_attrs for t in trials),
        n_rejected=len(rejected),
        n_interrupted=len(cut),
        n_running=sum(t.state.name == "RUNNING" for t in trials),
        rejected=[dict(number=t.number, reason=t.user_attrs[REJECTED]) for t in rejected[:10]],
        wall_s_this_invocation=wall_s,
        wall_s_study=(max(ends) - min(starts)).total_seconds() if starts and ends else None,
        epochs=epochs_spent(trials, cut),
        batch_wait=dict(batches=len(waits or []), idle_worker_s=sum(w["idle_s"] for w in waits or []),
                        busy_worker_s=sum(w["busy_s"] for w in waits or [])),
        best=_run_record(complete[0]) if complete else None,
        top=[_run_record(t) for t in complete[:10]],
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
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(sweep_dir / "sweep_summary.json", s)
    metric, best = s["objective"] or "the objective", s["best"]
    lines = [f"# Sweep summary: study `{s['study_name']}`", ""]
    pruned = f"{s['n_pruned']} pruned, " if s.get("n_pruned") else ""
    lines.append(
        f"{s['n_complete']} complete, {pruned}{s['n_failed']} failed (diverged or crashed), {s['n_rejected']} "
        f"rejected by the checks, {s['n_interrupted']} cut off by a kill and run again, {s['n_running']} running; "
        f"{s['n_trials_requested']} requested. Objective: the best {metric} of each run ({s['direction']}d)"
        + (", a trial's value the mean over its seeds." if best and best.get("seeds") else ".")
    )
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
    lines += ["", "## Top 10", "", f"| trial | {metric} | test acc at best | best epoch | parameters |",
              "|---|---|---|---|---|"]
    for t in s["top"]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
        lines.append(f"| {t['number']} | {t['value']:.4f} | {_fmt(t['test_acc_at_best'])} | "
                     f"{_fmt(t['best_epoch'])} | {params} |")
    if s["rejected"]:
        lines += ["", "## Rejected by the checks", ""] + [f"- trial {r['number']}: {r['reason']}" for r in s["rejected"]]
    atomic.write_text(sweep_dir / "sweep_summary.md", "\n".join(lines) + "\n")


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
    if best:
        if best.get("seeds"):
            print(f"best trial {best['number']}: {s['objective'] or 'objective'} {_pm(best['val_mean'], best['val_std'])}"
                  f", test/acc at best {_pm(best['test_acc_mean'], best['test_acc_std'])} over "
                  f"{len(best['seeds'])} seeds; {best['params']}")
        else:
            print(f"best trial {best['number']}: {s['objective'] or 'objective'} {best['value']:.4f}, test/acc at best "
                  f"{_fmt(best['test_acc_at_best'])}; {best['params']}")
        print(f"re-run: {best['command']}")
    print(f"summary: {sweep_dir / 'sweep_summary.md'}", flush=True)


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
