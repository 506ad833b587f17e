"""Optuna sweeps through the real CLI: conditional spaces, resume, parallel trials, PostgreSQL, divergence."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from conftest import killable, printed_command, read_metrics

from reg_runner.sweep.analysis import ARTIFACTS, RUN_DIR
from reg_runner.sweep.grid import GridSweeper
from reg_runner.sweep.outcomes import CUT, INTERRUPTED, count_finished, cut_numbers, tell
from reg_runner.sweep.study import HOST, PID, StudySweeper, adopt_orphans
from test_prune import MEDIAN, check_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)
QUICK = ("--multirun", "hparams_search=quick", "data.val_size=null")  # the tiny data has 400 validation images


def load_study(sweep_dir: Path, name="quick") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'study.db'}")


def states(study) -> dict:
    out = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


@pytest.mark.slow  # a search, then its re-run line
def test_tiny_sweep_records_conditional_params_and_a_summary(cli):
    proc = cli(*QUICK, "hydra.sweeper.n_trials=6")  # in this process (the real CLI's searches: the killed ones below)
    sweep = proc.run_dir
    study = load_study(sweep)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    branches = set()
    for t in trials:
        p = t.params
        for switch, key in (("search.dropout", "model.dropout"), ("search.l1", "reg.l1"), ("search.l2", "reg.l2")):
            assert (key in p) == p[switch], (switch, p)  # a value only when its switch is on
            branches.add((switch, p[switch]))
        assert ("optimizer.momentum" in p) == (p["optimizer"] == "sgd"), p
        run = Path(t.user_attrs[RUN_DIR])
        assert run.parent == sweep.resolve() and run.name.startswith(f"{t.number}_")
        m = read_metrics(run)
        assert t.value == m["best_val"]  # the objective is the run's own best validation accuracy
        cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
        assert cfg["model"]["norm"] == p["model.norm"] and cfg["search"]["dropout"] == p["search.dropout"]
        if p["search.dropout"]:
            assert cfg["model"]["dropout"] == pytest.approx(p["model.dropout"])
        else:
            assert cfg["model"]["dropout"] == 0.0
    assert len(branches) == 6  # both sides of every switch were explored (seeded TPE)

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    best = max(trials, key=lambda t: t.value)
    assert summary["n_complete"] == 6 and summary["n_failed"] == 0 and summary["best"]["number"] == best.number
    assert summary["best"]["test_acc_at_best"] == read_metrics(best.user_attrs[RUN_DIR])["test_at_best"]["acc"]
    assert [t["number"] for t in summary["top"]] == [t.number for t in sorted(trials, key=lambda t: -t.value)]
    md = (sweep / "sweep_summary.md").read_text()
    assert f"## Best: trial {best.number}" in md and summary["best"]["command"] in md
    assert f"best trial {best.number}: val/acc {best.value:.4f}" in proc.stdout

    # the printed command re-runs the best trial as a single run, with the same numbers
    env, command = printed_command(summary["best"]["command"])
    again = cli(*command, tiny=False, env=env)
    assert read_metrics(again.run_dir)["best_val"] == best.value


def test_rerunning_a_finished_sweep_runs_nothing_more(cli, tmp_path):
    # one trial, then one more: a sampler not reseeded on the second run would draw the first trial's params again
    sweep = tmp_path / "done"
    cli(*QUICK, "hydra.sweeper.n_trials=1", run_dir=sweep)
    proc = cli(*QUICK, "hydra.sweeper.n_trials=1", run_dir=sweep)
    assert len(load_study(sweep).trials) == 1 and "0 to run" in proc.stdout + proc.stderr
    cli(*QUICK, "hydra.sweeper.n_trials=2", run_dir=sweep)  # a larger total continues the same study
    study = load_study(sweep)
    assert states(study) == {"COMPLETE": 2}
    assert len({t.params["model.norm"] + str(t.params) for t in study.trials}) == 2  # reseeded: no repeat


@pytest.mark.slow  # a sweep killed, then resumed
def test_a_killed_sweep_resumes_to_exactly_the_requested_trials(cli, tmp_path):
    sweep = tmp_path / "killed"
    args = [*QUICK, "trainer.epochs=4", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=1", *MEDIAN]
    argv = [f"data.root={cli.data}", "data.verify=false", "data.train_fraction=0.2", "trainer.batch_size=25", *args,
            f"hydra.sweep.dir={sweep}"]
    proc = killable(argv, tmp_path, cli.env, log=tmp_path / "killed.log")
    deadline = time.time() + 120
    # watch the run folders, not the database: opening a study that the sweeper is still creating
    # races Optuna's schema set-up between the two processes
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.1)
        done = 0
        for metrics in sweep.glob("*/metrics.json"):
            try:
                done += json.loads(metrics.read_text())["status"] in ("completed", "pruned")
            except (OSError, ValueError):
                pass
        if done >= 3:  # a run's record is written before its trial is told: 3 records, at least 2 told
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = states(load_study(sweep))
    assert 2 <= before.get("COMPLETE", 0) + before.get("PRUNED", 0) < 6

    cli(*args, run_dir=sweep)
    study = load_study(sweep)
    after = states(study)
    assert after["COMPLETE"] + after.get("PRUNED", 0) == 6  # exactly the requested number, the cut one run again
    assert after.get("PRUNED", 0) >= 1
    cut = [t.number for t in study.trials if t.user_attrs.get(CUT)]
    assert after.get("FAIL", 0) == len(cut)
    # a kill between asking a trial and tagging it leaves it RUNNING and never launched; it is
    # failed by a sweeper that starts after the grace period, and never counts as finished
    stuck = [t for t in study.trials if t.state.name == "RUNNING"]
    assert len(stuck) <= 1 and all(RUN_DIR not in t.user_attrs for t in stuck)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    folders = [t.user_attrs[RUN_DIR] for t in finished]
    assert len(set(folders)) == 6
    assert all(read_metrics(t.user_attrs[RUN_DIR])["status"] == {"COMPLETE": "completed", "PRUNED": "pruned"}[
        t.state.name] for t in finished)
    runs = [p for p in sweep.iterdir() if p.is_dir() and p.name != ARTIFACTS]  # beside them: the trials' artifacts
    assert len(runs) <= len(study.trials)  # none shared or overwritten
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == 6
    assert summary["n_interrupted"] == len(cut) and summary["n_running"] == len(stuck)


@pytest.mark.slow  # a sweep killed mid-batch, then resumed
def test_a_sweep_killed_mid_batch_adopts_the_trial_that_finished(cli, tmp_path):
    """Trials 0 and 1 are one batch (n_jobs=2): killed while trial 1 trains, the study still has trial 0
    RUNNING although its run completed. On resume, trial 0 is adopted with its run's value, not run again."""
    sweep = tmp_path / "mid_batch"
    args = [*QUICK, "trainer.epochs=8", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    argv = [f"data.root={cli.data}", "data.verify=false", "data.train_fraction=0.2", "trainer.batch_size=25", *args,
            f"hydra.sweep.dir={sweep}"]
    proc = killable(argv, tmp_path, cli.env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            first = [json.loads(p.read_text()) for p in sweep.glob("0_*/metrics.json")]
            second = list(sweep.glob("1_*/metrics.json"))
            if first and first[0]["status"] == "completed" and second:
                break  # trial 0 done, trial 1 training: the batch is not told yet
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = load_study(sweep)
    assert [t.state.name for t in before.trials] == ["RUNNING", "RUNNING"]
    (trial0_dir,) = sweep.glob("0_*")
    record = (trial0_dir / "metrics.json").read_text()

    resumed = cli(*args, run_dir=sweep)
    study = load_study(sweep)
    t0 = study.trials[0]
    assert t0.state.name == "COMPLETE" and t0.value == json.loads(record)["best_val"]  # adopted
    assert (trial0_dir / "metrics.json").read_text() == record  # and not run again
    assert study.trials[1].state.name == "FAIL" and study.trials[1].user_attrs[CUT]
    assert states(study) == {"COMPLETE": 4, "FAIL": 1}

    # what it says afterwards: the cut trial counted and named as cut, never as a saving, never offered for resume
    from reg_runner.errors import UserError
    from reg_runner.records import RunFolder
    from reg_runner.report.runs import read_run

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["n_interrupted"] == 1 and summary["n_failed"] == 0
    assert "4 complete, 0 failed, 1 cut off by a kill (run again)" in resumed.stdout
    epochs = summary["epochs"]  # no pruner: every finished trial trained all its epochs
    assert epochs["run"] == epochs["unpruned"] == 4 * 8 and epochs["share"] == 1
    (trial1_dir,) = sweep.glob("1_*")
    assert epochs["cut"] == (read_metrics(trial1_dir).get("epochs_run") or 0)
    assert "Cut off by a kill: 1 trials" in (sweep / "sweep_summary.md").read_text()
    status = read_run(trial1_dir, sweep).status
    assert status.startswith("cut off by a kill (trial 1;") and "resume" not in status
    with pytest.raises(UserError, match="the search ran another trial in its place"):
        RunFolder(trial1_dir).load_last()


def test_a_diverging_trial_fails_and_the_sweep_goes_on(cli):
    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", "hydra.sweeper.custom_search_space=null", "optimizer=sgd",
               "optimizer.lr=choice(0.01,1e7)", "hydra.sweeper.n_trials=4")
    study = load_study(proc.run_dir)
    by_lr = {}
    for t in study.trials:
        by_lr.setdefault(t.params["optimizer.lr"], set()).add(t.state.name)
    assert by_lr[1e7] == {"FAIL"} and by_lr[0.01] == {"COMPLETE"}
    for t in study.trials:
        if t.state.name == "FAIL":
            assert read_metrics(t.user_attrs[RUN_DIR])["status"] == "diverged"
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    assert summary["n_failed"] == len([t for t in study.trials if t.state.name == "FAIL"]) > 0
    assert summary["best"]["params"]["optimizer.lr"] == 0.01


@pytest.mark.slow  # joblib's worker processes
def test_joblib_runs_trials_in_parallel_and_prunes_through_sqlite(cli):
    proc = cli(*QUICK, "hydra/launcher=joblib", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2",
               "trainer.epochs=4", *MEDIAN)
    study = load_study(proc.run_dir)
    trials = study.get_trials(deepcopy=False)
    counts = check_trials(study)  # each worker process reported its run's curve to the study's database
    assert counts.get("PRUNED", 0) >= 1 and counts["COMPLETE"] + counts["PRUNED"] == 6
    runs = {Path(t.user_attrs[RUN_DIR]) for t in trials}
    pids = {json.loads((r / "environment.json").read_text())["pid"] for r in runs}
    assert len(pids) >= 2  # trials ran in worker processes, not one after another in the sweeper
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    wait = summary["batch_wait"]  # what waiting for each batch's slower run cost the workers
    assert wait["batches"] == 3 and wait["busy_worker_s"] > 0 and wait["idle_worker_s"] >= 0


def test_a_trial_half_tagged_by_a_live_sweeper_is_not_taken_for_an_orphan():
    # a sweeper writes its host, then its pid, after asking: another sweeper looking between the two writes
    # must not mark the trial cut off (it did, and the first sweeper then failed on its own finished trial)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(direction="maximize", storage=storage)
    half = study.ask()
    half.set_user_attr(HOST, socket.gethostname())  # no pid yet
    mine = study.ask()
    mine.set_user_attr(HOST, socket.gethostname())
    mine.set_user_attr(PID, os.getpid())
    gone = study.ask()
    gone.set_user_attr(HOST, socket.gethostname())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone.set_user_attr(PID, dead.pid)
    adopt_orphans(study, storage)
    by_number = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert by_number == {half.number: "RUNNING", mine.number: "RUNNING", gone.number: "FAIL"}
    assert [t.number for t in study.get_trials() if t.user_attrs.get(CUT)] == [gone.number]  # cut off: runs again
    assert count_finished(study) == 0 and cut_numbers(study) == {gone.number}
    study.set_user_attr(INTERRUPTED, [half.number])  # a study from before kept the cut trials in a list
    assert cut_numbers(study) == {half.number, gone.number}



def test_a_trial_read_back_is_told_through_the_public_api():
    """A trial a dead sweeper left running (read back as a FrozenTrial) is marked and told through a public
    ``Trial`` over the storage the sweeper opened; an asked trial is used as it is."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    study.ask()
    asked = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    for trial in (frozen, asked):  # no run recorded, after the sweeper died: cut off
        assert tell(study, trial, storage, None, None, unrecorded="interrupted") == ("cut", None)
    assert [(t.state.name, t.user_attrs) for t in study.get_trials(deepcopy=False)] == [("FAIL", {CUT: True})] * 2
    assert asked.user_attrs == {CUT: True}  # written through the asked Trial itself

def test_a_grids_params_may_nest_as_the_check_reads_them():
    # hydra.sweeper.params written as YAML nests its keys: the check flattened them, the grid's sweeper did not
    # (optimizer={'lr': '0.1,0.2'} could not be parsed)
    sweeper = GridSweeper(params=OmegaConf.create({"optimizer": {"lr": "0.1,0.2"}}))
    sweeper.hydra_context = type("Context", (), {"config_loader": None})()  # what batches reads, without Hydra's
    assert sweeper.batches(["seed=0"]) == [[["optimizer.lr=0.1", "seed=0"], ["optimizer.lr=0.2", "seed=0"]]]


@pytest.mark.parametrize("seeds_per_trial", [1, 2])
def test_a_batch_whose_trials_were_all_refused_launches_nothing(seeds_per_trial):
    # the checks refused every trial of the batch (a combination the space allows and a rule between keys
    # refuses): the search asks the next batch; with seeds per trial this was an IndexError
    launched = []
    sweeper = StudySweeper.__new__(StudySweeper)  # what launch reads, without a Hydra context
    sweeper.seeds_per_trial = seeds_per_trial
    sweeper.launcher = type("Launcher", (), {"launch": lambda self, runs, initial_job_idx: launched.append(runs)})()
    sweeper.launch([])
    assert launched == []

# --- PostgreSQL: several sweeper processes share one study -----------------------------------

@pytest.mark.slow  # a PostgreSQL server and two sweeper processes
def test_two_sweepers_share_one_postgresql_study(cli, tmp_path, postgres):
    # the recipe: create the study once, then start any number of sweepers against it
    storage = optuna.storages.RDBStorage(postgres)
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    storage.engine.dispose()  # no connection of this process's is inherited by the sweepers forked below
    sweep = tmp_path / "shared"
    procs, logs = [], [tmp_path / f"sweeper{seed}.log" for seed in (0, 1)]
    for seed, log in zip((0, 1), logs):
        argv = [f"data.root={cli.data}", "data.verify=false", "data.train_fraction=0.2", "trainer.batch_size=25",
                *QUICK, "hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=4", "hydra.sweeper.study_name=shared",
                f"hydra.sweeper.storage={postgres}", *MEDIAN, f"hydra.sweeper.sampler.seed={seed}",
                f"hydra.sweep.dir={sweep}"]
        # two sweeper processes at once, each `python -m reg_runner *argv`: forked from this one where it can be
        # (killable: a real process, its own pid, without an interpreter's start-up), not killed here
        procs.append(killable(argv, tmp_path, cli.env, log=log))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0], logs[0].read_text()[-2000:] + logs[1].read_text()[-2000:]

    study = optuna.load_study(study_name="shared", storage=postgres)
    trials = study.get_trials(deepcopy=False)
    per_process = {}
    for t in trials:
        per_process.setdefault((t.user_attrs[HOST], t.user_attrs[PID]), []).append(t.number)
    assert len(per_process) == 2  # both sweepers ran trials
    assert sum(len(v) for v in per_process.values()) == len(trials) >= 4  # the sum of theirs, no loss
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicate, no gap
    counts = check_trials(study)  # complete or pruned, each as its folder says, curves as its runs reported
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == len(trials)


@pytest.mark.slow  # submitit's job processes
def test_submitit_runs_trials_as_jobs(cli):
    """The submitit machinery the SLURM preset uses, for real, with its local executor."""
    proc = cli(*QUICK, "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2", "hydra.launcher.timeout_min=5")
    study = load_study(proc.run_dir)
    assert states(study) == {"COMPLETE": 2}
    assert all(read_metrics(t.user_attrs[RUN_DIR])["best_val"] == t.value for t in study.trials)


def test_slurm_preset_composes(cli):
    proc = cli("hparams_search=regularization", "hydra/launcher=slurm", "--cfg", "hydra", tiny=False)
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["cpus_per_task"] == 2


@pytest.mark.slow  # a PostgreSQL server and a search whose trials run in joblib's worker processes
def test_a_storage_password_from_the_environment_is_saved_in_no_file(cli, tmp_path, postgres):
    """Hydra saves the sweeper's settings as written (each run's .hydra/hydra.yaml): the
    password given as ${oc.env:VAR} stays unresolved there, and the runs, in other processes, reach the study with
    it; written in the URL, it is refused before anything is made."""
    password = f"pw{os.getpid()}x{time.time_ns()}"  # not in the source either (a run records its patch)
    url = postgres.replace("reg@", "reg:${oc.env:REG_RUNNER_TEST_DB_PASSWORD}@")  # the server trusts loopback
    env = {"REG_RUNNER_TEST_DB_PASSWORD": password}
    sweep = cli(*QUICK, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={url}", "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", "logging.tensorboard=false", env=env, in_process=False).run_dir
    study = optuna.load_study(study_name="quick", storage=postgres)
    assert states(study) == {"COMPLETE": 2}
    saved = [p for p in sweep.rglob("*") if p.is_file()]
    hydra_yaml = [p for p in saved if p.name == "hydra.yaml"]
    assert len(hydra_yaml) == 2 and all("${oc.env:REG_RUNNER_TEST_DB_PASSWORD}" in p.read_text() for p in hydra_yaml)
    assert [p for p in saved if password.encode() in p.read_bytes()] == []
    written = postgres.replace("reg@", f"reg:{password}@")
    proc = cli(*QUICK, f"hydra.sweeper.storage={written}", run_dir=tmp_path / "written", check=False)
    assert proc.returncode == 2 and password not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip().endswith("or in ~/.pgpass or PGPASSWORD for PostgreSQL")
    assert not (tmp_path / "written").exists()
