"""What the fork server of joblib's multiprocessing backend (``reg_runner.sweep.workers``) loads before it forks a
worker: what each job imports, and SIGTERM's default action. The pool ends an idle worker with SIGTERM and waits for
it; Python drops a SIGTERM that comes just after the fork (``PyOS_AfterFork_Child`` clears pending signals), and the
pool would wait forever: the kernel's default action ends it. A run a worker trains takes SIGTERM over."""

import signal

import reg_runner.cli  # noqa: F401
import reg_runner.run  # noqa: F401

signal.signal(signal.SIGTERM, signal.SIG_DFL)
