"""Nothing lost: a killed run resumes to the same numbers; records are never half-written."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (EVERY_STACK, Forked, call_in_process, folder_state, killable, read_metrics, tiny,
                      wait_for_epoch, without_timing)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from test_tensorboard import hparams_sessions

# every kind of state a resume must restore: dropout and augmentation RNGs, BatchNorm running stats, Adam moments,
# a plateau schedule, early-stopping counters, the batch order, histograms on a schedule
STATEFUL = ("model.dropout=0.2", "model.norm=batchnorm", "augmentation=noise_affine", "scheduler=plateau",
            "scheduler.patience=3", "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=10000",
            "trainer.checkpoint_every=10", "logging.histograms=10", "trainer.epochs=150")


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_run_outlives_its_test():
    """A test that fails half-way must not leave a run training in the background (it would slow every
    later test)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(cli, run_dir: Path, *overrides) -> subprocess.Popen:
    argv = [sys.executable, "-m", "reg_runner", f"data.root={cli.data}", *tiny(*overrides), f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(argv, cwd=cli.tmp_path, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    STARTED.append(proc)
    return proc


def start_to_kill(cli, run_dir: Path, *overrides):
    """A run that only SIGKILL ends: forked from this process (conftest.killable); the real ``python -m`` process
    killed is test_sigkill_then_resume_gives_the_uninterrupted_numbers'."""
    proc = killable([f"data.root={cli.data}", *tiny(*overrides), f"hydra.run.dir={run_dir}"], cli.tmp_path, cli.env)
    STARTED.append(proc)
    return proc


def resume(cli, *run_dirs: Path, check=True, in_process=False) -> subprocess.CompletedProcess:
    """``python -m reg_runner.resume``: a real process, or its main in this process (conftest.call_in_process)
    where the real command's same kind of behaviour is checked by another test."""
    if in_process:
        from reg_runner import resume as resume_module

        proc = call_in_process(lambda: resume_module.main(), ["python -m reg_runner.resume", *map(str, run_dirs)],
                               cli.tmp_path, cli.env)
        assert not check or proc.returncode == 0, proc.stderr[-3000:]
        return proc
    proc = subprocess.run([sys.executable, "-m", "reg_runner.resume", *map(str, run_dirs)], cwd=cli.tmp_path,
                          env=cli.env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_each_epoch_once(run_dir: Path, epochs: int) -> None:
    history = [int(r["epoch"]) for r in csv.DictReader((run_dir / "history.csv").open())]
    assert history == list(range(1, epochs + 1))
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    assert [e.step for e in ea.Scalars("loss/val")] == list(range(1, epochs + 1))
    assert len(hparams_sessions(run_dir)) == 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data):
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("reference"), tiny_data)
    return read_metrics(cli(*STATEFUL).run_dir)


@pytest.mark.slow  # a run killed, resumed, and run uninterrupted
def test_sigkill_then_resume_gives_the_uninterrupted_numbers(cli, tmp_path, reference):
    run_dir = tmp_path / "killed"
    proc = start(cli, run_dir, *STATEFUL)
    wait_for_epoch(run_dir, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_metrics(run_dir)["epochs_run"]
    assert read_metrics(run_dir)["status"] == "running" and 40 <= killed_at < 150

    out = resume(cli, run_dir)
    assert "completed" in out.stdout
    m = read_metrics(run_dir)
    assert without_timing(m) == without_timing(reference)
    resumed_at = m["timing"]["resumed_at"]  # last.pt is written before metrics.json: at or after it
    assert len(resumed_at) == 1 and resumed_at[0] in (killed_at, killed_at + 10)
    assert_each_epoch_once(run_dir, 150)
    assert (run_dir / f"environment_resumed_{resumed_at[0]}.json").exists()


@pytest.mark.slow  # a stack killed, resumed, and its lone runs
def test_a_killed_stack_resumes_to_the_numbers_of_its_lone_runs(cli, tmp_path, reference):
    sweep = tmp_path / "stack"
    argv = [f"data.root={cli.data}", *tiny(*STATEFUL), "--multirun", "seed=0,1", "hydra/launcher=stacked", EVERY_STACK,
            f"hydra.sweep.dir={sweep}"]
    proc = killable(argv, cli.tmp_path, cli.env)
    STARTED.append(proc)
    deadline = time.time() + 180
    while time.time() < deadline:
        runs = sorted(p for p in sweep.glob("*") if p.is_dir())
        try:
            if len(runs) == 2 and all(read_metrics(r)["epochs_run"] >= 40 for r in runs):
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs = sorted(p for p in sweep.glob("*") if p.is_dir())
    assert len(runs) == 2
    assert all(read_metrics(r)["status"] == "running" and read_metrics(r)["epochs_run"] < 150 for r in runs)
    ended = cli("trainer.epochs=2").run_dir  # as a member that early-stopped before the kill: named, left as it is
    record = (ended / "metrics.json").read_bytes()
    out = resume(cli, *runs, ended, in_process=True).stdout  # the two runs resume as one stack again
    assert f"{ended}: finished (completed), left as it is" in out
    assert (ended / "metrics.json").read_bytes() == record
    seed0, seed1 = (next(r for r in runs if read_metrics(r)["seed"] == s) for s in (0, 1))
    assert without_timing(read_metrics(seed0)) == without_timing(reference)
    alone = cli(*STATEFUL, "seed=1").run_dir
    assert without_timing(read_metrics(seed1)) == without_timing(read_metrics(alone))
    for run in runs:
        assert_each_epoch_once(run, 150)
        assert read_metrics(run)["timing"]["stack_size"] == 2


@pytest.mark.slow  # a run signalled, then resumed
def test_sigterm_checkpoints_and_exits_then_resumes(cli, tmp_path, reference):
    run_dir = tmp_path / "terminated"
    proc = start(cli, run_dir, *STATEFUL)
    wait_for_epoch(run_dir, 20, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"Resume with: python -m reg_runner.resume {run_dir}" in err and "Traceback" not in err
    m = read_metrics(run_dir)
    assert m["status"] == "interrupted" and 20 <= m["epochs_run"] < 150

    # a new run never overwrites it
    again = cli(*STATEFUL, run_dir=run_dir, check=False)
    assert again.returncode == 2 and "already holds a run (status interrupted); resume it with" in again.stderr

    resume(cli, run_dir, in_process=True)  # the real command's resume: the SIGKILL test's
    assert without_timing(read_metrics(run_dir)) == without_timing(reference)
    assert_each_epoch_once(run_dir, 150)


@pytest.mark.slow  # a run signalled, then run again
def test_sigterm_during_start_up_ends_at_once_and_leaves_no_folder(cli, tmp_path):
    """Nothing of a starting run is worth keeping: the signal ends the command at once (not after the imports, the
    data and the model), its new folder is removed, and the same command then runs it whole, to the numbers of the
    same command run uninterrupted elsewhere. The command is the tiny 2-epoch run: the signal comes before any
    epoch, so nothing of STATEFUL's (what a resume restores) is in play, and its rerun costs 0.1 s, not 150
    epochs' 1.4 s."""
    run_dir = tmp_path / "early"
    proc = start(cli, run_dir)
    deadline = time.time() + 60
    while not run_dir.exists() and time.time() < deadline:  # Hydra made the folder: torch is still loading
        time.sleep(0.005)
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    waited = time.time() - signalled
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"interrupted by SIGTERM before the run started; its folder {run_dir} was "
                                            "removed")
    assert not run_dir.exists() and waited < 10  # generous: it acts at once, whatever the load
    rerun = read_metrics(cli(run_dir=run_dir).run_dir)
    assert rerun["status"] == "completed" and rerun["epochs_run"] == 2
    assert without_timing(rerun) == without_timing(read_metrics(cli().run_dir))


@pytest.mark.slow  # a forked command signalled
def test_a_signal_as_the_runs_folder_is_made_waits_for_its_lock_then_removes_it_and_says_so(cli, tmp_path):
    """The run's folder is made, locked and known as the run's in one step, the signals held meanwhile: a signal
    the instant the folder is made (a process is often descheduled as a system call returns) ends the command once
    the step is done, removing the folder and the folders made above it, and the line names it."""
    from reg_runner import records

    def signalled_as_made():  # in the child: the signal sent the instant make_folder has made the folder
        make = records.make_folder

        def made_then_signalled(key, path, into=None):
            made = make(key, path, into)
            os.kill(os.getpid(), signal.SIGTERM)
            return made

        records.make_folder = made_then_signalled

    run_dir, log = tmp_path / "above" / "run", tmp_path / "log"
    argv = [f"data.root={cli.data}", *tiny(), f"hydra.run.dir={run_dir}"]
    assert Forked(argv, tmp_path, cli.env, str(log), before=signalled_as_made).wait(timeout=120) == 128 + signal.SIGTERM
    assert log.read_text().strip().splitlines()[-1] == (f"interrupted by SIGTERM before the run started; its folder "
                                                        f"{run_dir} was removed"), log.read_text()[-2000:]
    assert not (tmp_path / "above").exists()


def test_a_signal_during_a_runs_start_up_keeps_what_was_recorded(tmp_path):
    """STOP's start-up branch: a new run's folder that recorded no end is removed; a resumed run's stands."""
    new, old = tmp_path / "new", tmp_path / "old"
    for folder in (new, old):
        (folder / "checkpoints").mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    script = (f"import os, signal; from pathlib import Path; from reg_runner.signals import STOP; "
              f"STOP.install(starting=True); STOP.made += [Path({str(new)!r})]; STOP.resume_hint = 'python -m x'; "
              f"os.kill(os.getpid(), signal.SIGTERM); print('not reached')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (128 + signal.SIGTERM, "")
    assert proc.stderr == f"interrupted by SIGTERM before the run started; its folder {new} was removed\n"
    assert not new.exists()
    script = script.replace(f"STOP.made += [Path({str(new)!r})]; ", "")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and old.exists()
    assert proc.stderr == "interrupted by SIGTERM before the run started; the last checkpoint stands. " \
                          "Resume with: python -m x\n"


@pytest.mark.slow  # a run signalled twice, then resumed
def test_a_second_ctrl_c_stops_at_once_and_the_run_resumes(cli, tmp_path, reference):
    run_dir = tmp_path / "ctrl_c"
    proc = start(cli, run_dir, *STATEFUL)
    wait_for_epoch(run_dir, 20, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and "[INFO]" not in line]
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    again = f"Resume with: python -m reg_runner.resume {run_dir}"
    second = f"stopped at once by a second Ctrl-C; the last checkpoint stands. {again}"
    if lines == [second]:  # the second came mid-epoch: the record stands as last written, no process holds it
        assert read_metrics(run_dir)["status"] == "running"
    elif len(lines) == 2:  # tiny epochs: the run ended its epoch and wrote its checkpoint within the 20 ms, then
        # the second came
        assert lines[0].startswith("interrupted by SIGINT after epoch") and lines[1] == second, err
        assert read_metrics(run_dir)["status"] == "interrupted"
    else:  # the first ended the whole command within the 20 ms; the second came after its end, which ignores it
        assert len(lines) == 1 and lines[0].startswith("interrupted by SIGINT after epoch"), err
        assert lines[0].endswith(again) and read_metrics(run_dir)["status"] == "interrupted"
    resume(cli, run_dir, in_process=True)  # the real command's resume: the SIGKILL test's
    assert without_timing(read_metrics(run_dir)) == without_timing(reference)
    assert_each_epoch_once(run_dir, 150)


@pytest.mark.slow  # runs, each edited and resumed
def test_a_run_resumes_with_the_config_it_started_with_or_not_at_all(cli, tmp_path):
    def one_line(proc, expected):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr

    run_dir = tmp_path / "edited"
    proc = start_to_kill(cli, run_dir, "trainer.epochs=100000", "trainer.checkpoint_every=5")
    wait_for_epoch(run_dir, 5, proc)
    # a second process may not write into a folder a live process is training (each resume below through its main
    # in this process: the real command's refusals are test_bad_resume_folders')
    one_line(resume(cli, run_dir, check=False, in_process=True), "is being trained right now (pid ")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    config = run_dir / "resolved_config.yaml"
    original = config.read_text()
    for edit, expected in (
        (original.replace("epochs: 100000", "epochs: 10"), "was edited after the run started (trainer.epochs: 100000 "
                                                          "in its checkpoint, 10 in the file)"),
        (original.replace("width: 100", "width: 50"), "(model.width: 100 in its checkpoint, 50 in the file)"),
        (original.replace("  lr: 0.001", "  lr: 0.1"), "(optimizer.lr: 0.001 in its checkpoint, 0.1 in the file)"),
        ("seed: [unclosed", "resolved_config.yaml cannot be read as YAML"),
        ("- a\n- list\n", "resolved_config.yaml holds a ListConfig, not a config of keys"),
        (original.replace("  norm: none", "  norm: groupnorm"), "model.norm='groupnorm' is not allowed"),
    ):
        config.write_text(edit)
        one_line(resume(cli, run_dir, check=False, in_process=True), expected)
    config.write_text(original)
    assert read_metrics(run_dir)["status"] == "running"  # untouched by the refusals


@pytest.mark.slow  # a run per kind of damage
def test_bad_resume_folders(cli, tmp_path):
    def one_line(proc, expected):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr

    # the real CLI; the others in this process
    one_line(resume(cli, tmp_path, check=False), "is not a reg_runner run folder")
    finished = cli("trainer.epochs=2").run_dir
    records = folder_state(finished)
    one_line(resume(cli, finished, check=False, in_process=True),
             "holds a finished run (status completed): there is nothing")
    other = cli("trainer.epochs=1").run_dir
    one_line(resume(cli, finished, other, check=False, in_process=True),
             "all 2 runs are finished (completed): there is nothing")
    assert folder_state(finished) == records  # what resume read and refused, it left as it was: no log, no lock

    broken = tmp_path / "broken"
    proc = start_to_kill(cli, broken, "trainer.epochs=100000", "trainer.checkpoint_every=5")
    wait_for_epoch(broken, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = broken / "checkpoints" / "last.pt"
    good = last.read_bytes()
    import torch

    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["model"]["blocks.0.linear.weight"]  # whole, but not this run's network
    torch.save(checkpoint, last)
    one_line(resume(cli, broken, check=False, in_process=True), "does not hold this run's network")
    checkpoint["model"] = torch.load(io.BytesIO(good), weights_only=True)["model"]
    checkpoint["optimizer"]["param_groups"] = []
    torch.save(checkpoint, last)
    one_line(resume(cli, broken, check=False, in_process=True), "checkpoints/last.pt is damaged (ValueError restoring")
    last.write_bytes(good[: len(good) // 2])
    one_line(resume(cli, broken, check=False, in_process=True), "checkpoints/last.pt cannot be loaded")
    last.write_bytes(b"not a checkpoint at all")
    one_line(resume(cli, broken, check=False, in_process=True), "it is damaged or not a reg_runner checkpoint")
    last.write_bytes(b"\x80\x04junk")  # a pickle protocol torch warns about before it fails
    one_line(resume(cli, broken, check=False, in_process=True), "checkpoints/last.pt cannot be loaded")

    # among several folders of other structures, the damaged one is named before any other trains
    other = tmp_path / "other"
    proc = start_to_kill(cli, other, "trainer.epochs=400", "trainer.checkpoint_every=5", "model.width=20")
    wait_for_epoch(other, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_metrics(other)["epochs_run"]
    one_line(resume(cli, other, broken, check=False, in_process=True), "it is damaged or not a reg_runner checkpoint")
    assert read_metrics(other)["epochs_run"] == before and read_metrics(other)["status"] == "running"


# spends its time in write + fsync (the dangerous part), rewriting a 20 MB JSON record in a loop
WRITER = """
import sys
from reg_runner import atomic
padding = b"x" * 20_000_000
i = 0
while True:
    atomic.write_bytes(sys.argv[1], b'{"version": %d, "padding": "' % i + padding + b'"}')
    i += 1
"""


def test_a_kill_during_a_write_leaves_the_previous_complete_file(tmp_path):
    target = tmp_path / "metrics.json"
    kills, mid_write = 0, 0
    while mid_write < 2 and kills < 25:  # until kills have landed inside a write, not just between writes
        leftovers = set(tmp_path.glob(".metrics.json.*.tmp"))
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        deadline = time.time() + 30
        while not target.exists() and time.time() < deadline:  # the first complete version
            time.sleep(0.01)
        time.sleep(0.05 + 0.037 * kills)  # an arbitrary moment, different every time
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += bool(set(tmp_path.glob(".metrics.json.*.tmp")) - leftovers)  # killed inside a write
        record = json.loads(target.read_text())  # never truncated, never missing
        assert len(record["padding"]) == 20_000_000 and isinstance(record["version"], int)
    assert mid_write >= 1, f"no kill out of {kills} landed inside a write"


def test_history_follows_each_evaluation_between_checkpoints(cli, tmp_path):
    """history.csv is the curves so far: rewritten at each evaluation, not only with the checkpoints."""
    run_dir = tmp_path / "follows"
    proc = start_to_kill(cli, run_dir, "trainer.epochs=400", "trainer.checkpoint_every=400",
                         "logging.tensorboard=false")
    deadline, rows = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None and len(rows) < 3:
        try:
            rows = list(csv.DictReader((run_dir / "history.csv").open()))
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3
    assert read_metrics(run_dir)["epochs_run"] == 0  # its checkpoint is still the first one


def test_a_refused_run_advises_resume_only_where_resume_would_take_it(cli, tmp_path):
    import shutil

    from reg_runner.errors import UserError
    from reg_runner.records import RunFolder

    done = cli("trainer.epochs=1", "logging.tensorboard=false").run_dir
    damaged = tmp_path / "damaged"  # its metrics.json unreadable; its checkpoint says it completed
    shutil.copytree(done, damaged)
    (damaged / "metrics.json").write_text("{not json")
    with pytest.raises(UserError) as refused:
        RunFolder(damaged).refuse_existing()
    assert "cannot be resumed" in str(refused.value) and "resume it" not in str(refused.value)
    with pytest.raises(UserError) as by_resume:
        RunFolder(damaged).load_last()
    assert str(by_resume.value) in str(refused.value)  # the same reason, in both
    proc = cli("trainer.epochs=1", run_dir=damaged, check=False)
    assert proc.returncode == 2 and "cannot be resumed" in proc.stderr and "resume it" not in proc.stderr


def test_a_loop_of_links_is_named_not_a_traceback(tmp_path, capsys):
    from reg_runner.resume import main

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "a")])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is not a folder" in lines[0], lines


def test_a_run_whose_last_checkpoint_was_removed_is_not_started_over(cli, tmp_path):
    run_dir = cli("trainer.epochs=2").run_dir
    metrics = read_metrics(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    (run_dir / "checkpoints" / "last.pt").unlink()
    before = (run_dir / "history.csv").read_bytes()
    proc = resume(cli, run_dir, check=False, in_process=True)  # the real command's refusal: test_bad_resume_folders'
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "checkpoints/last.pt is missing, though metrics.json records 2 epochs trained" in lines[0]
    assert (run_dir / "history.csv").read_bytes() == before and read_metrics(run_dir)["status"] == "interrupted"
