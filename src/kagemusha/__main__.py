from kagemusha.cli import main

main()
