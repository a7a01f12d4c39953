from normtweak.cli import main

main()
