"""Sweeps: many runs from one command (``--multirun``), as Hydra's sweepers and launchers run them: the default
sweeper (``grid``), the Optuna sweeper of the ``hparams_search`` presets (``study``, its spaces in ``spaces``), the
stacked launcher (``stacked``), and their keys, checked before a multirun makes anything (``settings``).
"""
