from reg_runner.landscape import main

main()
