"""The one place reg_runner reaches into Optuna's non-public attributes (tests/test_analysis.py pins each).

Optuna's public API gives a live ``Trial`` from ``study.ask()``; a trial read back from the storage (a
``FrozenTrial``, as a resumed sweeper finds one a dead sweeper left running) has no public id or
write path. These do what its ``Trial`` does, for such a trial.
"""


def trial_id(frozen) -> int:
    """The storage's id of a ``FrozenTrial`` (``Trial(study, trial_id)`` takes it)."""
    return frozen._trial_id


def live(study, frozen):
    """A ``Trial`` of a trial read back from the study, to set its attributes before it is told."""
    import optuna

    if isinstance(frozen, optuna.trial.Trial):  # already live (from ``study.ask()``)
        return frozen
    return optuna.trial.Trial(study, trial_id(frozen))
