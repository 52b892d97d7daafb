from nlfit.cli.main import main

main()
