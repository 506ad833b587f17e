"""``python -m reg_runner [overrides]``: Hydra composes ``conf/config.yaml`` with the overrides, then one run."""

import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from reg_runner.errors import CONFIG_DIR, UserError, exit_on_user_error, hydra_error, one_line, options, refuse
from reg_runner.signals import stop_if_signalled

# What Hydra may instantiate from a config: our callbacks, Optuna's samplers and pruners.
TRUSTED = ("reg_runner.*", "optuna.samplers.*", "optuna.pruners.*")
MAX_NAME = 150  # characters of overrides in a run folder's name (file systems allow 255)


def run_name(num, overrides: str) -> str:
    """A multirun job's folder: its number, then its overrides, e.g. ``4_model.norm=batchnorm,seed=1`` (job 4 of
    ``model.norm=none,batchnorm,layernorm seed=0,1,2``).

    TensorBoard names runs by folder, so runs of a sweep are told apart by what they changed.
    Slashes in values (``objective=val/loss``) would nest folders and become ``-``.
    """
    name = str(overrides).replace("/", "-").replace("\\", "-")
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME] + "..."
    return f"{num}_{name}" if name else str(num)


def sweep_plugins() -> None:
    """Make reg_runner's sweepers and launcher known to Hydra, which instantiates only the plugins it knows. Called
    by the multirun callback, which Hydra runs before it makes the sweeper: a single run, or a command refused,
    never imports what only a sweep needs."""
    from hydra.core.plugins import Plugins

    from reg_runner.sweep.grid import GridSweeper
    from reg_runner.sweep.stacked import StackedLauncher
    from reg_runner.sweep.study import StudySweeper

    for plugin in (GridSweeper, StudySweeper, StackedLauncher):
        Plugins.instance().register(plugin)


def sweep_direction(objective: str) -> str:
    """A search's direction follows its objective (``${sweep_direction:...}`` in a sweeper's config); the sweep
    package is imported only when a sweep resolves it."""
    from reg_runner.sweep import direction_of

    return direction_of(objective)


def folder_name_excludes() -> list[str]:
    """Hydra's ``override_dirname.exclude_keys`` (``${folder_name_excludes:}``): what a multirun job's folder name
    leaves out, from the schemas' declarations. The schemas (pydantic) are imported when a job resolves it: a
    command that Hydra refuses before (a misspelled key, an unknown option) never imports them (about 0.1 s;
    benchmarks/refusal.py)."""
    from reg_runner.config import KEYS

    return KEYS.folder_name_excludes()


# OmegaConf 2.4 renamed register_new_resolver; keep both working
_register = getattr(OmegaConf, "register_resolver", OmegaConf.register_new_resolver)
_register("run_name", run_name, replace=True)
_register("sweep_direction", sweep_direction, replace=True)
_register("folder_name_excludes", folder_name_excludes, replace=True)  # what a job's folder name leaves out
_register("options", lambda group: ", ".join(options(group)), replace=True)  # a group's options, in help texts


@hydra.main(config_path=CONFIG_DIR, config_name="config", execution_whitelist=TRUSTED)
def main(cfg) -> float:
    import torch

    from reg_runner.config import plain_overrides, take_over
    from reg_runner.run import run  # torch is imported here, after Hydra has parsed the command line
    from reg_runner.sweep.workers import joblib_workers

    handed_over()
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    workers = joblib_workers(hc.launcher) if multirun else None
    if workers:  # runs side by side share the cores: oversubscribed threads slow small batches 18-33x
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    overrides = plain_overrides(hc.overrides.task)
    # the check made of this config before Hydra made the folder (the callback's, or the sweeper's in this process)
    if not multirun:
        with exit_on_user_error():
            return run(cfg, Path(hc.runtime.output_dir), overrides=overrides, checked=take_over(cfg, overrides))
    from reg_runner.sweep.trial import from_process

    try:
        return run(cfg, Path(hc.runtime.output_dir), multirun=True, overrides=overrides, trial=from_process(hc),
                   checked=take_over(cfg, overrides))
    except UserError as e:  # this job fails alone, recorded in its folder; the sweep goes on
        print(f"error: job {hc.job.num}: {one_line(e)}", file=sys.stderr, flush=True)
        return math.nan


# Hydra reports a mistake in the command line (an unknown group option, a misspelled key, an override its grammar
# cannot read) from its own code, before any of ours runs, as several lines and exit 1. Its documented switch
# HYDRA_FULL_ERROR=1 makes it raise the exception instead; ``entry`` sets it until Hydra hands over (our callback
# or task calls ``handed_over``, which puts the user's own setting back) and turns the exception into one line.
_held: dict = {}


def handed_over() -> None:
    """Hydra has composed the config and runs our code: its errors from now on are reported its own way."""
    if "full_error" in _held:
        previous = _held.pop("full_error")
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def entry(task=None) -> None:
    """The command line: ``python -m reg_runner``, ``reg-runner`` (``task``: another Hydra main of this
    config tree, e.g. ``reg_runner.lr_find``'s)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from reg_runner.private import hydra_arguments_refused

    task = task or main
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's tracebacks
        return task()
    refused = hydra_arguments_refused(sys.argv[1:])  # Hydra's own would print its usage, then the message
    if refused:
        refuse(refused)
    _held["full_error"] = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        task()
    # Hydra's own argument rules (--multirun with --cfg...) are ValueErrors; any other exception is a bug of ours
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        if "full_error" not in _held:  # raised after Hydra handed over: not a command-line mistake
            raise
        handed_over()
        refuse(hydra_error(e, sys.argv[1:]))
    finally:
        handed_over()
    # a signal after the last epoch's check (its records, Hydra's end of a multirun) was only recorded
    stop_if_signalled("the command ended", "every run had recorded its end")
