from reg_runner.cli import entry

entry()
