from nlfit.cli.app import main

main()
