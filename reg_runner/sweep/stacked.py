"""``hydra/launcher=stacked``: the jobs of a multirun train as stacks, many runs in one model (docs/stacking.md).

The launcher receives a batch of jobs from any sweeper (a grid's jobs, a study's ``n_jobs`` trials), composed as
Hydra's launchers compose them (reg_runner's sweepers hand over theirs), and stacks the jobs that share their
structure (``reg_runner.keys.structural_keys``), at most ``max_members`` runs each. Each job gets the folder Hydra
would have made (with ``.hydra/``) and, in it, exactly the records a lone run writes.
"""

import copy
import logging
import math
import os
import sys

from hydra.core.utils import JobReturn, JobStatus, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict, read_write

from reg_runner import checks, exactness, keys
from reg_runner.errors import UserError
from reg_runner.sweep import jobs as jobs_lib
from reg_runner.trainer import trial as trial_lib

log = logging.getLogger(__name__)


class StackedLauncher(Launcher):
    def __init__(self, max_members: int = 64, only_if_faster: bool = True):
        self.max_members, self.only_if_faster = max_members, only_if_faster

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides, initial_job_idx: int, composed: list | None = None) -> list[JobReturn]:
        """``composed``: the jobs' configs as one of reg_runner's sweepers composed them to check them (``launch``
        below); else each is composed here, as Hydra's launchers do."""
        from reg_runner.run import Job, run_stack

        setup_globals()
        jobs = []
        for i, overrides in enumerate(job_overrides):
            exactness.poll()  # a signal while the jobs are composed: the launch stops, no run's folder made
            num = initial_job_idx + i
            cfg = (jobs_lib.numbered(composed[i], num) if composed else
                   jobs_lib.compose(self.hydra_context.config_loader, self.config, overrides, num))
            out = jobs_lib.output_dir(cfg)
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                cfg.hydra.runtime.output_dir = str(out)
            try:  # the sweeper's check of this job, when it made one in this process (ours do); else checked here
                checked = self.task_function.take(out)[0] or checks.check(cfg, overrides, through=3)
            except UserError as e:
                raise UserError(f"{jobs_lib.label(num, overrides)}: {e}") from None
            jobs.append(dict(num=num, overrides=list(overrides), cfg=cfg, out=out, structure=keys.structural_values(checked.cfg),
                             trial=trial_lib.link(cfg.hydra), checked=checked))
        grouped = group(jobs, self.max_members)
        for stack in grouped:  # each member's memory, before the check builds a stack of them
            checks.stack_fits([j["checked"] for j in stack], self.max_members)
        stacks = exact(grouped, self.only_if_faster)
        exactness.poll()
        log.info("stacked launcher: %d jobs in %d stacks (at most %d runs each)", len(jobs), len(stacks),
                 self.max_members)
        for i, stack in enumerate(stacks):
            log.info("  stack %d: jobs %s", i + 1, ", ".join(str(j["num"]) for j in stack))
        returns = {}
        for i, stack in enumerate(stacks):
            handlers = [self._prepare(j) for j in stack]
            try:
                values = run_stack([Job(j["cfg"], j["out"], tuple(j["overrides"]), j["trial"], j["checked"])
                                    for j in stack], multirun=True)
                failure = None
            except UserError as e:  # every run of the stack failed alone, recorded in its folder; the sweep goes on
                print(f"error: stack {i + 1} (jobs {', '.join(str(j['num']) for j in stack)}): {e}", file=sys.stderr,
                      flush=True)
                values, failure = [math.nan] * len(stack), None
            except Exception as e:  # a bug: each job reports it
                values, failure = [None] * len(stack), e
            finally:
                for handler in handlers:
                    logging.getLogger().removeHandler(handler)
                    handler.close()
            for j, value in zip(stack, values):  # as Hydra's run_job returns a job's
                ret = JobReturn(overrides=j["overrides"], cfg=_task_config(j["cfg"]), hydra_cfg=_hydra_config(j["cfg"]),
                                working_dir=os.getcwd(), task_name=j["cfg"].hydra.job.name,
                                status=JobStatus.COMPLETED if failure is None else JobStatus.FAILED)
                ret.return_value = value if failure is None else failure
                returns[j["num"]] = ret
        return [returns[j["num"]] for j in jobs]

    def _prepare(self, job) -> logging.Handler:
        """The job's folder as Hydra's run_job makes it: ``.hydra/`` and a log file."""
        cfg, out = job["cfg"], job["out"]
        out.mkdir(parents=True, exist_ok=True)
        if cfg.hydra.output_subdir is not None:
            hydra_dir = out / str(cfg.hydra.output_subdir)
            hydra_dir.mkdir(parents=True, exist_ok=True)  # the files Hydra's run_job writes, byte for byte
            OmegaConf.save(_task_config(cfg), hydra_dir / "config.yaml")
            OmegaConf.save(_hydra_config(cfg), hydra_dir / "hydra.yaml")
            OmegaConf.save(cfg.hydra.overrides.task, hydra_dir / "overrides.yaml")
        handler = logging.FileHandler(out / f"{cfg.hydra.job.name}.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
        return handler


def launch(launcher, job_overrides, initial_job_idx: int, composed: list) -> list[JobReturn]:
    """``launcher.launch``; this module's launcher takes the configs the sweeper composed to check the jobs
    (composing a job again costs about 0.1 s of CPU: more than a tiny run trains)."""
    if isinstance(launcher, StackedLauncher):
        return launcher.launch(job_overrides, initial_job_idx, composed)
    return launcher.launch(job_overrides, initial_job_idx=initial_job_idx)


def group(jobs: list[dict], max_members: int) -> list[list[dict]]:
    """Jobs with equal structures, in order of first appearance, in stacks of at most ``max_members``;
    the runs of one Optuna trial (its seeds) stay in one stack, where the pruner sees their mean."""
    by_structure: dict = {}
    for job in jobs:
        trial = job["trial"]
        units = by_structure.setdefault(job["structure"], {})
        units.setdefault(("trial", trial.number) if trial is not None else ("job", job["num"]), []).append(job)
    stacks = []
    for units in by_structure.values():
        stack: list[dict] = []
        for unit in units.values():
            if stack and len(stack) + len(unit) > max_members:
                stacks.append(stack)
                stack = []
            stack += unit
        stacks.append(stack)
    return stacks


def exact(stacks: list[list[dict]], only_if_faster: bool = True) -> list[list[dict]]:
    """The stacks, less those that would not pay here or whose members would not each get their lone run's numbers
    to the bit (``exactness.verdict``): their runs train one at a time, and the log says why. A trial's seeds that a
    pruner watches stay together (it ranks their mean); the log says where they may then differ by rounding."""
    out = []
    for stack in stacks:
        why, exact_here = exactness.verdict(stack[0]["checked"], len(stack), only_if_faster)
        if why is None:
            out.append(stack)
            continue
        units: dict = {}
        for job in stack:
            together = job["trial"] is not None and job["trial"].prunes
            units.setdefault(("trial", job["trial"].number) if together else ("job", job["num"]), []).append(job)
        if lone := [job for unit in units.values() if len(unit) == 1 for job in unit]:
            log.warning("jobs %s train one at a time, not as a stack: %s", ", ".join(str(j["num"]) for j in lone), why)
        for unit in units.values():
            if len(unit) > 1:
                rounding = not exact_here and exactness.for_runs(unit[0]["checked"], len(unit)) is not None
                log.log(logging.WARNING if rounding else logging.INFO, "jobs %s (the seeds of trial %d) train as one "
                        "stack, for the pruner to see their mean%s", ", ".join(str(j["num"]) for j in unit),
                        unit[0]["trial"].number, ": each may differ from its lone run by rounding" if rounding else "")
            out.append(unit)
    return out


def _task_config(cfg):
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _hydra_config(cfg):
    return OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra, resolve=False)})
