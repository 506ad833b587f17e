"""reg_runner: a Hydra-configured runner for studying regularization on small networks."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# A command (python -m reg_runner..., reg-runner): Ctrl-C and SIGTERM end it cleanly from its first
# instant, before its imports (reg_runner.signals). Imported as a library, nothing changes.
if _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "") == "reg-runner":
    from reg_runner import signals as _signals

    _signals.early()
