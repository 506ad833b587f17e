from reg_runner.report import main

main()
