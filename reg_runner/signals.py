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
        self.resume_hint = "python -m reg_runner.resume <run folder>"

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
            os.write(2, f"stopped at once by a second Ctrl-C; the last checkpoint stands. Resume with: "
                        f"{self.resume_hint}\n".encode())
            os._exit(128 + signal.SIGINT)
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


STOP = StopSignals()  # one per process: installed early, read by the run


def exit_code() -> int:
    return 128 + (STOP.signal or 0)
