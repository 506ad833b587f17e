"""A run's link back to its Optuna trial (the channel: docs/search.md, "Pruning, and several seeds per trial"),
through the study's storage or, in the sweeper's own process, its in-memory study (``MEMORY``). ``Pruning``
records each trial's mean best objective so far, pruner or not, and with a pruner asks whether its runs stop.
"""

import functools
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner.errors import UserError, cause, masked

log = logging.getLogger(__name__)
ENV = "REG_RUNNER_TRIAL"
NO_PRUNER = "optuna.pruners.NopPruner"
MEMORY: dict = {}  # study name -> the sweeper's in-memory storage (runs in the sweeper's process)


def build_pruner(spec: dict):
    """The pruner ``spec`` names (Hydra's instantiate: a wrapped pruner is a spec too); Optuna's experimental
    warnings are not repeated at every run."""
    import optuna
    from hydra.utils import instantiate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return instantiate(spec, _execution_whitelist_=("optuna.pruners.*",))


def database_refused(url) -> str | None:
    """What a study's storage must be, where ``url`` is no database URL whose driver is installed; or None."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not text, empty, or no URL
        return "a database URL such as sqlite:///path/study.db or postgresql+psycopg2://user@host/db"
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as e:
        return (f"a URL whose database driver is installed: {parsed.drivername} needs the Python module {e.name}, "
                "which is not installed (install its driver, or name an installed one, e.g. postgresql+psycopg2://...)")
    except Exception:
        return f"a database SQLAlchemy knows: {parsed.drivername!r} is none (sqlite, postgresql, mysql...)"
    return None


def sqlite_path(url: str) -> Path | None:
    """The file an SQLite storage URL names (``sqlite:///study.db``; ``sqlite:///file:study.db?...&uri=true``
    too), None for an in-memory SQLite database or another database: the one reading of a storage URL's file."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or database in ("", ":memory:"):
        return None
    return Path(database.removeprefix("file:"))


def shown_storage(storage: str | None) -> str | None:
    """A storage URL as records keep it: an SQLite file's path made absolute (a report may run from another
    folder), a password hidden."""
    if storage is None:
        return None
    try:
        from sqlalchemy.engine import make_url

        url, path = make_url(storage), sqlite_path(storage)
        if path is not None:
            url = url.set(database=str(path.absolute()))
        return masked(url.render_as_string(hide_password=False))
    except Exception:
        return masked(storage)


@dataclass(frozen=True)
class TrialLink:
    storage: str | None  # the study's database URL; None: the sweeper's in-memory study
    study: str
    number: int
    pruner: dict  # hydra.sweeper.pruner, resolved (``_target_`` and its keys)
    seeds_per_trial: int = 1
    n_objectives: int = 1  # several: no learning curve (Optuna records intermediate values of one objective)

    @property
    def prunes(self) -> bool:
        return self.pruner.get("_target_", NO_PRUNER) != NO_PRUNER

    def describe(self) -> dict:
        """What environment.json records: the study and trial the run belongs to."""
        return dict(study=self.study, number=self.number, storage=shown_storage(self.storage),
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
                     pruner=sweeper.get("pruner") or {"_target_": NO_PRUNER},
                     seeds_per_trial=int(sweeper.get("seeds_per_trial") or 1),
                     n_objectives=len(sweeper.get("objectives") or [None]))


@functools.cache  # one per process: a stack's runs share it
def _database(url: str):
    """The study's database, which its sweeper made: a run writes its trial's curve there, and never makes a new
    database where one was deleted."""
    import optuna

    sqlite_file(url)
    return optuna.storages.RDBStorage(url)


def sqlite_file(url: str) -> Path | None:
    """The SQLite file a storage URL names, which must exist (SQLite would make a new, empty one); None for
    another database."""
    path = sqlite_path(url)
    if path is None and not url.startswith("sqlite"):
        return None
    if path is None or not path.is_file():
        raise UserError(f"the study's database {path or masked(url)} does not exist (its sweep made it: it was "
                        "deleted or moved); give the storage of an existing study")
    return path


def trial_id(storage, study_name: str, number: int) -> int:
    """The storage's id of a study's trial, by its number, through the storage's public methods."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


class Reporter:
    """One trial's channel, through Optuna's public ``Trial``: record a value at a step, ask the pruner."""

    def __init__(self, trial: TrialLink):
        import optuna

        # a value that cannot be recorded is an error where a pruner needs it, else a warning, once
        self.strict, self.number = trial.prunes, trial.number
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = MEMORY.get(trial.study) if trial.storage is None else _database(trial.storage)
        if storage is None:
            raise UserError(f"trial {trial.number} of study {trial.study!r} runs in another process than its "
                            "in-memory study: give hydra.sweeper.storage (sqlite:///...) to prune there")
        study = optuna.load_study(study_name=trial.study, storage=storage, pruner=build_pruner(trial.pruner))
        self.trial, self.open = optuna.trial.Trial(study, trial_id(storage, trial.study, trial.number)), True

    def record(self, step: int, value: float) -> None:
        """The trial's intermediate value at ``step`` (a step already recorded, by a resumed run, keeps its value)."""
        import optuna

        if not self.open:
            return
        try:
            with warnings.catch_warnings():  # Optuna's note on a step reported twice: the value is the same
                warnings.simplefilter("ignore", UserWarning)
                self.trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:  # told already (a run resumed after its search): no curve
            self.open = False
        except Exception as e:  # a database that refuses a write
            if self.strict:
                raise
            self.open = False
            log.warning("trial %d: its learning curve is no longer recorded in the study (%s)", self.number,
                        type(e).__name__)

    def should_prune(self) -> bool:
        """The pruner's verdict on the values recorded so far."""
        return self.open and self.trial.should_prune()


class Pruning:
    """The engine's listener: after each evaluation, each trial's runs in the stack report their mean
    best objective so far to the trial; a trial its pruner stops ends every run of it, ``pruned``."""

    def __init__(self, members: list):
        self.trials: dict[int, tuple[Reporter, list]] = {}  # trial number -> its channel, its runs here (ended too)
        by_trial: dict[int, list] = {}
        for m in members:
            if m.trial is not None:
                by_trial.setdefault(m.trial.number, []).append(m)
        for number, runs in by_trial.items():
            trial = runs[0].trial
            if trial.prunes:
                self.trials[number] = Reporter(trial), runs
                continue
            # a curve to record, not a pruner to ask: of a trial whose runs are all here (its seeds' mean), through
            # a study this process reaches
            if (len(runs) < trial.seeds_per_trial or trial.n_objectives > 1
                    or (trial.storage is None and trial.study not in MEMORY)):
                continue
            try:
                self.trials[number] = Reporter(trial), runs
            except Exception as e:  # the curve is a record, not a result: the run trains without it
                log.warning("trial %d: its learning curve is not recorded in the study (%s)", number, cause(e, 200))

    @property
    def active(self) -> bool:
        return bool(self.trials)

    def epoch(self, engine, result) -> None:
        for number, (reporter, runs) in self.trials.items():
            evaluated = [m for m in runs if result.rows.get(m) is not None]  # in the stack, evaluated now
            if not evaluated or any(m.state.best is None or m.state.status == "diverged" for m in runs):
                continue  # a diverged seed fails the trial; nothing to rank yet
            objective = runs[0].cfg.objective
            value = math.fsum(m.state.best[objective] for m in runs) / len(runs)
            step = max(m.state.epoch for m in evaluated)
            reporter.record(step, value)  # the last epoch's too: the trial's whole curve is in the study
            live = [m for m in evaluated if m.state.status == "running"]
            if live and runs[0].trial.prunes and reporter.should_prune():
                log.info("trial %d pruned at epoch %d (%s so far %.4f)", number, step, objective, value)
                for m in live:
                    m.state.status, m.state.stopped_at = "pruned", m.state.epoch
