"""A trial's outcome, as its runs' records say: how they ended, telling the study, the marks on a trial a kill cut
off, and the count of trials that ran to an end. The trial attributes of a refusal by the checks and of a cut are
defined here."""

import math
from pathlib import Path

from reg_runner import kinds
from reg_runner.records import FINISHED, TRAINED, RunFolder
from reg_runner.sweep import analysis
from reg_runner.sweep import objectives as objectives_lib
from reg_runner.trainer.trial import trial_id

REJECTED = "reg_runner.rejected"  # the checks' one line, for a trial whose config was refused
CUT = "reg_runner.cut"  # on a trial told failed because a kill cut it off: it is run again
INTERRUPTED = "reg_runner.interrupted"  # the same as a study attribute (a list of numbers), as studies before kept it


def outcome(dirs: list[str], objectives: list | None = None, unrecorded: str = "failed"):
    """How a trial's runs ended, from their records: ``complete`` with the mean of their best objectives (with
    several ``objectives``, a list of each one's mean), ``pruned``, ``failed`` (a run diverged or failed: a result,
    a failed one), or ``cut`` (a run was interrupted or killed: the trial is run again). ``unrecorded``: what a run
    without a record counts as (after its launcher returned, a crash: failed; after the sweeper died, a kill: cut)."""
    statuses = [(RunFolder(Path(d)).status() if d else None) or unrecorded for d in dirs] or [unrecorded]
    if any(s not in FINISHED and s != "failed" for s in statuses):
        return "cut", None
    if all(s in TRAINED for s in statuses):
        records = [RunFolder(Path(d)).recorded() for d in dirs]
        values = [[objectives_lib.value(r, o) for r in records] for o in objectives or [None]]
        if any(v is None for per_objective in values for v in per_objective):
            return "failed", None
        means = [math.fsum(v) / len(v) for v in values]
        return "complete", means if objectives else means[0]
    if any(s == "pruned" for s in statuses) and all(s in (*TRAINED, "pruned") for s in statuses):
        return "pruned", None
    return "failed", None


def tell(study, trial, storage, artifacts: Path | None, objectives: list | None,
         unrecorded: str = "failed") -> tuple[str, object]:
    """Tell the study how the trial's runs ended, as their records say (``storage``: the study's; ``trial``: one
    asked, or one read back that a dead sweeper left running). A trial that ran to its end first gets its results
    and artifacts recorded (``analysis.record_trial``). Returns the outcome and the value told."""
    from optuna.trial import TrialState

    dirs = analysis.trial_dirs(trial)
    result, value = outcome(dirs, objectives, unrecorded)
    if result == "cut":
        # marked on the trial itself: sweepers sharing a study each mark their own trials, so no mark is lost to
        # another's write (a list on the study was); and on its runs' folders, for report and resume to know them
        storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), CUT, True)
        for folder in map(Path, dirs):
            if folder.is_dir() and kinds.kind_of(folder) in (None, kinds.RUN):
                kinds.mark(folder, kinds.RUN, cut=dict(study=study.study_name, trial=trial.number))
    else:
        analysis.record_trial(analysis.live(study, storage, trial), dirs, artifacts)
    if result == "complete":
        study.tell(trial.number, value)
    else:
        study.tell(trial.number, state=TrialState.PRUNED if result == "pruned" else TrialState.FAIL)
    return result, value


def cut_numbers(study, trials=None) -> set[int]:
    """The numbers of the trials cut off by a kill (and run again)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return set(study.user_attrs.get(INTERRUPTED, [])) | {t.number for t in trials if t.user_attrs.get(CUT)}


def failed(trial, cut: set[int]) -> bool:
    """A trial that failed as a result (it diverged or crashed): told failed, but not cut off by a kill (``cut``), nor
    refused by the checks (a refused trial is no result: a corrected command runs its share again)."""
    return trial.state.name == "FAIL" and trial.number not in cut and REJECTED not in trial.user_attrs


def count_finished(study) -> int:
    """Trials that ran to an end: complete, pruned, or ``failed``."""
    trials = study.get_trials(deepcopy=False)
    cut = cut_numbers(study, trials)
    return sum(t.state.name in ("COMPLETE", "PRUNED") or failed(t, cut) for t in trials)
