"""``python -m reg_runner [overrides]``: Hydra composes ``conf/config.yaml`` with the overrides, then one run."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf

from reg_runner.errors import exit_on_user_error
from reg_runner.sweeper import StudySweeper

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# What Hydra may instantiate from a config: our callbacks, Optuna's samplers and pruners.
TRUSTED = ("reg_runner.*", "optuna.samplers.*", "optuna.pruners.*")
MAX_NAME = 150  # characters of overrides in a run folder's name (file systems allow 255)


def run_name(num, overrides: str) -> str:
    """A multirun job's folder: its number, then its overrides, e.g. ``3_model.norm=batchnorm,seed=1``.

    TensorBoard names runs by folder, so runs of a sweep are told apart by what they changed.
    Slashes in values (``objective=val/loss``) would nest folders and become ``-``.
    """
    name = str(overrides).replace("/", "-").replace("\\", "-")
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME] + "..."
    return f"{num}_{name}" if name else str(num)


Plugins.instance().register(StudySweeper)  # Hydra instantiates only the sweepers it knows
# OmegaConf 2.4 renamed register_new_resolver; keep both working
getattr(OmegaConf, "register_resolver", OmegaConf.register_new_resolver)("run_name", run_name, replace=True)


@hydra.main(config_path=CONFIG_DIR, config_name="config", execution_whitelist=TRUSTED)
def main(cfg) -> float:
    from reg_runner.run import run  # torch is imported here, after Hydra has parsed the command line

    hc = HydraConfig.get()
    with exit_on_user_error():
        return run(cfg, Path(hc.runtime.output_dir), multirun=hc.mode == RunMode.MULTIRUN)
