"""A search's side of its trials: the folders of a trial's runs, and its study's storage opened to read or to
write. What a run knows of its trial (its link, its reporter, the pruning listener) is
``reg_runner.trainer.trial``'s: the names below that come from there are the sweepers' too."""

from reg_runner.trainer.trial import ENV, MEMORY, shown_storage, sqlite_file, sqlite_path, trial_id  # noqa: F401

RUN_DIR = "reg_runner.run_dir"  # a trial's user attribute: its run's folder
RUN_DIRS = "reg_runner.run_dirs"  # a trial of several seeds: its runs' folders


def trial_dirs(trial) -> list[str]:
    """The folders of a trial's runs (one, or one per seed)."""
    attrs = trial.user_attrs
    return list(attrs[RUN_DIRS]) if RUN_DIRS in attrs else [attrs[RUN_DIR]] if RUN_DIR in attrs else []


def read_only_storage(url: str):
    """A study's storage opened to read, never to write: an SQLite file that must exist, opened read-only
    (SQLite's ``mode=ro``: a write fails, and no file is made); a PostgreSQL database in read-only transactions
    (``default_transaction_read_only``: a write fails); another database without creating its tables. What the
    report, and anything else that only reads a study, opens."""
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


def open_storage(url: str | None):
    """A study's storage, kept by whoever writes to a trial it did not ask for: a database (``RDBStorage``,
    what ``optuna.create_study`` opens for a URL), or, for None, a new in-memory one."""
    import optuna

    return optuna.storages.RDBStorage(url) if url is not None else optuna.storages.InMemoryStorage()


def live(study, storage, trial):
    """A ``Trial`` to write to (its user attributes), for a trial asked (already live) or read back from the
    storage (a ``FrozenTrial`` a dead sweeper left running)."""
    import optuna

    if isinstance(trial, optuna.trial.Trial):
        return trial
    return optuna.trial.Trial(study, trial_id(storage, study.study_name, trial.number))
