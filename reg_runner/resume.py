"""Continue a killed or interrupted run where its last checkpoint left it.

    python -m reg_runner.resume outputs/2026-11-22/18-40-01

The run continues in its own folder with its own resolved config, from ``checkpoints/last.pt``
(written every ``trainer.checkpoint_every`` epochs, and on SIGTERM / Ctrl-C). On CPU it ends with
the metrics.json an uninterrupted run would have written (all but ``timing``); history.csv and
TensorBoard hold each epoch once.
"""

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner.errors import UserError, exit_on_user_error


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reg_runner.resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the folder of the run to continue")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        config = args.run_dir / "resolved_config.yaml"
        if not config.is_file():
            raise UserError(f"{args.run_dir} is not a reg_runner run folder (no resolved_config.yaml); "
                            "give the folder of a run, e.g. outputs/<date>/<time>")
        cfg = OmegaConf.load(config)
        logging.basicConfig(
            level=logging.INFO,
            format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
            handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(args.run_dir / "reg_runner.log")],
        )
        from reg_runner.run import run  # torch is imported here, after the arguments are checked

        run(cfg, args.run_dir, resume=True)


if __name__ == "__main__":
    main()
