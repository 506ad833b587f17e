"""``python -m reg_runner [overrides]``: Hydra composes ``conf/config.yaml`` with the overrides, then one run."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from reg_runner.errors import exit_on_user_error

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# What Hydra may instantiate from a config: our callbacks, Optuna's samplers and pruners.
TRUSTED = ("reg_runner.*", "optuna.samplers.*", "optuna.pruners.*")


@hydra.main(config_path=CONFIG_DIR, config_name="config", execution_whitelist=TRUSTED)
def main(cfg) -> float:
    from reg_runner.run import run  # torch is imported here, after Hydra has parsed the command line

    hc = HydraConfig.get()
    with exit_on_user_error():
        return run(cfg, Path(hc.runtime.output_dir), multirun=hc.mode == RunMode.MULTIRUN)
