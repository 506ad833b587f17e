"""A search's analysis: each trial's results, curve and files in the study; the report's figures and table."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import read_metrics

from reg_runner.sweep import analysis
from reg_runner.trainer import trial as run_trial
from reg_runner.sweep.analysis import RUN_DIR

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def search(tmp_path_factory, tiny_data):
    """A real small search: 4 trials of 3 epochs, no pruner, its study in SQLite in the sweep folder."""
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("search"), tiny_data)
    sweep = cli("--multirun", "hparams_search=quick", "data.val_size=null", "hydra.sweeper.n_trials=4",
                "trainer.epochs=3", "logging.tensorboard=false").run_dir
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{sweep / 'study.db'}")
    return sweep, study


def test_each_trial_holds_its_results_curve_and_files_without_a_pruner(search):
    sweep, study = search
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        m = read_metrics(t.user_attrs[RUN_DIR])
        assert t.user_attrs[analysis.TEST_ACC] == m["test_at_best"]["acc"]
        assert t.user_attrs[analysis.EPOCHS] == m["epochs_run"] == 3
        assert t.user_attrs[analysis.WALL] == m["timing"]["wall_s"] and t.user_attrs[analysis.SEEDS] == [m["seed"]]
        # the learning curve: the best objective so far at each epoch, the last the trial's value
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert t.intermediate_values[3] == t.value == m["best_val"]
        curve = [t.intermediate_values[step] for step in (1, 2, 3)]
        assert curve == sorted(curve)  # a best so far never falls
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=optuna.storages.RDBStorage(
            f"sqlite:///{sweep / 'study.db'}"))
        names = sorted(a.filename for a in metas)
        assert names == ["curves.png", "metrics.json"], names
        for a in metas:
            assert (sweep / "artifacts" / a.artifact_id).is_file()
    marker = json.loads((sweep / ".reg_runner.json").read_text())
    assert marker["study"] == {"name": "quick", "storage": f"sqlite:///{sweep.resolve() / 'study.db'}"}


def _not_blank(path: Path) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200, (path, pixels.shape)
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
    assert len(colours) > 20, (path, len(colours))  # drawn, not one colour


@pytest.mark.slow  # a search, then every figure of its analysis
def test_the_report_draws_the_search_and_tables_its_trials(search, tmp_path):
    sweep, study = search
    from conftest import call_in_process

    from reg_runner.report import main

    # through the report's main in this process (the real command draws in tests/test_interrupts.py)
    import matplotlib

    def style():  # the process's style (the backend aside: Agg, set for the figures)
        return {key: value for key, value in matplotlib.rcParams.items() if not key.startswith("backend")}

    before = style()
    argv = ["python -m reg_runner.report", str(sweep), "--out", str(tmp_path)]
    proc = call_in_process(lambda: sys.exit(main()), argv, tmp_path, dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert style() == before  # Optuna's ggplot style stays in its figures, not in the next report's colours
    for name in ("importances", "parallel_coordinates", "optimization_history", "slices", "intermediate_values"):
        _not_blank(tmp_path / f"{name}.png")
        assert f"![{name}]({name}.png)" in proc.stdout
    assert f"optuna-dashboard sqlite:///{sweep.resolve() / 'study.db'} --artifact-dir {sweep / 'artifacts'}" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    trials = study.get_trials(deepcopy=False)
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    for row, t in zip(rows, trials):
        m = read_metrics(t.user_attrs[RUN_DIR])
        assert row["state"] == "COMPLETE" and float(row["value"]) == t.value
        for key, value in t.params.items():
            assert row[key] == str(value)
        assert float(row["test_acc_at_best"]) == m["test_at_best"]["acc"] and int(row["epochs_run"]) == 3
        assert float(row["wall_s"]) == m["timing"]["wall_s"] and row["seeds"] == str(m["seed"])
        assert row["run_dirs"] == t.user_attrs[RUN_DIR]


def test_too_few_trials_are_said_not_fatal(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="one", direction="maximize")
    t = study.ask()
    t.suggest_float("x", 0, 1)
    study.tell(t, 0.5)
    drawn, missing = analysis.figures(study, tmp_path)
    assert drawn == [] and dict(missing)["importances"] == "needs 2 complete trials (1 so far)"
    assert dict(missing)["intermediate_values"] == "no trial recorded a learning curve"


def _study_folder(tmp_path, url=None):
    """A sweep folder whose marker names a real study of two trials (no run trained), in SQLite in the folder or
    in the database ``url``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from reg_runner import kinds

    root = tmp_path / "sweep"
    root.mkdir()
    url = url or f"sqlite:///{root / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for x, db in ((0.1, "postgresql://user:hunter2@host/db"), (0.5, "sqlite:///a.db")):
        study.add_trial(optuna.trial.create_trial(
            params={"x": x, "db": db}, value=x,
            distributions={"x": FloatDistribution(0, 1), "db": CategoricalDistribution(["postgresql://user:hunter2@"
                                                                                        "host/db", "sqlite:///a.db"])}))
    kinds.mark(root, kinds.SWEEP, study=dict(name="s", storage=run_trial.shown_storage(url)))
    return root, url


def test_the_reports_search_reads_its_study_without_writing_it(tmp_path):
    """The study is opened read-only (SQLite's mode=ro): the database is left as it was to the byte, no journal
    is made; a deleted database is one line, and no new empty one is made in its place."""
    from conftest import folder_state

    from reg_runner.errors import UserError

    root, url = _study_folder(tmp_path)
    before = folder_state(root)
    files, section = analysis.search(root, tmp_path / "out", plots=False)
    assert "2 trials, 2 complete" in section and [p.name for p, _ in files] == ["trials.csv"]
    assert folder_state(root) == before
    (root / "study.db").unlink()
    with pytest.raises(UserError, match=r"the study's database .*study\.db does not exist") as refused:
        analysis.search(root, tmp_path / "out", plots=False)
    assert "\n" not in str(refused.value) and not (root / "study.db").exists()
    with pytest.raises(UserError, match="does not exist"):  # a run reporting to the study: not made again either
        run_trial._database(url)
    assert not (root / "study.db").exists()


@pytest.mark.slow  # a PostgreSQL server
def test_the_reports_search_reads_a_postgresql_study_in_read_only_transactions(tmp_path, postgres):
    """Every table's rows as they were after the report; a write through the storage the report opens fails."""
    import sqlalchemy

    root, url = _study_folder(tmp_path, postgres)

    def rows() -> dict:
        engine = sqlalchemy.create_engine(postgres)
        try:
            with engine.connect() as db:
                tables = sqlalchemy.inspect(db).get_table_names()
                return {t: sorted(map(repr, db.execute(sqlalchemy.text(f'SELECT * FROM "{t}"')))) for t in tables}
        finally:
            engine.dispose()

    before = rows()
    assert len(before["trials"]) == 2
    files, section = analysis.search(root, tmp_path / "out", plots=True)
    assert "2 trials, 2 complete" in section and "trials.csv" in [p.name for p, _ in files]
    assert rows() == before
    study = optuna.load_study(study_name="s", storage=analysis.read_only_storage(postgres))
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        study.set_user_attr("written", True)
    assert "cannot execute INSERT in a read-only transaction" in str(refused.value.__cause__)
    assert rows() == before


def test_a_storage_password_never_shows(tmp_path, monkeypatch):
    """Masked by one function (reg_runner.errors.masked) wherever a storage URL may show: the report's section,
    trials.csv, a refusal's message, environment.json's command line."""
    import torch

    from reg_runner import fingerprint
    from reg_runner.errors import ConfigError, masked, one_line

    secret = "postgresql://user:hunter2@127.0.0.1:1/db"
    assert masked(f"storage={secret!r}; again {secret}") == ("storage='postgresql://user:***@127.0.0.1:1/db'; again "
                                                             "postgresql://user:***@127.0.0.1:1/db")
    assert masked("sqlite:///x.db http://host:8080/p postgresql://user@h/db") == (
        "sqlite:///x.db http://host:8080/p postgresql://user@h/db")  # no password: as it is
    root, _ = _study_folder(tmp_path)
    files, section = analysis.search(root, tmp_path / "out", storage=secret, plots=False)  # no server there
    assert "hunter2" not in section and "user:***@127.0.0.1:1/db" in section
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{root / 'study.db'}").get_trials()
    table = analysis.trials_csv(trials).decode()
    assert "hunter2" not in table and "postgresql://user:***@host/db" in table
    assert "hunter2" not in str(ConfigError("hydra.sweeper.storage", secret, "a database")) + one_line(secret)
    monkeypatch.setattr(sys, "argv", ["reg_runner", f"hydra.sweeper.storage={secret}"])
    assert fingerprint.environment(torch.device("cpu"))["argv"][1] == ("hydra.sweeper.storage=postgresql://user:***@"
                                                                   "127.0.0.1:1/db")
