"""A search's side of its trials: their runs' folders, and the study's storage opened to read or to write. What a
run knows of its trial is ``reg_runner.trainer.trial``'s; the names imported from there are the sweepers' too."""

from reg_runner.trainer.trial import ENV, MEMORY, shown_storage, sqlite_file, trial_id  # noqa: F401

RUN_DIR = "reg_runner.run_dir"  # a trial's user attribute: its run's folder
RUN_DIRS = "reg_runner.run_dirs"  # a trial of several seeds: its runs' folders


def trial_dirs(trial) -> list[str]:
    """The folders of a trial's runs (one, or one per seed)."""
    attrs = trial.user_attrs
    return list(attrs[RUN_DIRS]) if RUN_DIRS in attrs else [attrs[RUN_DIR]] if RUN_DIR in attrs else []


def read_only_storage(url: str):
    """A study's storage opened to read, never to write (a write fails): an SQLite file that must exist, with
    ``mode=ro``; PostgreSQL in read-only transactions; another database without creating its tables."""
    import optuna
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    path, engine = sqlite_file(url), {}
    if path is not None:
        url = f"sqlite:///file:{quote(str(path.absolute()))}?mode=ro&uri=true"
    elif make_url(url).get_backend_name() == "postgresql":  # options given in the URL are kept
        options = f"{make_url(url).query.get('options', '')} -c default_transaction_read_only=on".strip()
        engine = {"connect_args": {"options": options}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine, skip_table_creation=True)


def live(study, storage, trial):
    """A ``Trial`` to write to, for a trial asked or read back (a ``FrozenTrial`` a dead sweeper left running)."""
    import optuna

    if isinstance(trial, optuna.trial.Trial):
        return trial
    return optuna.trial.Trial(study, trial_id(storage, study.study_name, trial.number))
