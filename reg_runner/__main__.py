from reg_runner import signals
from reg_runner.cli import entry

signals.main(entry)  # entry(), then the exit, without the interpreter's teardown
