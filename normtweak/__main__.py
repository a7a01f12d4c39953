"""`python -m normtweak ...` is the `normtweak` command."""

from normtweak.cli import main

if __name__ == "__main__":
    main(prog_name="normtweak")
