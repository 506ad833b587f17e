from reg_runner import signals
from reg_runner.report import main

main()
signals.finish(0)  # a signal until the exit is said (no interpreter teardown)
