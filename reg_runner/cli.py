"""``python -m reg_runner [overrides]``: Hydra composes ``conf/config.yaml`` with the overrides, then one run."""

import io
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf

from reg_runner.errors import CONFIG_DIR, UserError, exit_on_user_error, one_line
from reg_runner.sweep import direction_of
from reg_runner.sweep.grid import GridSweeper
from reg_runner.sweep.stacked import StackedLauncher
from reg_runner.sweep.study import StudySweeper

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


for _plugin in (GridSweeper, StudySweeper, StackedLauncher):
    Plugins.instance().register(_plugin)  # Hydra instantiates only the sweepers and launchers it knows
# OmegaConf 2.4 renamed register_new_resolver; keep both working
_register = getattr(OmegaConf, "register_resolver", OmegaConf.register_new_resolver)
_register("run_name", run_name, replace=True)
_register("sweep_direction", direction_of, replace=True)  # a search's direction follows the objective


@hydra.main(config_path=CONFIG_DIR, config_name="config", execution_whitelist=TRUSTED)
def main(cfg) -> float:
    import torch

    from reg_runner.config import plain_overrides, take_over
    from reg_runner.run import run  # torch is imported here, after Hydra has parsed the command line
    from reg_runner.sweep import joblib_workers

    release_stderr()
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
        print(f"error: job {hc.job.num}: {e}", file=sys.stderr, flush=True)
        return math.nan


# Hydra reports a mistake in the command line (unknown group option, misspelled key) on several
# lines, from its own code, before any of ours runs. Its stderr is held until Hydra hands over (our
# callback or task calls ``release_stderr``); if Hydra exits first, its message becomes one line.
_held: dict = {}


def release_stderr() -> None:
    real = _held.pop("real", None)
    if real is not None:
        held, sys.stderr = sys.stderr, real
        real.write(held.getvalue())


def entry(task=None) -> None:
    """The command line: ``python -m reg_runner``, ``reg-runner`` (``task``: another Hydra main of this
    config tree, e.g. ``reg_runner.lr_find``'s)."""
    task = task or main
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return task()
    _held["real"] = sys.stderr
    sys.stderr = io.StringIO()
    try:
        task()
    except SystemExit as e:
        if "real" in _held and e.code not in (0, None):  # Hydra stopped before handing over
            text = sys.stderr.getvalue()
            sys.stderr = _held.pop("real")
            print(f"error: {one_line(text)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise
    except ValueError as e:  # Hydra's own argument rules (--multirun with --cfg...), before handing over
        if "real" not in _held:
            raise
        sys.stderr = _held.pop("real")
        print(f"error: {one_line(str(e))}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        release_stderr()
