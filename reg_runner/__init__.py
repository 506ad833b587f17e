"""reg_runner: a Hydra-configured runner for studying regularization on small networks."""

__version__ = "0.1.0"
