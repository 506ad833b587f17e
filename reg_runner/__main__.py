from reg_runner.cli import command

command()
