"""The default multirun sweeper (``python -m reg_runner --multirun model.norm=none,batchnorm seed=0,1,2``): the
same jobs as Hydra's basic sweeper (the product of the swept values), every job checked before the first trains and
a failed job failing alone (docs/runs.md, "What is checked before anything runs"; docs/reliability.md, "Failures").
"""

import itertools
import logging
import math
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from reg_runner import kinds
from reg_runner.errors import UserError, exit_on_user_error, hydra_error
from reg_runner.records import RunFolder, make_folder
from reg_runner.sweep.settings import flat_params, labels_not_swept
from reg_runner.sweep.workers import launch_with_signals
from reg_runner.sweep import jobs, stacked

log = logging.getLogger(__name__)
MAX_JOBS = 10_000  # a grid larger than this is a typo (range(0,1000000000)), not a plan: each job is checked first


class GridSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict | None = None):
        self.max_batch_size, self.params = max_batch_size, flat_params(params) or {}

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def sweep(self, arguments: list[str]):
        with exit_on_user_error():
            batches = self.batches(arguments)
            all_jobs = [job for batch in batches for job in batch]
            # the stacked launcher takes the configs composed here where the grid is one batch, which it would hold
            # anyway (about 180 KB each); batch by batch, it composes its own
            keep = isinstance(self.launcher, stacked.StackedLauncher) and len(batches) == 1
            composed = jobs.check_all(self.hydra_context.config_loader, self.config, all_jobs, task=self.task_function,
                                      keep=keep)
            log.info("checked the configs and folders of %d jobs", len(all_jobs))
            sweep_dir = Path(self.config.hydra.sweep.dir)
            make_folder("hydra.sweep.dir", sweep_dir)
        if not kinds.marker(sweep_dir):
            kinds.mark(sweep_dir, kinds.SWEEP)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, first = [], 0
        for batch in batches:
            configs = composed[first:first + len(batch)]
            returns.append(launch_with_signals(self.config, lambda: stacked.launch(self.launcher, batch, first, configs),
                                               "runs trained", "each stopped with a checkpoint (resume it), or before "
                                               "it started"))
            first += len(batch)
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

    def batches(self, arguments: list[str]) -> list:
        """The jobs, as Hydra's basic sweeper makes them; one line for a sweep it cannot make."""
        params = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        try:
            overrides = parser.parse_overrides(params)
            sizes = {}
            for o in overrides:
                if o.is_sweep_override():
                    labels_not_swept(o.get_key_element(), o.input_line)
                if o.is_sweep_override() and o.is_discrete_sweep():
                    values = list(itertools.islice(o.sweep_string_iterator(), MAX_JOBS + 1))
                    if not values:
                        raise UserError(f"{o.input_line} sweeps no value: the sweep would make no job")
                    twice = sorted({v for v in values if values.count(v) > 1})
                    if twice and len(values) <= MAX_JOBS:
                        raise UserError(f"{o.input_line} lists {', '.join(twice)} more than once: each value once "
                                        "(seeds are what repeat a run)")
                    sizes[o.get_key_element()] = len(values)
            if math.prod(sizes.values()) > MAX_JOBS:
                raise UserError(f"the sweep makes more than {MAX_JOBS:,} jobs "
                                f"({' x '.join(f'{k}: {n:,}' for k, n in sizes.items())}); check its ranges, or split it")
            return product(overrides, self.max_batch_size)
        except UserError:
            raise
        except Exception as e:  # Hydra's: a range with step 0, an interval the basic sweeper cannot enumerate...
            raise UserError(f"the sweep cannot be made: {hydra_error(e)} (the basic sweeper takes lists a,b,c, "
                            "range() and choice(); intervals need an Optuna search)") from None


def product(overrides, max_batch_size: int | None = None) -> list[list[list[str]]]:
    """The jobs of a grid, in batches of at most ``max_batch_size`` (None: one batch): the product of
    the swept values, the first key varying slowest; a key given twice keeps its first place and its last value. The
    same jobs, in the same order, as Hydra's basic sweeper makes (tests/test_private.py compares them)."""
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{o.input_line} is an {o.value_type.name.lower().removesuffix('_sweep')}, which a grid "
                                 "cannot list")
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
    jobs_ = [list(job) for job in itertools.product(*values.values())]
    if max_batch_size is None:
        return [jobs_]
    return [jobs_[i:i + max_batch_size] for i in range(0, len(jobs_), max_batch_size)]


def _failed(ret) -> bool:
    """A job that raised, or whose run recorded ``failed`` (or no record that can be read)."""
    if ret.status.name == "FAILED":
        return True
    record = RunFolder(Path(ret.hydra_cfg.hydra.runtime.output_dir)).recorded()  # Hydra's run_job sets hydra_cfg
    return record is None or record.get("status") in ("failed", "unreadable")
