from mde.cli import main

main()
