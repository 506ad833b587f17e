from reg_runner.cli import main

main()
