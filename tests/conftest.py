"""Shared fixtures: tiny IDX data written by the tests, and the commands run through their entry points, in this
process by default (``cli(..., in_process=False)``: a real ``python -m`` process, once per entry point and kind of
behaviour; ``REG_RUNNER_TEST_CLI=subprocess pytest`` runs every command for real)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from reg_runner.data import idx

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):  # tests run in parallel, and commands in a test's process: one torch thread
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (before torch is imported; each worker is a fresh process)
# MNIST's four original files (LeCun's names, .gz): the copy the package ships, so the tests that read a folder of
# them run on a fresh clone, with nothing beside the checkout
ORIGINAL_MNIST = ROOT / "reg_runner" / "data" / "mnist"
N_CLASSES = 10


def make_tiny_mnist(folder: Path, n_train=500, n_test=200, side=8, seed=0, gz=True) -> Path:
    """Learnable fake MNIST: each class is a fixed random pattern plus noise, side x side uint8."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(N_CLASSES, side, side))

    def draw(n):
        labels = np.arange(n) % N_CLASSES
        rng.shuffle(labels)
        noise = rng.normal(0, 60, size=(n, side, side))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return images, labels.astype(np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = draw(n)
        idx.write(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        idx.write(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return folder


def make_tiny_cifar(folder: Path, per_batch=20, n_test=40, seed=0, archive=False) -> Path:
    """Learnable fake CIFAR-10 in its original python format: five pickled training batches of ``per_batch``
    images and a test batch, 3 x 32 x 32 uint8 rows of 3072 bytes (as ``cifar-10-python.tar.gz`` if
    ``archive``, else its ``cifar-10-batches-py`` folder)."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(N_CLASSES, 3 * 32 * 32))

    def batch(n, name):
        labels = np.arange(n) % N_CLASSES
        rng.shuffle(labels)
        data = np.clip(prototypes[labels] + rng.normal(0, 60, size=(n, 3 * 32 * 32)), 0, 255).astype(np.uint8)
        return pickle.dumps({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                             b"filenames": [f"{i}.png".encode() for i in range(n)]}, protocol=2)

    batches = {f"data_batch_{i}": batch(per_batch, f"training batch {i} of 5") for i in range(1, 6)}
    batches["test_batch"] = batch(n_test, "testing batch 1 of 1")
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, raw in batches.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (folder / "cifar-10-batches-py").mkdir(exist_ok=True)
        for name, raw in batches.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(raw)
    return folder


def pytest_collection_modifyitems(config, items):
    """The modules with the most ``slow`` tests first, each module's tests in their order: two workers take whole
    modules from this queue (``--dist loadscope``), and a long module taken last would leave the other worker idle
    at the end. Tests marked ``cuda`` (device claims: ``pytest -m cuda``) are skipped where torch sees no CUDA
    GPU."""
    import collections

    import torch

    slow = collections.Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])  # stable: a module's tests stay together
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `pytest -m cuda` on a machine that has one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class GroupLeader(subprocess.Popen):
    """A process a test starts (``subprocess.run`` and ``Popen`` alike): the leader of its own process group, so that
    what it starts (a multirun's workers, their fork server) can be ended with it."""

    started: list = []

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)
        GroupLeader.started.append(self)


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(monkeypatch):
    """Every process a test starts is killed with its whole process group when the test ends: a command that hangs
    is ended by its ``timeout`` (or pytest-timeout's), and neither it nor its workers outlive the test."""
    import signal

    monkeypatch.setattr(subprocess, "Popen", GroupLeader)
    yield
    for proc in [*GroupLeader.started, *Forked.started]:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader: its workers, a fork server
        except OSError:  # nothing of it is left, or a forked child not yet the leader of its group
            if isinstance(proc, Forked) and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.wait()
    GroupLeader.started.clear()
    Forked.started.clear()


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """What reg_runner remembers (the stacks' exactness checks) goes to a temp folder shared by the session's tests,
    never to the user's own cache."""
    from reg_runner import exactness

    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get(exactness.CACHE_ENV)
    os.environ[exactness.CACHE_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(exactness.CACHE_ENV, None)
    else:
        os.environ[exactness.CACHE_ENV] = before


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


# Small, fast settings for the tiny data: 100 training images in batches of 25, 400 validation (a test's own
# value of one of these keys replaces it: a key given twice on a command line is refused).
TINY = ("data.train_fraction=0.2", "trainer.batch_size=25", "trainer.epochs=2", "data.verify=false")


def tiny(*overrides) -> list[str]:
    """TINY, less the keys ``overrides`` sets, then ``overrides``."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [*(t for t in TINY if t.split("=", 1)[0] not in given), *overrides]


# The tests of stacking stack every exact stack: their runs are too short to repay a stack's check, and the launcher
# would train them lone (what tests/test_stack_cache.py checks)
EVERY_STACK = "hydra.launcher.only_if_faster=false"
IN_PROCESS = os.environ.get("REG_RUNNER_TEST_CLI", "in-process") == "in-process"  # =subprocess: every call for real


class CLI:
    """Runs a command (``python -m reg_runner`` by default), with the datamaestro store in a temp folder."""

    def __init__(self, tmp_path: Path, data: Path | None):
        self.tmp_path, self.data = tmp_path, data
        self.env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        self.env["DATAMAESTRO_DIR"] = str(tmp_path / "datamaestro")
        if os.environ.get("PYTEST_XDIST_WORKER"):  # tests run in parallel: one torch thread per run
            self.env.setdefault("OMP_NUM_THREADS", "1")
        self.count = 0

    def __call__(self, *overrides, run_dir=None, check=True, tiny=True, timeout=300, module="reg_runner", env=None,
                 in_process=None):
        """``in_process``: through the command's entry point in this process (the default), or False: a real
        ``python -m`` process (what start-up, exit codes and other processes' behaviour need: once per entry point
        and kind of behaviour)."""
        if in_process is None:
            in_process = IN_PROCESS
        args = list(overrides)
        multirun = "--multirun" in args or "-m" in args
        if self.data is not None and tiny:
            given = {a.split("=", 1)[0].lstrip("+~") for a in args}
            own = [f"data.root={self.data}", *TINY]
            if module == "reg_runner.lr_find":  # it trains for lr_find.steps, not epochs
                own = [o for o in own if not o.startswith("trainer.epochs=")]
            args = [*(t for t in own if t.split("=", 1)[0] not in given), *args]
        if run_dir is None:
            self.count += 1
            run_dir = self.tmp_path / f"run{self.count}"
        if "hydra/launcher=stacked" in args and not any(a.startswith(EVERY_STACK.split("=")[0]) for a in args):
            args.append(EVERY_STACK)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        args.append(f"{key}={run_dir}")
        if in_process:  # the same command through its entry point in this process: no interpreter start-up
            proc = run_in_process(args, self.tmp_path, {**self.env, **(env or {})}, run_dir, module=module)
            if check and proc.returncode != 0:
                raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode} (in this process):\n"
                                     f"{proc.stderr[-3000:]}")
            return proc
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=self.tmp_path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        proc.run_dir = Path(run_dir)
        if check and proc.returncode != 0:
            raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc


class InProcess:
    """What a command printed and how it ended, as ``subprocess.run`` gives it."""

    def __init__(self, returncode, stdout, stderr, run_dir):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.run_dir = None if run_dir is None else Path(run_dir)


def run_in_process(args: list[str], cwd: Path, env: dict, run_dir, module="reg_runner") -> InProcess:
    """``python -m <module> *args`` in this process: its own entry point (``reg_runner.cli.entry``), with
    ``sys.argv``, the environment, the current folder and stdout/stderr as that command has them; its exit code
    from ``SystemExit``. What the command changes in the process (Hydra's singleton, the signal handlers,
    logging) is put back afterwards."""
    import importlib

    from reg_runner import cli as cli_module

    # what ``python -m`` runs: reg_runner's ``entry()``, or another Hydra main of the config tree through it
    task = {"reg_runner": None, "reg_runner.lr_find": "reg_runner.lr_find.__main__"}[module]
    task = task and importlib.import_module(task).main
    argv0 = str(ROOT / module.replace(".", "/") / "__main__.py")
    return call_in_process(lambda: cli_module.entry(task), [argv0, *args], cwd, env, run_dir)


def call_in_process(main, argv: list[str], cwd: Path, env: dict, run_dir=None) -> InProcess:
    """``main()`` as a command's process runs it: ``sys.argv``, the environment and the current folder as given,
    its stdout and stderr captured, its exit code from ``SystemExit`` (0 if it returns). What a command changes
    in the process (Hydra's singleton, the signal handlers, logging, the excepthook) is put back afterwards."""
    import contextlib
    import io
    import logging
    import signal

    from hydra.core.global_hydra import GlobalHydra

    from reg_runner.signals import STOP

    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_hook = sys.excepthook
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level, {name: (lg.disabled, lg.handlers[:], lg.level, lg.propagate)
                     for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)})
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = list(argv)
        GlobalHydra.instance().clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        GlobalHydra.instance().clear()
        STOP.restore()
        STOP.signal, STOP.resume_hint, STOP.made, STOP.parents = None, None, [], []
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        sys.excepthook = saved_hook
        for handler in root.handlers:
            if handler not in saved_logging[0]:
                handler.close()  # a file handler a command opened in its run folder
        root.handlers[:], root.level = saved_logging[0], saved_logging[1]
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                disabled, handlers, level, propagate = saved_logging[2].get(name, (False, [], logging.NOTSET, True))
                lg.disabled, lg.handlers[:], lg.level, lg.propagate = disabled, handlers, level, propagate
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return InProcess(code, out.getvalue(), err.getvalue(), run_dir)


@pytest.fixture
def cli(tmp_path, tiny_data) -> CLI:
    return CLI(tmp_path, tiny_data)


class Forked:
    """``python -m reg_runner *argv`` in a child forked from this process, with everything already imported: a real
    process to kill with SIGKILL, without an interpreter's start-up (about 2.5 s of CPU). ``Popen``'s ``poll``,
    ``wait``, ``send_signal`` and ``kill``; killed with its process group when the test ends. Its output goes to
    ``log``. Only where torch runs one thread and has not started CUDA (see killable)."""

    started: list = []

    def __init__(self, argv: list[str], cwd: Path, env: dict, log: str = os.devnull, before=None):
        """``before``: called in the child just before the command's entry (e.g. to wait on a gate)."""
        import traceback

        self.returncode = None
        self.pid = os.fork()
        if self.pid:
            Forked.started.append(self)
            return
        code = 99
        try:
            os.setsid()  # its own group, as GroupLeader's processes
            _die_with_parent()  # a test's worker that dies abruptly (a crash, a timeout) leaves no run behind
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # not pytest's capture
            import torch

            torch.set_num_threads(1)  # OpenMP's threads do not survive a fork (a no-op where killable forks)
            if before is not None:
                before()
            from hydra.core.global_hydra import GlobalHydra

            from reg_runner.cli import entry

            GlobalHydra.instance().clear()
            sys.argv = ["reg_runner", *argv]
            try:
                entry()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        import time

        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(f"reg_runner (pid {self.pid})", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux's PR_SET_PDEATHSIG: SIGKILL when the parent ends (a forked child is detached from the worker's group)."""
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the call
        os._exit(1)


def killable(argv: list[str], cwd: Path, env: dict, log: Path | None = None):
    """A run to kill with SIGKILL (``python -m reg_runner *argv``): forked from this process where torch runs one
    thread and has not started CUDA (neither survives a fork; its numbers are then this process's), else a real
    ``python -m`` process. Its output goes to ``log`` (default: nowhere). tests/test_resume.py's SIGKILL test kills
    a real ``python -m`` process."""
    import torch

    if torch.get_num_threads() == 1 and not torch.cuda.is_initialized():
        return Forked(argv, cwd, env, str(log or os.devnull))
    with open(log or os.devnull, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "reg_runner", *argv], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for_epoch(run_dir: Path, epoch: int, proc, timeout=120) -> None:
    """Until the run ``proc`` trains in ``run_dir`` has recorded ``epoch`` epochs (or fail)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((Path(run_dir) / "metrics.json").read_text())["epochs_run"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"the run did not reach epoch {epoch}: {proc.poll()}")


def printed_command(command: str) -> tuple[dict, list[str]]:
    """A command the runner printed (a sweep's re-run line): the environment it sets (``OMP_NUM_THREADS=1``)
    and the overrides after ``python -m reg_runner``."""
    import shlex

    words, env = shlex.split(command), {}
    while words and "=" in words[0] and words[0] != "python":
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[:3] == ["python", "-m", "reg_runner"], command
    return env, words[3:]


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def folder_state(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and modification time (what a command that only reads leaves as it
    was; a file it made, a journal SQLite left, shows as a new key)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timing"}


def write_presets(folder: Path, group: str, presets: dict[str, list[str]]) -> str:
    """Each list of command-line overrides as a preset ``+group=name`` in ``folder``: one multirun process
    then runs variants that differ in several keys (``a.b=v`` sets a value, ``group=option`` chooses one).
    Returns the override that adds ``folder`` to Hydra's search path."""
    import yaml

    (folder / group).mkdir(parents=True, exist_ok=True)
    for name, overrides in presets.items():
        body, defaults = {}, []
        for item in overrides:
            key, _, value = item.partition("=")
            if (ROOT / "conf" / key).is_dir():  # a config group: choose its option
                defaults.append({f"override /{key}": value})
                continue
            node = body
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        text = "# @package _global_\n" + (yaml.safe_dump({"defaults": defaults}) if defaults else "")
        (folder / group / f"{name}.yaml").write_text(text + (yaml.safe_dump(body) if body else ""))
    return f"hydra.searchpath=[file://{folder}]"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on loopback, in a temp dir, stopped after the session (one per pytest worker):
    its ``createdb`` and its URL's stem."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (no initdb)")
    root = Path(tempfile.mkdtemp(prefix="reg_runner_pg_"))
    root.chmod(0o755)
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"

    def pg(*args):
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60)

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "reg", "--auth=trust")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        yield (lambda name: pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "reg", name),
               f"postgresql+psycopg2://reg@127.0.0.1:{port}")
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server, request):
    """A new, empty database on the session's PostgreSQL server: its URL."""
    createdb, stem = postgres_server
    name = "studies_" + "".join(c if c.isalnum() else "_" for c in request.node.name).lower()[:50]
    createdb(name)
    return f"{stem}/{name}"
