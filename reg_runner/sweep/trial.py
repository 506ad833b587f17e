"""A run's link back to its Optuna trial, and the pruning it makes possible.

    python -m reg_runner --multirun hparams_search=regularization hydra/sweeper/pruner=median

The study sweeper launches each trial's runs with ``hydra.job.env_set.REG_RUNNER_TRIAL=<number>``.
Hydra's launchers set that variable while the job runs (the basic launcher in this process; joblib,
submitit and SLURM in theirs), and the stacked launcher reads it from each job's config. The rest of
the channel is in the job's Hydra config, which every launcher carries: the study's storage, its
name and ``hydra.sweeper.pruner``. So a run in any process reports to its trial through the study's
storage (SQLite, PostgreSQL), or, in the sweeper's own process, through its in-memory study.

At every evaluation, the ``Pruning`` listener reports each trial's value so far: its runs' mean
best objective (the value the trial would be told if it stopped now; with ``seeds_per_trial`` the
mean over its seeds, which train in one stack), and asks the study's pruner. A pruned trial's runs
stop at once with ``status: pruned``, their history, checkpoints and TensorBoard events written as
any run's end writes them; the sweeper tells the trial PRUNED.
"""

import logging
import math
import os
from dataclasses import dataclass

from omegaconf import OmegaConf

from reg_runner.errors import UserError

log = logging.getLogger(__name__)
ENV = "REG_RUNNER_TRIAL"
NO_PRUNER = "optuna.pruners.NopPruner"
MEMORY: dict = {}  # study name -> the sweeper's in-memory storage (runs in the sweeper's process)


@dataclass(frozen=True)
class TrialLink:
    storage: str | None  # the study's database URL; None: the sweeper's in-memory study
    study: str
    number: int
    pruner: dict  # hydra.sweeper.pruner, resolved (``_target_`` and its keys)

    @property
    def prunes(self) -> bool:
        return self.pruner.get("_target_", NO_PRUNER) != NO_PRUNER

    def describe(self) -> dict:
        """What environment.json records: the study and trial the run belongs to."""
        return dict(study=self.study, number=self.number, storage=_shown(self.storage),
                    pruner=self.pruner.get("_target_"))


def link(hydra_cfg, env: dict | None = None) -> TrialLink | None:
    """The trial a job belongs to, from its ``hydra`` config node: ``job.env_set`` or ``env`` (the
    process's environment, as Hydra's launchers set it); None outside a study sweep."""
    number = (env or {}).get(ENV) or OmegaConf.select(hydra_cfg, f"job.env_set.{ENV}", default=None)
    sweeper = OmegaConf.select(hydra_cfg, "sweeper", default=None)
    if number is None or sweeper is None or "study_name" not in sweeper:
        return None
    sweeper = OmegaConf.to_container(sweeper, resolve=True)
    return TrialLink(storage=sweeper.get("storage"), study=sweeper["study_name"], number=int(number),
                     pruner=sweeper.get("pruner") or {"_target_": NO_PRUNER})


def from_process(hydra_cfg) -> TrialLink | None:
    return link(hydra_cfg, dict(os.environ))


def _shown(storage: str | None) -> str | None:
    if storage is None:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable)"


def open_storage(url: str | None):
    """A study's storage, kept by whoever writes to a trial it did not ask for: a database (``RDBStorage``,
    what ``optuna.create_study`` opens for a URL), or, for None, a new in-memory one."""
    import optuna

    return optuna.storages.RDBStorage(url) if url is not None else optuna.storages.InMemoryStorage()


def trial_id(storage, study_name: str, number: int) -> int:
    """The storage's id of a study's trial, by its number, through the storage's public methods."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


class Reporter:
    """One trial's channel: record a value at a step, ask the pruner."""

    def __init__(self, trial: TrialLink):
        import optuna

        from reg_runner.sweep import pruners

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = trial.storage if trial.storage is not None else MEMORY.get(trial.study)
        if storage is None:
            raise UserError(f"trial {trial.number} of study {trial.study!r} runs in another process than its "
                            "in-memory study: give hydra.sweeper.storage (sqlite:///...) to prune there")
        pruner = pruners.build(trial.pruner)
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        self.study = optuna.load_study(study_name=trial.study, storage=self.storage, pruner=pruner)
        self.trial_id = trial_id(self.storage, trial.study, trial.number)

    def record(self, step: int, value: float) -> None:
        self.storage.set_trial_intermediate_value(self.trial_id, step, value)

    def should_prune(self) -> bool:
        """The pruner's verdict on the values recorded so far."""
        return self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id))


class Pruning:
    """The engine's listener: after each evaluation, each trial's runs in the stack report their mean
    best objective so far to the trial; a trial its pruner stops ends every run of it, ``pruned``."""

    def __init__(self, members: list):
        self.reporters: dict[int, Reporter] = {}
        self.runs: dict[int, list] = {}  # trial number -> its runs in this stack, ended ones too
        for m in members:
            trial = m.trial
            if trial is None or not trial.prunes:
                continue
            if trial.number not in self.reporters:
                self.reporters[trial.number] = Reporter(trial)
            self.runs.setdefault(trial.number, []).append(m)

    @property
    def active(self) -> bool:
        return bool(self.reporters)

    def start(self, engine) -> None:
        pass

    def epoch(self, engine, result) -> None:
        for number, runs in self.runs.items():
            evaluated = [m for m in runs if result.rows.get(m) is not None]  # in the stack, evaluated now
            if not evaluated:
                continue
            if any(m.state.best is None or m.state.status == "diverged" for m in runs):
                continue  # a diverged seed fails the trial; nothing to rank yet
            objective = runs[0].cfg.objective
            value = math.fsum(m.state.best[objective] for m in runs) / len(runs)
            step = max(m.state.epoch for m in evaluated)
            reporter = self.reporters[number]
            reporter.record(step, value)  # the last epoch's too: the trial's whole curve is in the study
            live = [m for m in evaluated if m.state.status == "running"]
            if live and reporter.should_prune():
                log.info("trial %d pruned at epoch %d (%s so far %.4f)", number, step, objective, value)
                for m in live:
                    m.state.status, m.state.stopped_at = "pruned", m.state.epoch

    def member_end(self, engine, member, k: int) -> None:
        pass

    def close(self, engine) -> None:
        pass
