"""Write the option table of README.md from the click definitions (between the markers).

    python scripts/readme_options.py          # rewrite README.md
    python scripts/readme_options.py --check  # exit 1 if README.md is out of date
"""

import sys
from pathlib import Path

from normtweak.cli import options_markdown

START, END = "<!-- options:start -->", "<!-- options:end -->"


def main() -> int:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{options_markdown()}\n{END}{tail}"
    if "--check" in sys.argv:
        return 0 if new == text else 1
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
