"""SIGTERM and Ctrl-C: a clean end at any moment, within a step of training (docs/reliability.md).

From a command's first instant (``early``, as the package loads) a signal ends it where it is, in one line (``end``);
files written together wait for it (``deferred``). A run takes signals over (``STOP``, before Hydra makes its
folder: what it does then, docs/reliability.md, "Signals"; once it trains, ``reg_runner.trainer.engine`` stops it).
"""

import atexit
import contextlib
import os
import shutil
import signal
import sys
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT)
NOTHING = "before anything was written"
_STATE: dict = {"what": NOTHING, "made": []}  # what the line says now, the folders made (``command``)
_HELD_BACK: list = []  # signals a ``deferred(hold=True)`` block kept for ``stop_if_caught``
LEFT_OUT = {".hydra", ".lock", "reg_runner.log", "lr_find.log", ".reg_runner_write_test"}  # besides the marker


def early(quiet: bool = False) -> None:
    """A signal ends the command where it is, with one line (``end``), raising nothing into the code it interrupts
    (thrown into an import of a C extension, or a library's ``except``, it would come out as some other error).
    ``quiet``: a worker process of a command (joblib's), which ends without a word: its command speaks."""
    _STATE["quiet"] = quiet
    if threading.current_thread() is threading.main_thread():
        _take(lambda signum, frame: end(signum))
        # registered first, so it runs last: once the command has ended, a signal has nothing left to stop (and
        # with the default handlers Python's finalization puts back, it would kill the process without a word)
        atexit.register(_take, signal.SIG_IGN)
    sys.excepthook = _excepthook


def _take(handler) -> dict:
    """Signals go to ``handler(signum, frame)`` (a job started in the background ignores Ctrl-C: left so); the
    handlers they had, by signal. Only the main thread can set them: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}


def in_worker() -> bool:
    """This process is a worker of a command (joblib's), which speaks for it."""
    return bool(_STATE.get("quiet"))


def _excepthook(kind, value, tb):
    if isinstance(value, KeyboardInterrupt):  # a Ctrl-C before ``early`` (or where Python's own handler is back)
        end(signal.SIGINT)
    sys.__excepthook__(kind, value, tb)


def end(signum: int, what: str | None = None) -> None:
    """The command's end on a signal: temp files in flight and the folders it made that hold nothing yet removed;
    one line; exit 128 + the signal number. It imports nothing: the signal may have come during an import."""
    atomic = sys.modules.get("reg_runner.atomic")
    for tmp in list(getattr(atomic, "IN_FLIGHT", ())):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with contextlib.suppress(Exception):
        remove_empty(_STATE["made"])
        if what is None:
            what = _STATE["what"]() if callable(_STATE["what"]) else _STATE["what"]
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    if _STATE.get("quiet"):
        settle(128 + signum)
    os.write(2, f"interrupted by {signal.Signals(signum).name} {what or NOTHING}\n".encode())
    os._exit(128 + signum)


SETTLE_S = 10.0  # how long an ended worker waits for its command to end it (more than sweep.workers.GRACE)


def settle(code: int) -> None:
    """A worker's end, its run's records written: it ignores signals and waits for its command, which ends all its
    workers together once none can still act (loky kills a pool's other workers as soon as one ends, before their runs
    record their end); exit ``code`` after ``SETTLE_S`` if the command does not (a signal sent to this worker alone)."""
    if threading.current_thread() is threading.main_thread():
        _take(signal.SIG_IGN)
        time.sleep(SETTLE_S)
    os._exit(code)


def finish(code: int) -> None:
    """A command's end once its work is done: output flushed, exit ``code`` without the interpreter's teardown (no
    handler runs there: a signal would pass without a word). A signal until then says the work was done."""
    _STATE.update(what="as the command ended, its work done", made=[])
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def command(what=NOTHING, made: list | None = None):
    """A command's body: what a signal's line says meanwhile (a text, or a function that says it then), and the
    folders it makes (``made``, added to as it runs), which a signal removes while they hold nothing of it yet."""
    before = dict(_STATE)
    _STATE.update(what=what, made=made if made is not None else [])
    try:
        yield
    finally:
        _STATE.update(before)


@contextlib.contextmanager
def _handled_by(handler):
    """Signals go to ``handler(signum, frame)`` while the block runs."""
    previous = _take(handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


@contextlib.contextmanager
def deferred(hold: bool = False):
    """Signals wait until the block ends (files written together: all of them, or none); then one that came ends
    the command, or with ``hold`` waits for ``stop_if_caught`` (the command first says what it did)."""
    caught = []
    with _handled_by(lambda signum, frame: caught.append(signum)):
        yield
    if caught:
        _HELD_BACK.append(caught[0])
        if not hold:
            stop_if_caught()


@contextlib.contextmanager
def at_once(what: str):
    """A block with nothing to lose (checking, before anything is started): a signal ends the command at once,
    ``interrupted by SIG... <what>``, where ``STOP`` would wait; one that came before the block is left to ``STOP``."""
    with _handled_by(lambda signum, frame: end(signum, what)):
        yield


def stop_if_caught() -> None:
    """A signal a ``deferred(hold=True)`` block kept: the command ends now, as the signal's handler would."""
    if _HELD_BACK:
        signum = _HELD_BACK.pop()
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, None)
        else:
            end(signum)


def remove_empty(folders: list) -> None:
    """Remove each folder that holds nothing but a marker, Hydra's files and a lock, deepest first (no import here:
    a signal's handler calls it)."""
    kinds = sys.modules.get("reg_runner.kinds")  # a folder can hold a marker only once kinds is loaded
    allowed = LEFT_OUT | ({kinds.MARKER} if kinds is not None else set())
    for folder in sorted({os.fspath(f) for f in folders}, key=lambda f: f.count(os.sep), reverse=True):
        try:
            names = set(os.listdir(folder))
        except OSError:
            continue
        if names <= allowed:
            shutil.rmtree(folder, ignore_errors=True)


class StopSignals:
    def __init__(self):
        self.signal, self.previous = None, {}
        self.starting = False  # a run is starting (until its engine trains): a signal ends the command at once
        self.resume_hint = None  # set once a run exists: the command that continues it
        self.made: list = []  # folders this process made for a run (removed by a second Ctrl-C while empty)
        self.parents: list = []  # the folders it made above them (removed then if nothing else is in them)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def install(self, starting: bool = False) -> None:
        self.starting = starting
        if not self.previous:
            self.previous = _take(self._handle)

    def _handle(self, signum, frame):
        if self.starting and self.signal is None:
            removed = self._remove_unrecorded()
            end(signum, "before the run started" + self._hint(removed))
        if self.signal is not None and signum == signal.SIGINT:
            removed = self._remove_unrecorded()
            hint = (", before any run started" if removed or not self.resume_hint else "") + self._hint(removed)
            os.write(2, f"stopped at once by a second Ctrl-C{hint}\n".encode())
            os._exit(128 + signal.SIGINT)
        if self.signal is None:  # the first names the stop (a worker gets Ctrl-C, then its command's SIGTERM)
            self.signal = signum

    def _remove_unrecorded(self) -> list:
        """The folders this process made for a run that has recorded no end yet (no metrics.json), removed."""
        removed = []
        for folder in self.made:  # made by this process, under its lock: no run of it recorded yet, no use
            if not any((folder / record).exists() for record in ("metrics.json", "lr_find.json")):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        for parent in reversed(self.parents):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only if empty
        return removed

    def _hint(self, removed: list) -> str:
        if removed:
            return f"; its folder {removed[0]} was removed" if len(removed) == 1 else \
                f"; its folders {', '.join(map(str, removed))} were removed"
        return f"; the last checkpoint stands. Resume with: {self.resume_hint}" if self.resume_hint else ""

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


STOP = StopSignals()  # one per process: installed early, read by the run


def main(function, *args) -> None:
    """A command's main, ended by ``finish`` (torch's teardown takes a second or more); one that used joblib and
    ends normally tears down: joblib's workers are shut down there."""
    try:
        function(*args)
    except SystemExit as e:
        if isinstance(e.code, int) and e.code > 128:
            finish(e.code)
        raise
    if "joblib" not in sys.modules:
        finish(0)


def hand_back(what: str, outcome: str) -> None:
    """A command's runs have ended: a signal ``STOP`` recorded ends the command now, and one from here on ends it
    at once (``early``'s handler, back), each with the line ``interrupted by SIG... while <what>; <outcome>``."""
    _STATE.update(what=f"while {what}; {outcome}", made=[])
    STOP.restore()
    stop_if_signalled(what, outcome)


def stop_if_signalled(what: str, outcome: str = "nothing was started") -> None:
    """Where no run trains (checking a sweep's jobs, between a search's batches): a signal ends the command now."""
    if STOP.signal is not None:
        print(f"interrupted by {STOP.name} while {what}; {outcome}", file=sys.stderr, flush=True)
        sys.exit(128 + STOP.signal)
