"""What the fork server of joblib's multiprocessing backend loads before it forks a worker
(``reg_runner.sweep.workers``): what each job imports, so that a worker need not import it again, and SIGTERM's
default action. The pool ends an idle worker with SIGTERM, and waits for it; a Python handler would act only once
the interpreter got to it, and a SIGTERM that reaches a worker in the instant after its fork is dropped by Python
(``PyOS_AfterFork_Child`` clears pending signals): the pool would wait for that worker forever. With the default
action the kernel ends it. A run that a worker trains takes SIGTERM over (``reg_runner.signals.STOP``: the run ends
at its next step or epoch end, with a checkpoint)."""

import signal

import reg_runner.cli  # noqa: F401
import reg_runner.run  # noqa: F401

signal.signal(signal.SIGTERM, signal.SIG_DFL)
