"""The README and the documentation site (issue 42): the site builds with `mkdocs build --strict`
(no broken link or missing page, every command in the CLI reference), and every `genaug ...`
command line written in the README or the docs parses against the CLI (nothing runs)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import click
import pytest

from conftest import REPO
from genaug.cli import main

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def command_lines(text: str) -> list[str]:
    """`genaug ...` lines of code blocks (continuations joined, comments dropped) and inline code spans
    that are whole commands (no placeholders such as [...] or ...)."""
    found = []
    placeholder = re.compile(r"\[|\.\.\.|\||<|>")  # a synopsis (`[--k 5]`, `...`), not a command
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip().removeprefix("$ ")
            if line.startswith("genaug ") and not placeholder.search(line):
                found.append(line)
    for span in re.findall(r"`(genaug [^`]+)`", text):
        span = " ".join(span.split())
        if not placeholder.search(span):
            found.append(span)
    return found


def parse_error(line: str) -> str | None:
    """Why `line` does not parse against the CLI (an unknown command or option), or None. Values
    are not judged (a documented folder need not exist here)."""
    args = shlex.split(line)[1:]
    try:
        ctx = main.make_context("genaug", list(args), resilient_parsing=True)
        name, cmd, rest = main.resolve_command(ctx, ctx.protected_args + ctx.args)
        if cmd is None:
            return f"No such command {name!r}"
        cmd.make_context(name, rest, parent=ctx, resilient_parsing=False)
    except click.NoSuchOption as e:
        return e.format_message()
    except click.UsageError as e:
        message = e.format_message()
        if "No such command" in message or "unexpected extra argument" in message:
            return message
    except click.exceptions.Exit:
        pass
    return None


def test_every_documented_command_line_parses():
    lines = {(path.relative_to(REPO).as_posix(), line) for path in DOCS for line in command_lines(path.read_text())}
    assert len(lines) >= 10  # the README's three commands and the guide's
    bad = [(where, line, why) for where, line in sorted(lines) if (why := parse_error(line))]
    assert not bad, bad


def test_the_checker_catches_a_renamed_option_and_command():
    assert parse_error("genaug headroom --data x --per-class 50 --out exp") is None
    assert "--per-klass" in parse_error("genaug headroom --data x --per-klass 50 --out exp")
    assert "No such command" in parse_error("genaug headroomz --data x")


@pytest.mark.slow
def test_site_builds_strictly_with_every_command(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=REPO,
                       capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for name in main.commands:
        assert f"genaug {name}" in cli, name
    assert "train_classifier" in (site / "reference" / "api" / "index.html").read_text()


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 160
