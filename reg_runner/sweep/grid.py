"""The default multirun sweeper: Hydra's basic sweeper, checked first, failing one job at a time.

    python -m reg_runner --multirun model.norm=none,batchnorm,layernorm seed=0,1,2

It makes the same jobs as Hydra's basic sweeper (the product of the swept values), with two
differences: every job's config and folder is checked before the first job trains (a bad value in
job 5 stops the sweep before job 0 starts, with one line), and a job that fails records its failure
in its own folder while the others run on; the sweep then ends with a line naming the failed runs,
and exit code 1.
"""

import json
import logging
import sys
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from reg_runner.errors import exit_on_user_error
from reg_runner.sweep import jobs

log = logging.getLogger(__name__)


class GridSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]):
        params = [f"{k}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides(params), self.max_batch_size)
        all_jobs = [job for batch in batches for job in batch]
        with exit_on_user_error():
            jobs.check_all(self.hydra_context.config_loader, self.config, all_jobs)
        log.info("checked the configs and folders of %d jobs", len(all_jobs))

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, first = [], 0
        for batch in batches:
            results = self.launcher.launch(batch, initial_job_idx=first)
            first += len(batch)
            returns.append(results)
        failed = [ret for batch in returns for ret in batch if _failed(ret)]
        if failed:
            folders = ", ".join(str(ret.hydra_cfg.hydra.runtime.output_dir) for ret in failed[:5])
            print(f"{len(failed)} of {first} runs failed (each folder's metrics.json says why): {folders}"
                  f"{', ...' if len(failed) > 5 else ''}", file=sys.stderr, flush=True)
            for ret in failed:  # a failure that is not the user's (a bug) shows its traceback
                if ret.status.name == "FAILED":
                    _ = ret.return_value
            sys.exit(1)
        return returns


def _failed(ret) -> bool:
    """A job that raised, or whose run recorded ``failed``."""
    if ret.status.name == "FAILED":
        return True
    try:
        metrics = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "metrics.json"
        return json.loads(metrics.read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return True
