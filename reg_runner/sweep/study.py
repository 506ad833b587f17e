"""The Optuna sweeper: a resumable study whose trials are runs, launched by any Hydra launcher.

Optuna's storage and samplers, Hydra's launchers, and our own loop, which asks, checks (the search space first,
then each trial before its launch), launches and tells. Its contract (``n_trials`` in total, resume, the trials a
dead sweeper left RUNNING): docs/search.md. Beside it: ``outcomes.py`` (what its trials came to, and its summary).
"""

import datetime
import functools
import logging
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reg_runner import checks, dotted, kinds
from reg_runner import config as config_lib
from reg_runner.records import make_folder
from reg_runner.errors import ConfigError, UserError, cause, exit_on_user_error, show
from reg_runner.signals import STOP, at_once, remove_empty, stop_if_signalled
from reg_runner.sweep import analysis, jobs, stacked
from reg_runner.sweep.objectives import SAMPLERS
from reg_runner.sweep.settings import flat_params, labels_not_swept
from reg_runner.sweep.workers import alive, joblib_workers, launch_with_signals
from reg_runner.sweep.outcomes import (REJECTED, batch_wait, count_finished, print_summary, summarize, tell,
                                       write_summary)
from reg_runner.sweep.overrides import search_space, suggest
from reg_runner.trainer import trial as trial_lib

log = logging.getLogger(__name__)
MAX_REFUSED = 10  # trials refused in a row before a search is stopped: its space reaches no valid config
SIGNATURE = "reg_runner.signature"  # study attribute: the objective, direction and shared config of its trials
HOST, PID = "reg_runner.host", "reg_runner.pid"  # trial attributes: the sweeper process that asked it
UNTAGGED_GRACE_S = 60  # a live sweeper tags the trial it asked within milliseconds


class StudySweeper(Sweeper):
    def __init__(self, sampler, direction, storage, study_name, n_trials, n_jobs, custom_search_space=None,
                 params=None, seeds_per_trial=1, pruner=None, objectives=None):
        self.sampler_cfg, self.storage = sampler, storage
        self.direction = OmegaConf.to_container(direction) if OmegaConf.is_config(direction) else direction
        self.objectives = list(objectives) if objectives else None  # several: a multi-objective study
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.seeds_per_trial, self.pruner_cfg = seeds_per_trial, pruner
        self.space = instantiate({"_target_": custom_search_space, "_partial_": True}) if custom_search_space else None
        self.params = flat_params(params) or {}

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.task_function = config, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.compose = functools.partial(jobs.compose, hydra_context.config_loader, config)  # (overrides, num, name)

    def study(self, n_before: int = 0):
        import optuna

        sampler_cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
        if n_before and sampler_cfg.get("seed") is not None:
            sampler_cfg["seed"] = int(sampler_cfg["seed"]) + n_before  # a resumed sweep draws new parameters
        sampler = instantiate(sampler_cfg, _execution_whitelist_=SAMPLERS)
        pruner = trial_lib.build_pruner(self.pruner_cfg)
        try:
            if not hasattr(self, "store"):  # the study's storage, kept: a trial read back is written through it
                self.store = (optuna.storages.RDBStorage(self.storage) if self.storage is not None
                              else optuna.storages.InMemoryStorage())
                if self.storage is None:
                    trial_lib.MEMORY[self.study_name] = self.store  # the runs of this process report to it
            goal = dict(directions=self.direction) if self.objectives else dict(direction=self.direction)
            study = optuna.create_study(study_name=self.study_name, storage=self.store, sampler=sampler,
                                        pruner=pruner, load_if_exists=True, **goal)
        except Exception as e:  # not a database, a server that refuses, a study of another direction...
            raise UserError(f"hydra.sweeper.storage={show(self.storage)}: the study {self.study_name!r} cannot be "
                            f"opened ({cause(e, 200)})") from None
        if self.objectives and not study.trials and len(study.directions) == len(self.objectives):
            with warnings.catch_warnings():  # experimental: the names optuna-dashboard shows the values under
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.objectives)
        return study

    @exit_on_user_error()
    def sweep(self, arguments: list[str]) -> None:
        t0 = time.time()
        params = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        stop_if_signalled("checking the search")  # a signal that came before
        with at_once("while checking the search; nothing was started"):
            try:
                self.swept, self.fixed, self.deletions = search_space(params)
            except (ValueError, AssertionError, NotImplementedError) as e:
                raise UserError(f"a sweep override cannot be searched: {e}") from None
            for name in self.swept:
                labels_not_swept(name, next((p for p in params if p.partition("=")[0].lstrip("+~") == name), name))
            parser = OverridesParser.create()  # the fixed values as Hydra parses them: "0.01" -> 0.01
            self.fixed_values = {k: parser.parse_override(f"{k}={v}").value() for k, v in self.fixed.items()}
            for name in self.fixed:
                self.swept.pop(name, None)
            base, drawn = self.precheck()
            self.check_ranges(drawn, dict(p.split("=", 1) for p in params if "=" in p))
        created = make_folder("hydra.sweep.dir", self.sweep_dir)  # removed if the study cannot be opened
        try:
            study = self.study()
            same_study(study, base, self.direction, self.seeds_per_trial, self.objectives)
        except UserError:
            remove_empty(created)  # refused before anything ran: leave nothing behind
            raise
        if "study" not in kinds.marker(self.sweep_dir):  # where the report finds the study
            kinds.mark(self.sweep_dir, kinds.SWEEP, study=dict(name=self.study_name,
                                                                storage=trial_lib.shown_storage(self.storage)))
        self.artifacts = self.sweep_dir / analysis.ARTIFACTS if self.storage else None
        adopt_orphans(study, self.store, self.artifacts, self.objectives)
        done = count_finished(study)
        if done:
            study = self.study(n_before=len(study.trials))
        to_run = max(0, self.n_trials - done)
        log.info("study %r: %d finished trials, %d requested in total, %d to run", self.study_name, done,
                 self.n_trials, to_run)
        refused: list[str] = []  # the reasons of the trials refused in a row
        waits = []  # per batch: how long its runs waited for the batch's slowest
        launcher = OmegaConf.to_container(self.config.hydra.launcher, resolve=True)
        parallel = joblib_workers(launcher) or (1 if jobs.in_process(launcher) else 10**6)  # runs side by side
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
                runs = self.rejected(study, trial, folders)
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
            launch_with_signals(self.config, lambda: self.launch(batch), "trials ran",
                                "their runs stopped with a checkpoint, or before they started; " + (
                                    "the same command continues the search (it takes a trial whose run was resumed "
                                    "to its end as it is, and runs the others again)" if self.storage else
                                    "their study was in memory: their folders hold what they did"))
            waits.append(batch_wait([analysis.trial_dirs(trial) for trial, _ in batch], parallel))
            for trial, _ in batch:  # the runs' records say how each ended (a job that raised recorded it)
                tell(study, trial, self.store, self.artifacts, self.objectives)
            to_run -= len(batch)
        summary = summarize(study, self.n_trials, time.time() - t0, self.direction, waits, self.objectives)
        write_summary(self.sweep_dir, summary)
        print_summary(summary, self.sweep_dir)

    def precheck(self) -> tuple[dict, dict]:
        """A trial drawn from a throwaway study must search something, and must not be refused for a value the
        search does not set, which every trial would share. Returns the config the trials share (what a resumed
        study must still have), and the trial's parameters."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # for the search: our log says what its INFO lines would
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        overrides = self.trial_overrides(trial)
        if not trial.params:
            raise UserError("the search has nothing to search: give hydra.sweeper.custom_search_space or sweep a key "
                            "(optimizer.lr=tag(log,interval(1e-4,1e-1)), model.norm=choice(none,batchnorm))")
        job = self.compose(overrides, 0, "the search")
        if self.seeds_per_trial > 1:
            if "seed" in trial.params:
                raise UserError(f"hydra.sweeper.seeds_per_trial={self.seeds_per_trial} runs each trial over its own "
                                "seeds: seed cannot be searched as well")
            if not isinstance(job.get("seed"), int):
                raise ConfigError("seed", job.get("seed"), f"a number with hydra.sweeper.seeds_per_trial="
                                  f"{self.seeds_per_trial}: a trial runs seeds seed..seed+{self.seeds_per_trial - 1}")
        try:
            checks.check(job, overrides)
        except ConfigError as e:
            if e.key not in trial.params:
                raise UserError(f"every trial would be refused: {e}") from None
        shared = config_lib.results_config(config_lib.as_data(job))
        for name in trial.params:  # what the trials search is theirs; the rest is the study's
            dotted.drop(shared, name)
        return shared, trial.params

    def check_ranges(self, drawn: dict, texts: dict) -> None:
        """Each range swept on the command line, at its ends (each choice of a ``choice``), must be a value its key
        allows: ``model.dropout=interval(0.5,1.5)`` would otherwise refuse the trials that fall outside one by one.
        A float range's upper end is checked just below it, which a draw never reaches: ``interval(0,1)`` suits a
        probability in [0, 1). ``drawn``: the other parameters' values; ``texts``: each sweep as written."""
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        for name, dist in self.swept.items():
            if isinstance(dist, CategoricalDistribution):
                ends = [(f"its choice {show(c)}", c) for c in dist.choices]
            else:
                top = math.nextafter(dist.high, dist.low) if isinstance(dist, FloatDistribution) and not dist.step \
                    else dist.high
                ends = [(f"its lower end {show(dist.low)}", dist.low), (f"its upper end {show(dist.high)}", top)]
            for which, value in ends:
                trial = optuna.trial.FixedTrial({**drawn, name: value})
                try:
                    overrides = self.trial_overrides(trial)
                    job = self.compose(overrides, 0, "the search")
                    checks.check(job, overrides)
                except ConfigError as e:  # another key's: a rule between it and the others' drawn values
                    if e.key == name:
                        raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which} is not "
                                        f"{e.allowed}") from None
                except UserError as e:  # the config cannot be composed with it (a group option that is not there)
                    raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which}: {e}") from None
                except ValueError:  # a conditional space asks for a parameter this combination does not have
                    continue

    def trial_overrides(self, trial) -> list[str]:
        """The trial's overrides: the values it draws (the keys swept on the command line, then the search space's),
        the values fixed on the command line, and its deletions (``~key``)."""
        for name, distribution in self.swept.items():
            suggest(trial, name, distribution)
        if self.space is not None:
            self.space(self.config, FixedAware(trial, self.fixed_values))
        return [f"{k}={v}" for k, v in [*trial.params.items(), *self.fixed.items()]] + list(self.deletions)

    def rejected(self, study, trial, folders: set) -> list[tuple[list[str], object]] | str:
        """Compose and check the trial's runs: their overrides and configs (``trial_runs``) if they may run; else
        the reason, and the trial is told failed with it (it makes no folder). ``folders``: the batch's, which must
        differ."""
        from optuna.trial import TrialState

        try:
            runs = self.trial_runs(trial, self.trial_overrides(trial))
            dirs = []
            for run, job in runs:
                folder = jobs.output_dir(job)
                jobs.check(job, run, folder, task=self.task_function)
                if folder in folders:
                    raise UserError(f"its folder {folder} is another trial's of this batch: hydra.sweep.subdir must "
                                    "tell trials apart")
                folders.add(folder)
                dirs.append(str(folder))
        except UserError as e:
            trial.set_user_attr(REJECTED, str(e))
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d rejected (told failed, no folder made): %s", trial.number, e)
            return str(e)
        if self.seeds_per_trial == 1:
            trial.set_user_attr(analysis.RUN_DIR, dirs[0])
        else:
            trial.set_user_attr(analysis.RUN_DIRS, dirs)
        return runs

    def trial_runs(self, trial, overrides) -> list[tuple[list[str], object]]:
        """The overrides and composed config of each of a trial's runs: one, or one per seed of ``seeds_per_trial``,
        each in ``<trial's folder>/seed=<seed>``; each carries its trial's number (``hydra.job.env_set``)."""
        link = [f"++hydra.job.env_set.{trial_lib.ENV}={trial.number}"]
        if self.seeds_per_trial == 1:
            run = list(overrides) + link
            return [(run, self.compose(run, trial.number))]
        trial_job = self.compose(list(overrides), trial.number)  # its seed is the first
        unseeded = [o for o in overrides if o.partition("=")[0].lstrip("+") != "seed"]
        # the trial's folder: its runs' folders less the seed (the same config where no seed is given)
        folder = jobs.subdir(trial_job if unseeded == list(overrides) else self.compose(unseeded, trial.number))
        runs = []
        for seed in range(trial_job.seed, trial_job.seed + self.seeds_per_trial):
            subdir = f"{folder}/seed={seed}".replace("'", "\\'")  # quoted for Hydra's override grammar
            run = unseeded + [f"seed={seed}", f"hydra.sweep.subdir='{subdir}'"] + link
            runs.append((run, self.compose(run, trial.number)))
        return runs

    def launch(self, batch) -> None:
        """Launch the batch's runs together (how each ended is in its records). A trial of one run is numbered
        by its trial (``hydra.job.num`` names its folder); the seeds of a trial have folders named for it."""
        runs = [run for _, trial_runs in batch for run, _ in trial_runs]
        configs = [job for _, trial_runs in batch for _, job in trial_runs]
        if batch and self.seeds_per_trial > 1:  # a batch the checks refused whole launches nothing
            stacked.launch(self.launcher, runs, batch[0][0].number * self.seeds_per_trial, configs)
            return
        start, numbers = 0, [trial.number for trial, _ in batch]
        for end in range(1, len(batch) + 1):
            if end == len(batch) or numbers[end] != numbers[end - 1] + 1:
                stacked.launch(self.launcher, runs[start:end], numbers[start], configs[start:end])
                start = end


class FixedAware:
    """A trial as a search space sees it: a parameter fixed on the command line returns its value (conditional
    branches follow it); one searched on the command line returns the trial's own suggestion."""

    def __init__(self, trial, fixed: dict):
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, name):
        attr = getattr(self._trial, name)
        if name not in ("suggest_float", "suggest_int", "suggest_categorical"):
            return attr

        def draw(param, *args, **kwargs):
            if param in self._fixed:
                return self._fixed[param]
            return self._trial.params[param] if param in self._trial.params else attr(param, *args, **kwargs)

        return draw


def same_study(study, base: dict, direction, seeds_per_trial: int = 1, objectives: list | None = None) -> None:
    """A study continues with the settings it started with: another objective, direction, budget, data or
    number of seeds per trial would rank incomparable values together. The first invocation records them."""
    had, has = len(study.directions), len(objectives or [None])
    if had != has:
        raise UserError(f"the study {study.study_name!r} has {_goals(had)}; this command has "
                        f"{_goals(has)} ({', '.join(objectives) if objectives else 'objective=' + base.get('objective', '?')}"
                        "): a study keeps its objectives. Use another hydra.sweeper.study_name, or the study's own "
                        "hydra.sweeper.objectives")
    own = [d.name.lower() for d in study.directions]  # a study made elsewhere (optuna create-study) has its own
    wanted = direction if isinstance(direction, list) else [direction]
    if own != wanted:
        goal = (f"objective is to {wanted[0]}" if len(wanted) == 1 else f"objectives are to {' and '.join(wanted)}")
        raise UserError(f"the study {study.study_name!r} was created to {' and '.join(own)}; this command's {goal}: "
                        f"use another hydra.sweeper.study_name, or a study created with "
                        f"--direction{'s' if len(wanted) > 1 else ''} {' '.join(wanted)}")
    signature = study.user_attrs.get(SIGNATURE)
    mine = dict(direction=direction, config=base)
    if objectives:
        mine["objectives"] = objectives
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
        own = next((k for k in ("objectives", "direction") if signature.get(k) != mine.get(k)), None)
        key = own or config_lib.first_difference(signature.get("config"), base)
        before = signature.get(own) if own else dotted.get(signature.get("config"), key)
        now = mine.get(own) if own else dotted.get(base, key)
        raise UserError(f"the study {study.study_name!r} was started with {key}={before!r}; this command has "
                        f"{now!r}: its trials would not compare. Use another hydra.sweeper.study_name, or the study's "
                        "own settings")


def _goals(n: int) -> str:
    return "one objective" if n == 1 else f"{n} objectives"


def adopt_orphans(study, storage, artifacts: Path | None = None, objectives: list | None = None) -> None:
    """Settle the RUNNING trials whose sweeper is gone: one whose runs finished is told its result (adopted); the
    others are marked failed and noted as cut off, so they are run again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(trial):
            continue
        result, value = tell(study, trial, storage, artifacts, objectives, unrecorded="interrupted")
        if result == "complete":
            log.warning("trial %d: its sweeper died after its runs finished; adopted with value %s", trial.number,
                        value)
        elif result == "cut":
            log.warning("trial %d was cut off (its sweeper process %s is gone): marked failed, run again",
                        trial.number, trial.user_attrs.get(PID))


def _orphaned(trial) -> bool:
    """Whether a RUNNING trial's sweeper is gone: a dead process on this host, or never tagged within the grace
    period (host and pid are two writes: a trial with one only may be a live sweeper's between the two)."""
    attrs = trial.user_attrs
    if HOST in attrs and PID in attrs:
        return attrs[HOST] == socket.gethostname() and not (isinstance(attrs[PID], int) and alive(attrs[PID]))
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > UNTAGGED_GRACE_S
