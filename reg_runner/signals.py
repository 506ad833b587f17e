"""SIGTERM and Ctrl-C: a run ends after its current epoch, with a checkpoint, and can be resumed.

SLURM sends SIGTERM before a time limit; a person presses Ctrl-C. Either ends the run after the
epoch in progress: it writes a checkpoint, records ``status: interrupted``, prints the resume
command and exits with 128 + the signal number. A signal during start-up (the imports, the data) is
kept until the run can act on it: the run then checkpoints its untrained state. A second Ctrl-C
stops at once: every record is written whole (temp file, then rename), so the last checkpoint
stands and the run resumes from it.

The handlers are installed before Hydra makes the run folder (by the run's first callback), so
that no folder exists without a process that records what happened to it.
"""

import os
import signal
import sys
import threading


class StopSignals:
    def __init__(self):
        self.signal, self.previous = None, {}
        self.resume_hint = None  # set once a run exists: the command that continues it

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def install(self) -> "StopSignals":
        if not self.previous and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            hint = (f"; the last checkpoint stands. Resume with: {self.resume_hint}" if self.resume_hint
                    else ", before any run started")
            os.write(2, f"stopped at once by a second Ctrl-C{hint}\n".encode())
            os._exit(128 + signal.SIGINT)
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


STOP = StopSignals()  # one per process: installed early, read by the run


def stop_if_signalled(what: str) -> None:
    """Where no run exists yet (checking a sweep's jobs): a signal ends the command at once."""
    if STOP.signal is not None:
        print(f"interrupted by {STOP.name} while {what}; nothing was started", file=sys.stderr, flush=True)
        sys.exit(128 + STOP.signal)
