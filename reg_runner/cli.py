"""``python -m reg_runner [overrides]``: Hydra composes ``conf/config.yaml`` with the overrides, then one run."""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from reg_runner.errors import EXIT_USER_ERROR, UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config")
def main(cfg) -> float:
    from reg_runner.run import run  # torch is imported here, after Hydra has parsed the command line

    hc = HydraConfig.get()
    try:
        return run(cfg, Path(hc.runtime.output_dir), multirun=hc.mode == RunMode.MULTIRUN)
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
