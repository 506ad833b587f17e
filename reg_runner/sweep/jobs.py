"""A multirun job's config, composed as Hydra's launchers compose it, and checked before it runs."""

import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict

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
    with open_dict(job):
        job.hydra.job.id = str(num)
        job.hydra.job.num = num
    return job


def output_dir(job) -> Path:
    """The job's folder: ``hydra.sweep.dir/hydra.sweep.subdir``, resolved as Hydra's run_job does."""
    return Path(os.path.abspath(os.path.join(_resolved(job, "hydra.sweep.dir"), subdir(job))))


def subdir(job) -> str:
    """``hydra.sweep.subdir``, resolved: e.g. ``3_model.norm=batchnorm,seed=1``."""
    return _resolved(job, "hydra.sweep.subdir")


def _resolved(job, key: str) -> str:
    with hydra_config_of(job):  # the subdir interpolates ${hydra:...} values
        return str(OmegaConf.select(job, key))


def in_process(launcher) -> bool:
    """Whether a launcher (its config) runs the jobs in the sweeper's process, one after another: Hydra's basic one,
    the stacked one. There a job's task takes its check over from the sweeper."""
    return str(launcher.get("_target_", "")).rpartition(".")[2] in ("BasicLauncher", "StackedLauncher")


def check(job, overrides, through: int = 4, task=None) -> checks.Checked:
    """The job's config, every stage, and its folder: new, or empty. ``task``: the command's task function
    (``reg_runner.cli.Task``, a sweeper's ``task_function``): when the job's launcher runs it in this process, the
    job takes this check over from it instead of repeating it; in another process (joblib, submitit), the
    worker's task makes this same call, ``checks.check``."""
    checked = checks.check(job, overrides, through=through)
    RunFolder(output_dir(job)).refuse_existing("hydra.sweep.dir")
    hand_over_if_here(checked, job, task)
    return checked


def hand_over_if_here(checked: checks.Checked, job, task) -> None:
    """``task.expect`` the job's check, if the job's launcher runs it in this process (else nothing would take it
    back, and the task would be sent to other processes with it)."""
    if task is not None and in_process(OmegaConf.select(job, "hydra.launcher") or {}):
        task.expect(output_dir(job), checked)


def label(num: int, overrides) -> str:
    return f"job {num} ({' '.join(str(o) for o in overrides) or 'no overrides'})"


def varying(job_overrides) -> list[list[str]]:
    """Each job's overrides that differ between jobs (what names a job in a message)."""
    values: dict[str, set] = {}
    for overrides in job_overrides:
        for o in overrides:
            values.setdefault(str(o).partition("=")[0], set()).add(str(o))
    return [[o for o in overrides if len(values[str(o).partition("=")[0]]) > 1] for overrides in job_overrides]


def check_all(config_loader, master, job_overrides, first_num: int = 0, task=None) -> list:
    """Every job's config composed and checked, before the first trains: one line for the first bad one
    (``task``: as ``check``'s). Nothing is started meanwhile: a signal ends the command at once."""
    checked, machine_passed, folders = [], set(), {}
    names = varying(job_overrides)
    stop_if_signalled("checking the sweep's jobs")  # a signal that came before
    with at_once("while checking the sweep's jobs; nothing was started"):
        for i, overrides in enumerate(job_overrides):
            job = compose(config_loader, master, overrides, first_num + i, label(first_num + i, names[i]))
            folder = output_dir(job)
            if folder in folders:
                raise UserError(f"{label(first_num + i, names[i])} and job {folders[folder]} would share the folder "
                                f"{folder}: hydra.sweep.subdir must tell the jobs apart")
            folders[folder] = first_num + i
            try:
                c = check(job, overrides, through=3)
                # the machine stage (torch's device, the optimizer class) once per distinct setting of what it reads
                c = checks.carry_on(c, passed=machine_passed)
            except UserError as e:
                raise UserError(f"{label(first_num + i, names[i])}: {e}") from None
            hand_over_if_here(c, job, task)
            checked.append((job, c))
    return checked
