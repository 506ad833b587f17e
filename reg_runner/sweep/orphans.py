"""Orphan adoption: the RUNNING trials of a sweeper that died, settled when a sweeper opens the study. A sweeper
tags each trial it asks with its host and pid (``HOST``, ``PID``), through which it is known to be gone."""

import datetime
import logging
import socket
from pathlib import Path

from reg_runner.sweep.outcomes import tell
from reg_runner.sweep.workers import alive

log = logging.getLogger(__name__)
HOST, PID = "reg_runner.host", "reg_runner.pid"
UNTAGGED_GRACE_S = 60  # a live sweeper tags the trial it asked within milliseconds


def adopt_orphans(study, storage, artifacts: Path | None = None, objectives: list | None = None) -> None:
    """Settle the RUNNING trials whose sweeper is gone: one whose runs finished is told its result (adopted); the
    others are marked failed and noted as cut off, so they are run again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(trial):
            continue
        result, value = tell(study, trial, storage, artifacts, objectives, unrecorded="interrupted")
        if result == "complete":
            log.warning("trial %d: its sweeper died after its runs finished; adopted with value %s", trial.number,
                        value)
        elif result == "cut":
            log.warning("trial %d was cut off (its sweeper process %s is gone): marked failed, run again",
                        trial.number, trial.user_attrs.get(PID))


def _orphaned(trial) -> bool:
    """Whether a RUNNING trial's sweeper is gone: a dead process on this host, or never tagged within the grace
    period (host and pid are two writes: a trial with one only may be a live sweeper's between the two)."""
    attrs = trial.user_attrs
    if HOST in attrs and PID in attrs:
        return attrs[HOST] == socket.gethostname() and not (isinstance(attrs[PID], int) and alive(attrs[PID]))
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > UNTAGGED_GRACE_S
