"""Hydra's joblib launcher never hangs a command: its workers start without ``fork``, and a signal ends the command
and every worker within seconds, whatever they are doing (reg_runner.sweep.workers). Real processes: a hang, a
signal and a worker are a process's."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from reg_runner.sweep import workers

pytestmark = pytest.mark.slow  # several processes per test

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
BACKENDS = ("loky", "multiprocessing")  # the backends Hydra's joblib launcher offers


def tiny_args(cli) -> tuple:  # noqa: N802
    """The tests' tiny data, in batches of 25 (its files are not MNIST's: unverified)."""
    return (f"data.root={cli.data}", "data.verify=false", "data.train_fraction=0.2", "trainer.batch_size=25")


def alive(pids) -> set[int]:
    return {pid for pid in pids if workers.alive(pid)}


def start(cli, *overrides, env=None) -> subprocess.Popen:
    """The command as a user starts it in a terminal: the leader of its own process group."""
    argv = [sys.executable, "-m", "reg_runner", *overrides]
    return subprocess.Popen(argv, cwd=cli.tmp_path, env={**cli.env, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition, proc, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)


STUCK = '''
"""A network whose training step never returns in a worker process, and that ignores SIGTERM and Ctrl-C there:
a worker stuck for good, as a deadlock would leave it."""
import os, signal, sys, time
from pathlib import Path

from torch import nn

from reg_runner.model import ModelFamily


class Stuck(nn.Module):
    def __init__(self, n_in, n_classes):
        super().__init__()
        self.linear = nn.Linear(n_in, n_classes)

    def forward(self, x):
        if self.training and os.environ.get("REG_RUNNER_COMMAND") != str(os.getpid()):  # in a worker, training
            signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))
            Path(os.environ["STUCK_MARK"], str(os.getpid())).touch()
            time.sleep(600)
        return self.linear(x.flatten(1))


class StuckFamily(ModelFamily):
    def plain(self, shape, n_classes):
        import math
        return Stuck(math.prod(shape), n_classes)
'''


def test_sigterm_ends_a_multirun_whose_worker_is_stuck(cli, tmp_path):
    """SIGTERM to the command (SLURM's, ``timeout``'s): the command passes it on, kills the worker that cannot act on
    it, and ends within seconds with one line; no worker, fork server or resource tracker is left."""
    (tmp_path / "families" / "model").mkdir(parents=True)
    (tmp_path / "families" / "stuck_family.py").write_text(STUCK)
    (tmp_path / "families" / "model" / "stuck.yaml").write_text("_target_: stuck_family.StuckFamily\n")
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = start(cli, "--multirun", *tiny_args(cli), "trainer.epochs=1", "seed=0,1", "model=stuck",
                 f"hydra.searchpath=[file://{tmp_path / 'families'}]",
                 *JOBLIB, "hydra.launcher.backend=multiprocessing", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                 env={"PYTHONPATH": str(tmp_path / "families"), "STUCK_MARK": str(marks)})
    wait_for(lambda: len(list(marks.iterdir())) == 2, proc)  # both workers stuck, SIGTERM blocked
    under = workers.descendants(proc.pid)
    assert {int(p.name) for p in marks.iterdir()} <= under
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.startswith(("interrupted", "Traceback", "Exception"))]
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert lines == ["interrupted by SIGTERM while runs trained in worker processes: each stopped with a checkpoint "
                     "(resume it), or before it started"], err[-3000:]  # the stuck workers could not act: killed
    # at once, not after the grace (the line would say how many were killed after it); no clock is read
    deadline = time.monotonic() + 10  # the resource trackers end once the processes they served have
    while alive(under) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(under), [open(f"/proc/{p}/cmdline").read() for p in alive(under)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_ends_a_multirun_and_its_workers_with_their_checkpoints(cli, tmp_path, backend):
    """Ctrl-C reaches the command's whole process group, as a terminal sends it: each run ends after its epoch with a
    checkpoint, the command says so in one line, and nothing of it is left running. With loky, the first job's worker
    has finished it and waits for another, which it ends at once."""
    sweep = tmp_path / "sweep"
    jobs = ("trainer.epochs=1,500",) if backend == "loky" else ("trainer.epochs=500", "seed=0,1")
    proc = start(cli, "--multirun", *tiny_args(cli), *jobs, "logging.tensorboard=false", *JOBLIB,
                 f"hydra.launcher.backend={backend}", f"hydra.sweep.dir={sweep}")
    trained = lambda: [h for h in sweep.glob("*/history.csv") if len(h.read_text().splitlines()) > 1]  # noqa: E731
    statuses = lambda: sorted(json.loads(m.read_text())["status"] for m in sweep.glob("*/metrics.json"))  # noqa: E731
    # both runs past their first epoch; with loky, the first one's ended
    wait_for(lambda: len(trained()) >= 2 and (backend != "loky" or "completed" in statuses()), proc, timeout=180)
    under = workers.descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGINT while runs trained in worker processes")
    assert statuses() == (["completed", "interrupted"] if backend == "loky" else ["interrupted"] * 2), statuses()
    deadline = time.monotonic() + 10
    while alive(under) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(under)


def test_sigterm_ends_a_submitit_local_search_and_its_jobs_with_their_checkpoints(cli, tmp_path):
    """submitit's local executor (``hydra/launcher=submitit_local``) runs each job in processes of its own, as
    joblib's workers: SIGTERM to the command is passed on to them, each run ends with a checkpoint, and the command
    ends within seconds with one line, not after its jobs have trained; nothing of it is left running."""
    sweep = tmp_path / "sweep"
    proc = start(cli, "--multirun", "hparams_search=quick", "data.val_size=null", *tiny_args(cli), "trainer.epochs=500",
                 "logging.tensorboard=false", "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep}")
    trained = lambda: [h for h in sweep.glob("*/history.csv") if len(h.read_text().splitlines()) > 1]  # noqa: E731
    wait_for(lambda: len(trained()) == 2, proc, timeout=180)  # both jobs past their first epoch
    under = workers.descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == ("interrupted by SIGTERM while runs trained in worker processes: each "
                                            "stopped with a checkpoint (resume it), or before it started"), err[-3000:]
    metrics = [json.loads(m.read_text()) for m in sweep.glob("*/metrics.json")]
    assert [m["status"] for m in metrics] == ["interrupted"] * 2 and all(m["epochs_run"] < 500 for m in metrics)
    deadline = time.monotonic() + 10
    while alive(under) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(under), [open(f"/proc/{p}/cmdline").read() for p in alive(under)]


LOOP = 2  # launches in one process: the second reuses what the first left (fork server, executor)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_joblib_multirun_always_returns(cli, tmp_path, backend):
    """The multirun that hung one time in fifteen when its workers were forked from the command, run LOOP times in
    one process (a pytest worker's, with its own threads: the hazard of a fork) through the command's entry point:
    each returns, its two runs completed, and the command forked no process at all (``os.register_at_fork``
    counts every fork it makes: a start method that forks would be seen at the first launch, not one time in
    fifteen). The workers share the cores: loky limits its workers' thread pools to cores // n_jobs by itself
    (threadpoolctl), the multiprocessing backend does not, and there the share is reg_runner's own setting
    (reg_runner.cli.main); the environment's thread count, which a worker would keep, is not the share."""
    share = max(1, (os.cpu_count() or 1) // 2)
    loop = textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        from hydra.core.global_hydra import GlobalHydra
        from reg_runner import cli
        forks = []
        os.register_at_fork(before=lambda: forks.append(os.getpid()))
        for i in range({LOOP}):
            GlobalHydra.instance().clear()
            sweep = Path({str(tmp_path)!r}) / f"sweep{{i}}"
            sys.argv = ["reg_runner", "--multirun", "seed=0,1", *{JOBLIB!r}, "hydra.launcher.backend={backend}",
                        *{tiny_args(cli)!r}, "trainer.epochs=1", "logging.tensorboard=false", "logging.progress=false",
                        f"hydra.sweep.dir={{sweep}}"]
            try:
                cli.entry()
            except SystemExit as e:
                assert not e.code, e.code
            statuses = [json.loads(m.read_text())["status"] for m in sweep.glob("*/metrics.json")]
            assert statuses == ["completed", "completed"], (i, statuses)
            threads = sorted(json.loads(e.read_text())["torch_threads"] for e in sweep.glob("*/environment.json"))
            print("returned", i, "forks", len(forks), "threads", threads, flush=True)
    """)
    env = {**cli.env, "OMP_NUM_THREADS": str(share + 2)}
    proc = subprocess.run([sys.executable, "-c", loop], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=LOOP * 60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("returned")] == [
        f"returned {i} forks 0 threads {[share, share]}" for i in range(LOOP)], proc.stdout[-3000:]


def test_a_workers_job_hands_the_signals_back_as_it_ends(cli, monkeypatch):
    """A worker process (joblib's) waits for its next job with the handlers that end it as a worker ends
    (``signals.end``, then ``settle``): its run's (``STOP``) would only note its command's signal, and the command
    would wait ``GRACE`` seconds for it and count it killed."""
    from reg_runner import cli as cli_lib
    from reg_runner import run
    from reg_runner.signals import STOP

    after = []
    task = cli_lib.Task.__call__

    def call(self, cfg):
        value = task(self, cfg)
        after.append(signal.getsignal(signal.SIGTERM))
        return value

    def waiting(signum, frame):  # the handler the process had before its job
        pass

    monkeypatch.setattr(run, "in_worker", lambda: True)  # this process, as a worker sees itself
    monkeypatch.setattr(cli_lib.Task, "__call__", call)
    monkeypatch.setattr(STOP, "previous", {})  # what another test's direct calls may have left
    before = signal.signal(signal.SIGTERM, waiting)
    try:
        cli("--multirun", "seed=0", "trainer.epochs=1")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert after == [waiting]  # its run's STOP._handle no longer


WRITERS = '''
import os, signal, sys, threading, time
from pathlib import Path

from joblib.externals.loky import get_reusable_executor

from reg_runner import signals
from reg_runner.sweep import workers


def run(delay, out):
    """A worker's run: SIGTERM stops it, its records take ``delay`` seconds to write, then it ends as a run does."""
    def stop(signum, frame):
        time.sleep(delay)
        Path(out).write_text("recorded")
        signals.settle(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    Path(out + ".pid").write_text(str(os.getpid()))
    Path(out + ".started").touch()
    time.sleep(60)


def hold(quick):
    """The worker ``quick`` takes end_workers' SIGTERM, then waits 2 s before its handler runs, as a loaded machine
    can hold it: SIGSTOP comes before it runs (it waits on this thread's CPU, in the idle class), SIGCONT 2 s later."""
    send, every = workers._send, os.sched_getaffinity(0)
    cpu = {min(every)}

    def held(pid, sig):
        if pid != quick or sig != signal.SIGTERM:
            return send(pid, sig)
        os.sched_setaffinity(pid, cpu)
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        os.sched_setaffinity(0, cpu)
        send(pid, sig)
        os.kill(pid, signal.SIGSTOP)
        os.sched_setaffinity(0, every)
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(pid, every)
        threading.Timer(2.0, os.kill, (pid, signal.SIGCONT)).start()

    workers._send = held


if __name__ == "__main__":
    executor = get_reusable_executor(max_workers=2)
    outs = [f"{sys.argv[1]}/{i}" for i in range(2)]
    for out, delay in zip(outs, (0.0, 1.5)):
        executor.submit(run, delay, out)
    while not all(Path(out + ".started").exists() for out in outs):
        time.sleep(0.05)
    if sys.argv[2:] == ["held"]:
        hold(int(Path(outs[0] + ".pid").read_text()))
    print("could still act:", workers.end_workers(os.getpid()), flush=True)
    os._exit(0)
'''


@pytest.mark.parametrize("held", [False, True])
def test_a_worker_that_ended_first_waits_for_the_others_records(tmp_path, held):
    """loky kills a pool's other workers as soon as one ends: a worker whose run has written its records waits
    (``signals.settle``), and the command ends them together once none is still writing, within the grace. ``held``:
    a worker that has taken the signal and not run its handler yet, which /proc shows with SIGTERM blocked (the
    kernel's, while a handler starts), is waited for: it is no worker that cannot act (read so in the instant after
    the SIGTERM, both workers of this test were once killed before their records, in the full suite)."""
    script = tmp_path / "writers.py"
    script.write_text(WRITERS)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"} if held else None  # numpy's thread could take the signal
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), *(["held"] if held else [])],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["could still act: 0"], proc.stdout + proc.stderr[-3000:]
    assert [(tmp_path / str(i)).read_text() for i in range(2)] == ["recorded", "recorded"]


def test_the_start_method_is_put_back_after_a_launch():
    """The multiprocessing backend's workers come from a fork server during the launch only: the process's own
    start method is left as it was."""
    before = multiprocessing.get_start_method(allow_none=True)
    with workers.launched({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                           "backend": "multiprocessing", "n_jobs": 2}):
        assert multiprocessing.get_start_method() == workers.START_METHOD
        assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # workers started now inherit the block
    assert multiprocessing.get_start_method(allow_none=True) == before
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
