"""``python -m reg_runner [overrides]``: the command line (``entry``), Hydra's callback that checks a run and
locks its folder before Hydra makes it (``EarlyChecks``), and the task Hydra runs (``Task``: ``run.run_stack``).
The whole path from the command to the loop: README.md, "Reading the code"."""

import gc
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reg_runner import kinds
from reg_runner.errors import CONFIG_DIR, UserError, exit_on_user_error, hydra_error, one_line, options, refuse
from reg_runner.overrides import hydra_overrides, plain_overrides
from reg_runner.private import hydra_arguments_refused
from reg_runner.signals import STOP, deferred, hand_back
from reg_runner.sweep.workers import joblib_workers

# What Hydra may instantiate from a config: our callbacks, Optuna's samplers and pruners.
TRUSTED = ("reg_runner.*", "optuna.samplers.*", "optuna.pruners.*")
MAX_NAME = 150  # characters of overrides in a run folder's name (file systems allow 255)


def run_name(num, overrides: str) -> str:
    """A multirun job's folder: its number, then its overrides (``4_model.norm=batchnorm,seed=1``), since
    TensorBoard names runs by folder. A slash in a value (``objective=val/loss``) becomes ``-``, not a folder."""
    name = str(overrides).replace("/", "-").replace("\\", "-")
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME] + "..."
    return f"{num}_{name}" if name else str(num)


def sweep_direction(objective: str, objectives=None):
    """A search's direction(s), from its objective(s) (``${sweep_direction:...}``, resolved only by a sweep)."""
    from reg_runner.sweep.objectives import direction_of

    if isinstance(objectives, (list, tuple, ListConfig)) and len(objectives) > 1:
        return [direction_of(str(o)) for o in objectives]
    return direction_of(objective)


def folder_name_excludes() -> list[str]:
    """Hydra's ``override_dirname.exclude_keys`` (``${folder_name_excludes:}``): what a job's folder name leaves
    out, from the schemas, imported only when a job resolves it (a command Hydra refuses never loads them)."""
    from reg_runner.config import KEYS
    from reg_runner.keys import FOLDER_NAMES

    return list(KEYS.left_out_of(FOLDER_NAMES))


OmegaConf.register_resolver("run_name", run_name, replace=True)
OmegaConf.register_resolver("sweep_direction", sweep_direction, replace=True)
OmegaConf.register_resolver("folder_name_excludes", folder_name_excludes, replace=True)
OmegaConf.register_resolver("options", lambda group: ", ".join(options(group)), replace=True)  # in help texts


class EarlyChecks(Callback):
    """Hydra's callback: a run, or a whole multirun, checked before Hydra makes any folder. A single run's check
    and locked folder go to the ``Task`` (``on_job_start``), which runs without checking again."""

    kind = kinds.RUN  # what the folder it makes holds

    def __init__(self):
        self.ready: tuple | None = None  # (folder path, check, locked RunFolder) for the job Hydra runs next
        self.folder = None  # the run's folder (``reg_runner.records.RunFolder``), locked until the run ends

    def check_config(self, config, overrides):  # the range test's callback checks its own way
        from reg_runner import checks

        return checks.check(config, overrides)

    def on_job_start(self, config, *, task_function, **kwargs) -> None:
        if self.ready is not None and isinstance(task_function, Task):
            task_function.expect(*self.ready)
        self.ready = None

    def on_run_end(self, config, **kwargs) -> None:
        if self.folder is not None:
            self.folder.unlock()

    def on_run_start(self, config, **kwargs) -> None:
        from reg_runner import config as config_lib
        from reg_runner.records import RunFolder, folder_to_make, make_folder

        handed_over()  # Hydra has composed the config: its own errors are behind us
        STOP.install(starting=True)  # from before the folder exists: a signal during start-up ends it at once
        with exit_on_user_error(in_callback=True):
            config_lib.check_job_name(config.hydra)
            hydra_overrides(config.hydra.overrides.hydra, multirun=False)
            run_dir = folder_to_make("hydra.run.dir", config.hydra.run.dir)
            checked = self.check_config(config, config.hydra.overrides.task)
            gc.enable()  # the checks passed: the run begins (``reg_runner.__main__`` turned the collector off)
            folder = RunFolder(run_dir)
            folder.refuse_existing(kind=self.kind)  # before any write: a finished run's folder is left as it is
            # made, locked before Hydra writes .hydra/ (checked again under it) and known as the run's in one step, a
            # signal held meanwhile: a signal during start-up removes all of it, and the folders made above while empty
            with deferred():
                if make_folder("hydra.run.dir", run_dir, into=STOP.parents):
                    STOP.made.append(STOP.parents.pop())  # the run's own folder, the last one made
                try:
                    folder.lock(then=lambda: folder.refuse_existing(kind=self.kind), key="hydra.run.dir")
                except UserError:  # another process holds it: not this one's to remove
                    STOP.made[:] = [f for f in STOP.made if f != run_dir]
                    raise
            if not kinds.marker(run_dir):
                kinds.mark(run_dir, self.kind)
            self.ready, self.folder = (run_dir, checked, folder), folder

    def on_multirun_start(self, config, **kwargs) -> None:
        from reg_runner.records import folder_to_make
        from reg_runner.sweep.settings import check_multirun

        handed_over()
        STOP.install()
        # Hydra makes the sweeper next, and instantiates only the plugins it knows: made known here, so that a single
        # run, or a command refused, never imports what only a sweep needs (imported once the run holds the signals:
        # they import torch, a second or more)
        from reg_runner.sweep.grid import GridSweeper
        from reg_runner.sweep.stacked import StackedLauncher
        from reg_runner.sweep.study import StudySweeper

        for plugin in (GridSweeper, StudySweeper, StackedLauncher):
            Plugins.instance().register(plugin)
        with exit_on_user_error(in_callback=True):
            hydra_overrides(config.hydra.overrides.hydra, multirun=True)
            sweep_dir = folder_to_make("hydra.sweep.dir", config.hydra.sweep.dir)
            kind = kinds.kind_of(sweep_dir)
            if kind not in (None, kinds.SWEEP):  # a sweep's runs would be made inside a run, a range test...
                raise UserError(f"hydra.sweep.dir={str(sweep_dir)!r} is {kinds.WHAT[kind]}; choose another "
                                "hydra.sweep.dir")
            check_multirun(config)
        gc.enable()  # the checks passed: the sweep begins (``reg_runner.__main__`` turned the collector off)


class Task:
    """The task function Hydra runs for each job: what checked a job before Hydra made its folder (``EarlyChecks``,
    a sweeper) ``expect``s it, the job ``take``s it by its folder; a job that arrives unchecked is checked whole."""

    def __init__(self):
        self.waiting: dict[str, tuple] = {}  # a job's folder -> (its ``checks.Checked``, its locked RunFolder or None)

    def expect(self, run_dir, checked, folder=None) -> None:
        """Keep ``checked`` (and the ``records.RunFolder`` locked for it) for the job that runs in ``run_dir``."""
        self.waiting[os.path.abspath(run_dir)] = (checked, folder)

    def take(self, run_dir) -> tuple:
        """The check (and locked folder) kept for the job in ``run_dir``, no longer kept; or ``(None, None)``."""
        return self.waiting.pop(os.path.abspath(run_dir), (None, None))

    def __call__(self, cfg) -> float:
        import torch

        from reg_runner.run import Job, run_stack  # torch is imported here, after Hydra has parsed the command line
        from reg_runner.trainer.trial import link

        handed_over()
        gc.enable()  # for a job that reached here unchecked (no EarlyChecks among hydra.callbacks)
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        workers = joblib_workers(hc.launcher) if multirun else None
        if workers:  # runs side by side share the cores: oversubscribed threads slow small batches 18-33x
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        run_dir = Path(hc.runtime.output_dir)
        checked, folder = self.take(run_dir)
        job = Job(cfg, run_dir, tuple(plain_overrides(hc.overrides.task)), checked=checked, folder=folder,
                  trial=link(hc, dict(os.environ)) if multirun else None)
        if not multirun:
            with exit_on_user_error():
                return run_stack([job])[0]
        try:
            return run_stack([job], multirun=True)[0]
        except UserError as e:  # this job fails alone, recorded in its folder; the sweep goes on
            print(f"error: job {hc.job.num}: {one_line(e)}", file=sys.stderr, flush=True)
            return math.nan


def main() -> None:
    """``python -m reg_runner``: Hydra composes the config from the command line and runs a ``Task``."""
    hydra.main(config_path=CONFIG_DIR, config_name="config", execution_whitelist=TRUSTED)(Task())()


# Hydra says a mistake in the command line in several lines, exit 1; HYDRA_FULL_ERROR=1 raises it instead: ``entry``
# sets it (the user's own setting kept here) until Hydra hands over, and says what is raised before then in one line.
USER_FULL_ERROR = "REG_RUNNER_USER_HYDRA_FULL_ERROR"


def handed_over() -> None:
    """Hydra has composed the config and runs our code: the user's HYDRA_FULL_ERROR is back."""
    if USER_FULL_ERROR in os.environ:
        previous = os.environ.pop(USER_FULL_ERROR)
        if previous:
            os.environ["HYDRA_FULL_ERROR"] = previous
        else:  # unset, or empty: the same to Hydra
            os.environ.pop("HYDRA_FULL_ERROR", None)


def entry(task=None) -> None:
    """The command line (``task``: another Hydra main of this config tree, e.g. ``reg_runner.lr_find``'s)."""
    task = task or main
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's tracebacks
        return task()
    if refused := hydra_arguments_refused(sys.argv[1:]):  # Hydra's own would print its usage, then the message
        refuse(refused)
    os.environ[USER_FULL_ERROR] = os.environ.get("HYDRA_FULL_ERROR", "")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        task()
    # Hydra's own argument rules (--multirun with --cfg...) are ValueErrors; any other exception is a bug of ours
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        if USER_FULL_ERROR not in os.environ:  # raised after Hydra handed over: not a command-line mistake
            raise
        refuse(hydra_error(e, sys.argv[1:]))
    finally:
        handed_over()
    # a signal after the last epoch's check (its records, Hydra's end of a multirun) was only recorded
    hand_back("the command ended", "every run had recorded its end")

