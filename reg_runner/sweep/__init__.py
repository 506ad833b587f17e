"""Sweeps: many runs from one command (``--multirun``), as Hydra's sweepers and launchers run them.

- ``grid``: the default multirun sweeper. Hydra's basic sweeper (the product of ``a=1,2 b=x,y``),
  which checks every job's config and folder before the first job trains, and lets a failed job
  fail alone.
- ``study``: the Optuna sweeper of the ``hparams_search`` presets (resumable studies, trial-numbered
  folders, a summary); its search spaces are in ``spaces``.

Their keys (``hydra.sweeper.*``) and the launcher's are declared and checked in ``settings``, before a multirun
makes anything.
"""
