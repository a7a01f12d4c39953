"""The documentation points at things that exist: every relative Markdown link (and image) in
the README and docs/*.md names a file or folder of the repository, and every `--flag` written
after `normtweak COMMAND` in a page's code (fenced blocks and inline spans) is an option of
that command, as the CLI defines it (`normtweak --help` options before the command)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import click
import pytest

from normtweak.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(
    (ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<"}
NOT_CHECKED_LANGUAGES = {"python", "py", "pycon", "json", "yaml", "toml"}


def split_page(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the prose with fenced code blocks blanked out, [(language, code)] of each block)."""
    prose, blocks, fence, lang, code = [], [], None, "", []
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang, code = m.group(1), m.group(2).lower(), []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and \
                set(line.strip()) == {fence[0]}:
            blocks.append((lang, "\n".join(code)))
            fence = None
            prose.append("")
        elif fence is not None:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    if fence is not None:
        raise AssertionError(f"an unclosed {fence} code block")
    return "\n".join(prose), blocks


def link_targets(text: str) -> list[str]:
    """Every link target of a page outside code (inline, reference-style, HTML)."""
    prose, _ = split_page(text)
    prose = INLINE_CODE.sub("", prose)
    return (INLINE_LINK.findall(prose) + REFERENCE.findall(prose) + HTML.findall(prose))


def local_path(page: Path, target: str) -> Path | None:
    """The file a relative link names (anchors and queries dropped); None for URLs, mail,
    and links within the page."""
    if not target or target.startswith("#") or target.startswith("//") or SCHEME.match(target):
        return None
    target = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not target:
        return None
    if target.startswith("/"):  # GitHub resolves these from the repository root
        return ROOT / target.lstrip("/")
    return page.parent / target


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        path = local_path(page, target)
        if path is not None and not path.exists():
            broken.append(target)
    assert not broken, f"{_rel(page)} links to paths that do not exist: {broken}"


# --- command-line flags --------------------------------------------------------------------


def _opts(params) -> set[str]:
    return {o for p in params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def _takes_value(params, flag: str) -> bool:
    for p in params:
        if isinstance(p, click.Option) and flag in p.opts + p.secondary_opts:
            return not p.is_flag and not p.count
    return False


def command_params(name: str) -> list[click.Parameter]:
    return main.get_command(click.Context(main), name).params


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: fall back to words, dropping a comment
        return re.split(r"\s+#", line, maxsplit=1)[0].split()


def _command_lines(text: str) -> list[tuple[str, bool]]:
    """(line, fenced) for the shell lines of a page: fenced blocks (not Python, JSON, ...)
    with `\\` continuations joined, and inline code spans (fenced False)."""
    prose, blocks = split_page(text)
    lines = []
    for lang, code in blocks:
        if lang not in NOT_CHECKED_LANGUAGES:
            lines += [(line, True) for line in re.sub(r"\\\n", " ", code).splitlines()]
    lines += [(m.group(2), False) for m in INLINE_CODE.finditer(prose)]
    return lines


def flag_problems(text: str) -> list[str]:
    """'normtweak CMD --flag' uses whose flag CMD does not define, and unknown commands in
    code blocks (prose in inline spans may use the word: "normtweak paper tweak")."""
    problems, top = [], main.params
    for line, fenced in _command_lines(text):
        words = _tokens(line)
        starts = [i for i, w in enumerate(words) if w == "normtweak" or w.endswith("/normtweak")]
        if not starts and words and words[0] in COMMANDS and len(words) > 1 \
                and words[1].startswith("--"):
            starts = [-1]  # an inline span such as `export --format float`
        for start in starts:
            i = start + 1
            while i < len(words) and words[i].startswith("-"):  # the group's own options
                flag = words[i].split("=", 1)[0]
                if flag not in _opts(top) | {"--help", "-h"}:
                    problems.append(f"{line.strip()!r}: normtweak has no option {flag}")
                i += 2 if "=" not in words[i] and _takes_value(top, flag) else 1
            if i >= len(words):
                continue
            name = words[i]
            if name not in COMMANDS:
                if fenced and re.fullmatch(r"[a-z][a-z-]*", name):
                    problems.append(f"{line.strip()!r}: no command {name!r}")
                continue
            params = command_params(name)
            known = _opts(params) | {"--help", "-h"}
            for word in words[i + 1:]:
                if word in SEPARATORS or word == "normtweak":
                    break
                flag = word.split("=", 1)[0]
                if flag.startswith("--") and flag not in known:
                    problems.append(f"{line.strip()!r}: `normtweak {name}` has no option {flag}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_flag_after_a_command_is_an_option_of_that_command(page):
    problems = flag_problems(page.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_should():
    """The parsers above, on made-up text: a wrong flag, a wrong command, a broken link."""
    page = ROOT / "docs" / "x.md"
    text = ("See [method](method.md#the-walk), [nothing](nowhere.md), [web](https://x.org), "
            "![img](img/none.png), [top](#top) and `[not a link](nope.md)`.\n\n"
            "```bash\nnormtweak --cache-dir /tmp/c eval --max-windows 0 \\\n    --no-such-flag 1\n"
            "normtweak evaluate --model m\ntorchrun -m normtweak tweak --device cuda  # --fake\n"
            "```\n\n```python\nnormtweak tweak --python-is-not-checked\n```\n\n"
            "`export --gguf-typo Q4_0`, `normtweak --bogus run`, `a normtweak paper tweak`\n")
    missing = [t for t in link_targets(text)
               if (p := local_path(page, t)) is not None and not p.exists()]
    assert missing == ["nowhere.md", "img/none.png"]
    problems = flag_problems(text)
    assert len(problems) == 4, problems
    assert any("`normtweak eval` has no option --no-such-flag" in p for p in problems)
    assert any("no command 'evaluate'" in p for p in problems)
    assert any("`normtweak export` has no option --gguf-typo" in p for p in problems)
    assert any("normtweak has no option --bogus" in p for p in problems)
