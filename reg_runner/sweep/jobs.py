"""A multirun job's config, composed as Hydra's launchers compose it, and checked before it runs."""

import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict, read_write

from reg_runner import checks
from reg_runner.errors import UserError, hydra_error
from reg_runner.private import hydra_config_of
from reg_runner.records import RunFolder
from reg_runner.signals import at_once, stop_if_signalled


def compose(config_loader, master, overrides, num: int, name: str | None = None):
    """The config the launcher will give job ``num`` (``hydra.job.num`` set, as launchers do); ``name``
    names the job in an error (default: its number and overrides)."""
    try:
        job = config_loader.load_sweep_config(master, list(overrides))
    except Exception as e:  # Hydra's own: an unknown group option, a key not in the config...
        raise UserError(f"{name or label(num, overrides)}: {hydra_error(e, overrides)}") from None
    return numbered(job, num)


def numbered(job, num: int):
    """``job`` as job ``num`` (``hydra.job.id`` and ``num``), as launchers number the jobs they compose."""
    with read_write(job.hydra), open_dict(job):  # a job whose folder was named has a read-only hydra node
        job.hydra.job.id = str(num)
        job.hydra.job.num = num
    return job


def output_dir(job) -> Path:
    """The job's folder: ``hydra.sweep.dir/hydra.sweep.subdir``, resolved as Hydra's run_job does."""
    with hydra_config_of(job):
        return Path(os.path.abspath(os.path.join(str(OmegaConf.select(job, "hydra.sweep.dir")), subdir(job))))


def subdir(job) -> str:
    """``hydra.sweep.subdir``, resolved: e.g. ``3_model.norm=batchnorm,seed=1``."""
    with hydra_config_of(job):  # the subdir interpolates ${hydra:...} values
        return str(OmegaConf.select(job, "hydra.sweep.subdir"))


def in_process(launcher) -> bool:
    """Whether a launcher (its config) runs the jobs in the sweeper's process, one after another: Hydra's basic one,
    the stacked one. There a job's task takes its check over from the sweeper."""
    return str(launcher.get("_target_", "")).rpartition(".")[2] in ("BasicLauncher", "StackedLauncher")


def check(job, overrides, folder: Path, task=None, passed: set | None = None) -> checks.Checked:
    """The job's config, every stage, and its folder (``output_dir(job)``): new, or empty (``passed``: as
    ``checks.carry_on``'s). ``task``: the command's task function (``reg_runner.cli.Task``): when the job's launcher
    runs it in this process, the job takes this check over from it (``task.expect``); in another process (joblib,
    submitit), the worker's task makes this same call, and nothing here would take the check back."""
    checked = checks.check(job, overrides, through=3)
    RunFolder(folder).refuse_existing("hydra.sweep.dir")
    checked = checks.carry_on(checked, passed=passed)  # the machine stage, once per setting of what it reads
    if task is not None and in_process(OmegaConf.select(job, "hydra.launcher") or {}):
        task.expect(folder, checked)
    return checked


def label(num: int, overrides) -> str:
    return f"job {num} ({' '.join(str(o) for o in overrides) or 'no overrides'})"


def varying(job_overrides) -> list[list[str]]:
    """Each job's overrides that differ between jobs (what names a job in a message)."""
    values: dict[str, set] = {}
    for overrides in job_overrides:
        for o in overrides:
            values.setdefault(str(o).partition("=")[0], set()).add(str(o))
    return [[o for o in overrides if len(values[str(o).partition("=")[0]]) > 1] for overrides in job_overrides]


def check_all(config_loader, master, job_overrides, task=None, keep: bool = False) -> list:
    """Every job's config composed and checked, before the first trains: one line for the first bad one
    (``task``: as ``check``'s). Nothing is started meanwhile: a signal ends the command at once. Returns the
    composed configs where ``keep`` (for a launcher that takes them: ``stacked.launch``), else none."""
    machine_passed, folders, composed = set(), {}, []
    names = varying(job_overrides)
    stop_if_signalled("checking the sweep's jobs")  # a signal that came before
    with at_once("while checking the sweep's jobs; nothing was started"):
        for num, overrides in enumerate(job_overrides):
            name = label(num, names[num])
            job = compose(config_loader, master, overrides, num, name)
            folder = output_dir(job)
            if folder in folders:
                raise UserError(f"{name} and job {folders[folder]} would share the folder {folder}: "
                                "hydra.sweep.subdir must tell the jobs apart")
            folders[folder] = num
            try:
                check(job, overrides, folder, task, machine_passed)
            except UserError as e:
                raise UserError(f"{name}: {e}") from None
            if keep:
                composed.append(job)
    return composed
