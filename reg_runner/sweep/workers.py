"""Hydra's joblib launcher: workers started without ``fork``; they, and submitit_local's jobs, end with their command.

- **fork.** joblib's ``multiprocessing`` backend starts a worker per job, which a fork from the command could leave
  waiting forever on a lock another thread held (docs/search.md): its workers are forked from a server that has
  loaded reg_runner and runs no Python thread (``reg_runner.fork_server``). loky never forks.
- **A signal**: docs/reliability.md, "Worker processes" (``GRACE``: the wait). While a launch runs, the main thread
  blocks SIGTERM and SIGINT, so that joblib's threads and workers inherit the block (a worker still importing
  would print a traceback); a thread started before the block takes the command's signals, and Python runs the
  handler in the main thread, which joblib's wait for results leaves every 10 ms.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner.signals import SIGNALS, STOP, stop_if_signalled

GRACE = 5.0  # seconds the workers have, after a signal, to end their runs with a checkpoint before a SIGKILL
START_METHOD = "forkserver"  # joblib's multiprocessing backend: workers forked from a server, never the command


def joblib_workers(launcher) -> int | None:
    """How many worker processes the joblib launcher runs at once, or None for another launcher."""
    if not str((launcher or {}).get("_target_", "")).endswith("JoblibLauncher"):
        return None
    n, cores = launcher.get("n_jobs", -1), os.cpu_count() or 1
    return max(1, n if n > 0 else cores + 1 + n)


@contextlib.contextmanager
def launched(launcher: dict):
    """Around ``launcher.launch(...)``: joblib's workers started without ``fork``; they, and submitit_local's jobs,
    ended with the command (see the module's docstring); any other launcher (SLURM's jobs run elsewhere) runs as is."""
    local = joblib_workers(launcher) is not None or str(launcher.get("_target_")).endswith(".LocalLauncher")
    if not local or threading.current_thread() is not threading.main_thread():
        yield
        return
    method = multiprocessing.get_start_method(allow_none=True)
    if (launcher.get("backend") or "loky") == "multiprocessing":
        multiprocessing.set_start_method(START_METHOD, force=True)
        # the server loads what each job imports (reg_runner's signal handling, torch, Hydra) and computes nothing;
        # its one other thread is OpenBLAS's idle one (numpy's), which OpenBLAS itself stops around a fork
        multiprocessing.set_forkserver_preload(["reg_runner.fork_server"])
    # workers a signal stops leave their semaphores and memory-mapped folders to the resource trackers, which clean
    # them up and say so in two lines of warning: the command's one line says what happened
    for tracker in ("multiprocessing.resource_tracker", "joblib.externals.loky.backend.resource_tracker"):
        if f"ignore::UserWarning:{tracker}" not in sys.warnoptions:
            sys.warnoptions.append(f"ignore::UserWarning:{tracker}")  # passed to a tracker's process as it starts
    done = threading.Event()
    receiver = threading.Thread(target=done.wait, name="reg_runner signals", daemon=True)
    receiver.start()  # started before the block: the command's signals are delivered to it
    handlers = {sig: signal.signal(sig, _end_with_workers) for sig in SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}  # a job started in the background ignores Ctrl-C
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        done.set()
        multiprocessing.set_start_method(method, force=True)


def launch_with_signals(config, start, what: str, outcome: str):
    """``start()`` (a launch) inside ``launched``; its result. A signal that stopped the launcher before a run could
    say so ends the command in one line: while ``what``; ``outcome`` (a run's ``SystemExit`` passes)."""
    try:
        with launched(OmegaConf.to_container(config.hydra.launcher, resolve=True)):
            return start()
    except Exception:
        if STOP.signal is None:
            raise
        stop_if_signalled(what, outcome)


def _end_with_workers(signum, frame) -> None:
    # the pool's threads, which go on meanwhile, fail to start workers once the fork server has stopped: the
    # command ends, and its line says how
    threading.excepthook = lambda args: None
    left = end_workers(os.getpid())
    killed = f"; {left} worker(s) had not ended within {GRACE:g} s and were killed" if left else ""
    os.write(2, f"interrupted by {signal.Signals(signum).name} while runs trained in worker processes: each stopped "
                f"with a checkpoint (resume it), or before it started{killed}\n".encode())
    os._exit(128 + signum)


def end_workers(parent: int) -> int:
    """SIGTERM to every process under ``parent`` (resource trackers aside: they end when the processes they serve
    have); once none can act on it any more (ended, or signals ignored: its run's records written,
    ``signals.settle``; or SIGTERM blocked since before it was sent: not started, or stuck), or after ``GRACE``
    seconds, SIGKILL to all left, together (loky kills a pool's other workers as soon as one ends, before their runs
    record their end). Returns how many could still act.

    A block seen only after the signal was sent is not one: the kernel blocks a signal while its handler starts (the
    C one, before the run's in Python), and on a loaded machine a process can wait there."""
    deadline, sent, held = time.monotonic() + GRACE, set(), set()
    while True:
        workers = {pid for pid in descendants(parent) if not _is_tracker(pid)} | sent
        running = {pid for pid in workers if alive(pid)}
        new = running - sent
        held |= {pid for pid in new if _sigterm(pid)[0]}  # blocked before the signal: not started, or stuck
        for pid in new:
            _send(pid, signal.SIGTERM)
        sent |= new
        status = {pid: _sigterm(pid) for pid in running}  # (blocked, ignored)
        held -= {pid for pid, (blocked, _) in status.items() if not blocked}
        # a block is trusted once it has lasted a poll
        acting = {pid for pid, (_, ignored) in status.items() if not (ignored or (pid in held and pid not in new))}
        if not acting or time.monotonic() > deadline:
            for pid in running:
                _send(pid, signal.SIGKILL)
            return len(acting)
        time.sleep(0.05)


def descendants(parent: int) -> set[int]:
    """The processes under ``parent``: its children, theirs, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else ():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    if not children:  # no /proc: the processes this one started
        return {p.pid for p in multiprocessing.active_children()}
    found, todo = set(), [parent]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def alive(pid: int) -> bool:
    """Running (an ended child that its parent has not reaped yet is a zombie: it holds nothing)."""
    state = _status(pid).get("State")
    if state is not None:
        return not state.startswith(("Z", "X"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        pass
    return True


def _sigterm(pid: int) -> tuple[bool, bool]:
    """SIGTERM blocked (by its main thread, which runs Python's handlers), and ignored (``signals.settle``)."""
    status, bit = _status(pid), 1 << (signal.SIGTERM - 1)
    return bool(int(status.get("SigBlk", "0"), 16) & bit), bool(int(status.get("SigIgn", "0"), 16) & bit)


def _is_tracker(pid: int) -> bool:
    """multiprocessing's or loky's resource tracker (``-c 'from ...resource_tracker import main; main(fd)'``)."""
    try:
        return b"resource_tracker import main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
