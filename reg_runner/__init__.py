"""reg_runner: a Hydra-configured runner for studying regularization on small networks.

The five files from ``python -m reg_runner`` to the training loop: README.md, "Reading the code".
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# A command (python -m reg_runner..., reg-runner): Ctrl-C and SIGTERM end it cleanly from its first instant, before
# its imports (reg_runner.signals); a worker process it starts (joblib's) ends quietly until its run takes the signals
# over. Imported as a library, nothing changes.
_COMMAND = "REG_RUNNER_COMMAND"  # set by a command for the processes it starts
_command = _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "") == "reg-runner"
_worker = not _command and _os.environ.get(_COMMAND) not in (None, str(_os.getpid()))
if _command or _worker:
    import signal as _signal

    def _first(signum, frame):  # the few milliseconds until reg_runner.signals is loaded: nothing exists yet
        if not _worker:
            _os.write(2, f"interrupted by {_signal.Signals(signum).name} before anything was written\n".encode())
        _os._exit(128 + signum)

    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(_sig) is not _signal.SIG_IGN:  # a job started in the background ignores Ctrl-C
            _signal.signal(_sig, _first)
    _os.environ[_COMMAND] = _os.environ.get(_COMMAND) if _worker else str(_os.getpid())
    from reg_runner import signals as _signals

    _signals.early(quiet=_worker)
    if _worker:  # its command started it with the signals blocked (reg_runner.sweep.workers)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGINT, _signal.SIGTERM))
