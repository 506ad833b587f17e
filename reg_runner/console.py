"""How the command's console names who speaks: Hydra's lines tagged ``[HYDRA]``, reg_runner's as a run's log has
them (``RUN_FORMAT``), wherever they are written (conf/config.yaml makes this Hydra's console formatter: the
sweepers and the stacked launcher log in Hydra's process)."""

import logging

RUN_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job_logging format


class Tagged(logging.Formatter):
    """``format`` (Hydra's) for Hydra's own records, ``RUN_FORMAT`` for reg_runner's."""

    def __init__(self, format: str = "[%(asctime)s][HYDRA] %(message)s", **kwargs):
        super().__init__(format, **kwargs)
        self.run = logging.Formatter(RUN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "reg_runner" or record.name.startswith("reg_runner."):
            return self.run.format(record)
        return super().format(record)
