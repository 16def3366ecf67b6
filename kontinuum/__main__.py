from kontinuum.cli import main

main()
