from labelwise.cli import main

main()
