"""Every command attn-install suggests (in a hint, warning, blocker or error) runs as printed: each
`attn-install ...` in backticks is parsed by the real command line (options, arguments, choices)."""

from __future__ import annotations

import ast
import re
import shlex
import warnings

import click
import pytest

from attn_installer.cli import cli
from attn_installer.matrix import load_matrix
from tests.conftest import REPO
from tests.machines import MACHINES, planned

COMMAND = re.compile(r"`(attn-install [^`]*)`")


def _messages(path) -> list[str]:
    """The strings of a module that reach the user: those passed to calls and raised (f-string
    fields read as 'x'); docstrings and comments that name a command are not suggestions."""
    texts: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.Call, ast.Raise)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.JoinedStr):
                texts.append("".join(v.value if isinstance(v, ast.Constant) else "x" for v in sub.values))
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                texts.append(sub.value)
    return texts


def suggested() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "attn_installer").rglob("*.py"):
        for text in _messages(path):
            found.update(m.group(1) for m in COMMAND.finditer(text))
    for path in (REPO / "matrices").glob("*.toml"):
        text = re.sub(r"\{[^{}]*\}", "x", path.read_text())  # template placeholders
        found.update(m.group(1) for m in COMMAND.finditer(text))
    for name in MACHINES:
        for workload in ("full", "lora", "inference"):
            p = planned(MACHINES[name], workload=workload)
            for text in (*p.blockers, *p.warnings, *(w for b in p.backends for w in b.warnings),
                         *(r for b in p.backends for r in b.reason_texts)):
                found.update(m.group(1) for m in COMMAND.finditer(text))
    for h in load_matrix().hints:
        found.update(m.group(1) for m in COMMAND.finditer(h.hint))
    return found


COMMANDS = sorted(suggested())


def parse(line: str) -> None:
    """Parse a command line as `attn-install` would, down to the subcommand; raise on any error."""
    words = shlex.split(line)
    shell = next((i for i, w in enumerate(words) if w in (">", ">>", "|", "&&", ";")), len(words))
    args = words[1:shell]  # a redirection or pipe belongs to the shell, not to attn-install
    ctx = cli.make_context("attn-install", list(args), resilient_parsing=False)
    with warnings.catch_warnings():  # click 8.2 deprecates protected_args (click 9 keeps them in args)
        warnings.simplefilter("ignore", DeprecationWarning)
        rest = [*getattr(ctx, "protected_args", []), *ctx.args]
    if rest:
        name, cmd, sub_args = cli.resolve_command(ctx, rest)
        assert cmd is not None, f"no command {name!r}"
        cmd.make_context(name or "", sub_args, parent=ctx)


def test_there_are_suggestions_to_check():
    assert len(COMMANDS) >= 10
    assert "attn-install torch --yes" in COMMANDS
    assert any(c.startswith("attn-install download --facts") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_suggested_command_parses(line):
    try:
        parse(line)
    except click.exceptions.Exit:  # --help / --version
        pass
    except click.UsageError as e:
        pytest.fail(f"`{line}` does not run as printed: {e.format_message()}")
