"""SIGTERM and Ctrl-C: a clean end at any moment, and a run that ends after its current epoch.

From a command's first instant (``python -m reg_runner...`` installs ``early`` as the package loads),
a signal raises ``Interrupted`` wherever the command is: what it made unwinds (a temp file, a folder
still empty), and the command ends with one line and exit code 128 + the signal number, never a
traceback.

A run records a signal instead (``STOP``, installed by its first callback, before Hydra makes the run
folder). SLURM sends SIGTERM before a time limit; a person presses Ctrl-C. Either ends the run after
the epoch in progress: it writes a checkpoint, records ``status: interrupted``, prints the resume
command and exits with 128 + the signal number. A signal during start-up (the imports, the data) is
kept until the run can act on it: the run then checkpoints its untrained state. A second Ctrl-C
stops at once: every record is written whole (temp file, then rename), so the last checkpoint
stands and the run resumes from it; a folder this process made whose run has recorded nothing yet
is removed.
"""

import contextlib
import os
import shutil
import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal, raised where the command was (a BaseException: no ``except Exception`` keeps it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum, frame):
    raise Interrupted(signum)


def early() -> None:
    """Signals raise ``Interrupted``; one that reaches the top ends the command with one line."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a job started in the background ignores Ctrl-C
                signal.signal(sig, _raise)
    sys.excepthook = _excepthook


def _excepthook(kind, value, tb):
    if isinstance(value, (Interrupted, KeyboardInterrupt)):
        signum = getattr(value, "signum", signal.SIGINT)
        end(signum, "before anything was written")
    sys.__excepthook__(kind, value, tb)


def end(signum: int, what: str) -> None:
    """The command's last line, and its exit: 128 + the signal number."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os.write(2, f"interrupted by {signal.Signals(signum).name} {what}\n".encode())
    os._exit(128 + signum)


@contextlib.contextmanager
def command(what="before anything was written", made: list | None = None):
    """Run a command's body: a signal ends it with ``interrupted by SIG... <what>`` (``what``: a text, or a
    function that says it then); the folders in ``made`` (which the command made, and may add to while it
    runs) are removed if they hold nothing of the command's yet (only its marker)."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as e:
        remove_empty(made or [])
        end(getattr(e, "signum", signal.SIGINT), what() if callable(what) else what)


_HELD_BACK: list = []  # signals a ``deferred(hold=True)`` block kept for ``stop_if_caught``


@contextlib.contextmanager
def deferred(hold: bool = False):
    """Signals wait until the block ends (a set of files written together: all of them, or none); then one
    that came raises ``Interrupted``, or with ``hold`` waits for ``stop_if_caught`` (the command first says
    what it did)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        if not hold:
            raise Interrupted(caught[0])
        _HELD_BACK.append(caught[0])


def stop_if_caught() -> None:
    """A signal a ``deferred(hold=True)`` block kept: raised now."""
    if _HELD_BACK:
        raise Interrupted(_HELD_BACK.pop())


def remove_empty(folders: list) -> list:
    """Remove each folder that holds nothing but a marker, Hydra's files and a lock (deepest first); the
    folders removed."""
    from pathlib import Path

    from reg_runner.kinds import MARKER

    removed = []
    for folder in sorted({Path(f) for f in folders}, key=lambda p: len(p.parts), reverse=True):
        try:
            names = {p.name for p in folder.iterdir()}
        except OSError:
            continue
        if names <= {MARKER, ".hydra", ".lock", "reg_runner.log", "lr_find.log"}:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class StopSignals:
    def __init__(self):
        self.signal, self.previous = None, {}
        self.resume_hint = None  # set once a run exists: the command that continues it
        self.made: list = []  # folders this process made for a run (removed by a second Ctrl-C while empty)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def install(self) -> "StopSignals":
        if not self.previous and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            removed = []
            for folder in self.made:  # made by this process, under its lock: no run of it recorded yet, no use
                if not any((folder / record).exists() for record in ("metrics.json", "lr_find.json")):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            if self.resume_hint and not removed:
                hint = f"; the last checkpoint stands. Resume with: {self.resume_hint}"
            else:
                hint = ", before any run started" + (f"; its folder {removed[0]} was removed" if removed else "")
            os.write(2, f"stopped at once by a second Ctrl-C{hint}\n".encode())
            os._exit(128 + signal.SIGINT)
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


STOP = StopSignals()  # one per process: installed early, read by the run


def stop_if_signalled(what: str, outcome: str = "nothing was started") -> None:
    """Where no run is training (checking a sweep's jobs, between a search's batches): a signal ends the
    command at once, with one line."""
    if STOP.signal is not None:
        print(f"interrupted by {STOP.name} while {what}; {outcome}", file=sys.stderr, flush=True)
        sys.exit(128 + STOP.signal)
