"""The ``logging`` group: what a run shows while it trains and records in TensorBoard."""

from reg_runner.schema import Bool, Group, integer, one_of


class LoggingConfig(Group):
    progress: one_of("auto", True, False)
    """a progress bar: auto = on a terminal, not in a multirun"""
    tensorboard: Bool
    """write TensorBoard events (scalars, histograms, HParams) into the run's folder"""
    histograms: integer(0)
    """epochs with histograms, evenly spaced; read only with tensorboard"""
    probe_size: integer(1)
    """training images of the probe batch; read only with histograms"""
