"""How the command's console names who speaks: Hydra's lines tagged ``[HYDRA]``, reg_runner's as a run's log has them.

Hydra formats every line of the sweeper's and launcher's process with its own ``[HYDRA]`` tag
(``hydra/hydra_logging``); runs that train in that process (the stacked launcher) and reg_runner's sweepers log
there too. ``conf/config.yaml`` makes this formatter Hydra's console formatter, so reg_runner's lines keep
the format of a run's log file (``[time][logger][LEVEL] - message``) wherever they are written.
"""

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
