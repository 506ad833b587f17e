from reg_runner import signals
from reg_runner.cli import entry

signals.main(entry)
