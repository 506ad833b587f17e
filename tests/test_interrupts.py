"""Ctrl-C and SIGTERM at any moment, in every entry point: one line, exit 128 + the signal, no traceback,
no empty folder of the command's left behind. Real processes (a signal is a process's), at seeded random
instants: in the first instant (the imports, before any folder exists), and in the middle of the work."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

pytestmark = pytest.mark.slow  # every test signals real processes at random instants

RNG = random.Random(26)


def start(cli, *argv, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *map(str, argv)], cwd=cli.tmp_path, env={**cli.env, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ended(proc: subprocess.Popen, sig: int) -> str:
    """The process's stderr, once it ended on ``sig`` with its one line and exit code."""
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + sig and "Traceback" not in out + err, (proc.returncode, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signal.Signals(sig).name}"), err
    return lines[0]


def wait_for(condition, proc: subprocess.Popen, timeout=60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data) -> tuple:
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("interrupts"), tiny_data)
    return cli, cli("trainer.epochs=2", "logging.tensorboard=false").run_dir


ENTRY_POINTS = {  # each command as a user types it, with what it would write
    "run": lambda d, run: ["reg_runner", f"hydra.run.dir={d}"],
    "multirun": lambda d, run: ["reg_runner", "--multirun", "seed=0,1", f"hydra.sweep.dir={d}"],
    "search": lambda d, run: ["reg_runner", "--multirun", "hparams_search=quick", "data.val_size=null",
                              f"hydra.sweep.dir={d}"],
    "resume": lambda d, run: ["reg_runner.resume", run],
    "lr_find": lambda d, run: ["reg_runner.lr_find", f"hydra.run.dir={d}"],
    "landscape": lambda d, run: ["reg_runner.landscape", run, "--out", d],
    "report": lambda d, run: ["reg_runner.report", run.parent, "--out", d],
    "data": lambda d, run: ["reg_runner.data", "place"],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_signal_in_the_first_instant(finished, entry):
    """Before the handlers of a run exist, while Python imports Hydra and torch (0.2-0.4 s in: on a fast machine
    the command may be checking, or starting its run, by then)."""
    cli, run = finished
    folder = cli.tmp_path / f"first_{entry}"
    sig = RNG.choice([signal.SIGINT, signal.SIGTERM])
    data = [f"data.root={cli.data}", *TINY] if entry in ("run", "multirun", "search", "lr_find") else []
    proc = start(cli, *ENTRY_POINTS[entry](folder, run), *data, env={"DATAMAESTRO_DIR": str(folder)})
    time.sleep(RNG.uniform(0.2, 0.4))
    assert proc.poll() is None
    proc.send_signal(sig)
    line = ended(proc, sig)
    if "Resume with: python -m reg_runner.resume" in line:  # a quiet machine: the run had made its folder (once
        assert folder.exists() and entry in ("run", "multirun", "search"), line  # Hydra is in, before torch is)
        return
    # the imports (the usual case), or, on a faster machine, the checks or a run's start-up: nothing is left
    before = ("before anything was written", "nothing was written", "nothing was started", "before the run started")
    assert line.endswith(before) or "before the run started; its folder" in line, line
    assert not folder.exists()


def test_landscape_out_stopped_while_it_computes(finished):
    """The folder --out made is removed: it holds nothing yet."""
    cli, run = finished
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = cli.tmp_path / f"landscape_{sig}" / "out"
        # 201 x 201 points: seconds of computing on the tiny data, so the signal comes before the writing
        proc = start(cli, "reg_runner.landscape", run, "--grid", "201", "--out", out)
        wait_for(out.exists, proc)
        time.sleep(RNG.uniform(0, 0.3))
        proc.send_signal(sig)
        line = ended(proc, sig)
        if line.endswith(f"after the landscape was written: {out}"):  # a machine fast enough to finish first
            assert {p.suffix for p in out.iterdir()} >= {".json", ".png"}, line
            continue
        assert line.endswith("before the landscape was written; nothing was written"), line
        assert not out.exists() and not out.parent.exists()


def test_report_stopped_while_it_draws(finished):
    """All of the report's files, or none of them and no folder."""
    cli, run = finished
    out = cli.tmp_path / "report_out"
    proc = start(cli, "reg_runner.report", run.parent, "--out", out)
    wait_for(out.exists, proc)
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=120) == 0:  # it had written everything and was ending: the signal is not its concern
        out_text, err = proc.communicate()
        assert "Traceback" not in out_text + err and err.strip().endswith(f"written: {out / 'report.md'}"), err
        assert {"report.md", "report.csv"} <= {p.name for p in out.iterdir()}
        return
    line = ended(proc, signal.SIGTERM)
    if out.exists():
        assert line.endswith(f"after the report was written: {out / 'report.md'}") and {"report.md", "report.csv"} <= {
            p.name for p in out.iterdir()}
    else:
        assert line.endswith("before the report was written; nothing was written")


def test_a_search_stopped_between_batches_cuts_no_trial(finished):
    cli, _ = finished
    sweep = cli.tmp_path / "search"
    proc = start(cli, "reg_runner", "--multirun", f"data.root={cli.data}", *TINY, "hparams_search=quick",
                 "data.val_size=null", "trainer.epochs=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=50",
                 f"hydra.sweep.dir={sweep}")
    wait_for(lambda: any(json.loads(p.read_text()).get("status") == "completed"
                         for p in sweep.glob("*/metrics.json") if p.stat().st_size), proc)
    proc.send_signal(signal.SIGINT)
    line = ended(proc, signal.SIGINT)
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")]
    if "while the search ran" in line:  # between two trials: the next one was not asked
        assert "no trial was cut" in line and set(statuses) == {"completed"}
    else:  # in a trial's run: it stopped after its epoch, resumable
        assert "checkpoint saved" in line and statuses.count("interrupted") == 1


def test_ctrl_c_before_the_run_recorded_anything_removes_its_folder(finished):
    cli, _ = finished
    folder = cli.tmp_path / "twice"
    proc = start(cli, "reg_runner", f"data.root={cli.data}", *TINY, f"hydra.run.dir={folder}")
    wait_for(folder.exists, proc)
    proc.send_signal(signal.SIGINT)  # during start-up: at once
    proc.send_signal(signal.SIGINT)  # after the end, or a second Ctrl-C: at once either way
    out, err = proc.communicate(timeout=60)
    if (folder / "metrics.json").exists():  # it had recorded its first checkpoint already
        assert proc.returncode in (130,) and "Traceback" not in err
        return
    assert proc.returncode == 130 and err.strip().splitlines()[-1] in (
        f"interrupted by SIGINT before the run started; its folder {folder} was removed",
        f"stopped at once by a second Ctrl-C, before any run started; its folder {folder} was removed")
    assert not folder.exists()
    shutil.rmtree(folder, ignore_errors=True)


def test_the_end_of_a_command_imports_nothing(tmp_path):
    """A signal can come in the middle of an import, where importing again fails (a module half-initialized):
    the handler that ends the command removes what it made and says so without importing anything."""
    made = tmp_path / "made"
    made.mkdir()
    code = ("import builtins, sys\n"
            "from reg_runner import atomic, kinds, signals\n"
            "signals._STATE['made'] = [sys.argv[1]]\n"
            "kinds.mark(sys.argv[1], kinds.LANDSCAPE)\n"
            "def no_import(*args, **kwargs):\n"
            "    raise ImportError('an import from a signal handler')\n"
            "builtins.__import__ = no_import\n"
            "signals.end(15)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(made)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 143 and proc.stderr == "interrupted by SIGTERM before anything was written\n", proc.stderr
    assert not made.exists()


def test_a_signal_after_the_command_has_ended_does_not_kill_it_without_a_word():
    """Python's finalization puts the default handlers back: a signal then would kill the process silently,
    its exit code lost. Once its exit functions run, the command has said everything: the signal is ignored."""
    code = ("import atexit, os, signal\n"
            "from reg_runner import signals\n"
            "signals.early()\n"
            "atexit._run_exitfuncs()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "print('ended', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "ended\n" and proc.stderr == "", proc


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=stacked", "hydra.launcher.only_if_faster=false"]],
                         ids=["basic", "stacked"])
def test_a_multirun_stopped_while_its_runs_train_says_so_once(finished, launcher):
    """The run's line (its checkpoint, the resume command) is the command's one line: the sweeper adds none."""
    cli, _ = finished
    sweep = cli.tmp_path / f"mid_{'stacked' if launcher else 'basic'}"
    proc = start(cli, "reg_runner", "--multirun", f"data.root={cli.data}", *TINY, "trainer.epochs=500", "seed=0,1",
                 "logging.tensorboard=false", *launcher, f"hydra.sweep.dir={sweep}")
    wait_for(lambda: any(p.stat().st_size and json.loads(p.read_text()).get("epochs_run", 0) >= 1
                         for p in sweep.glob("*/metrics.json")), proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    line = ended(proc, signal.SIGTERM)
    assert "checkpoint saved. Resume with: python -m reg_runner.resume" in line, line


def _state(pid: int) -> str:
    """A process's state letter (T: stopped, Z: exited), or Z once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_the_data_check_says_a_signal_at_any_instant(tmp_path, monkeypatch):
    """In its first instant, while it checks, and after its last line: there the process is stopped (SIGSTOP) a
    few milliseconds on, signalled and continued, so the signal lands wherever its end had got to. The interpreter's
    teardown (tens of ms, in which no handler runs) passed a signal without a word, exit 0: now the command ends
    without it, and a stop there finds it alive only before its exit."""
    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "store"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line as printed: the test waits for them
    # in a process of its own: datamaestro's context is made once per process, with the store it saw first
    subprocess.run([sys.executable, "-m", "reg_runner.data", "place"], env=env, check=True, capture_output=True)
    for instant, sig in (("first", signal.SIGTERM), ("checking", signal.SIGINT), ("checking", signal.SIGTERM)):
        proc = subprocess.Popen([sys.executable, "-m", "reg_runner.data", "check"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if instant == "first":
            time.sleep(RNG.uniform(0.2, 0.3))
        else:
            assert proc.stdout.readline().startswith("datamaestro store for")
        proc.send_signal(sig)
        assert ended(proc, sig).endswith("before anything was written")
    for attempt in range(8):
        sig = (signal.SIGTERM, signal.SIGINT)[attempt % 2]
        proc = subprocess.Popen([sys.executable, "-m", "reg_runner.data", "check"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while "test_labels.idx" not in proc.stdout.readline():
            pass
        time.sleep(RNG.uniform(0.002, 0.03))
        proc.send_signal(signal.SIGSTOP)
        while _state(proc.pid) not in "TZ":
            time.sleep(0.001)
        if _state(proc.pid) == "Z":  # it had ended before the stop: nothing to signal
            assert proc.wait(timeout=60) == 0
            continue
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        ended(proc, sig)


def test_a_signal_as_a_command_finishes_is_said():
    """Up to its exit: here the signal comes while the output is flushed."""
    code = ("import os, signal, sys\n"
            "from reg_runner import signals\n"
            "signals.early()\n"
            "class Out:\n"
            "    def flush(self):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "sys.stdout = Out()\n"
            "signals.finish(0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 143 and proc.stderr == "interrupted by SIGTERM as the command ended, its work done\n", \
        proc
