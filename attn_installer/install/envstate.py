"""The target Python environment as installed distributions, read through its own interpreter.

Reading through ``python -I`` of the target (target/attn_envstate.py) means a target given with
``--python`` (a conda env, a venv, attn-install installed with pipx) is seen the way its pip sees it.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer import target
from attn_installer.errors import InstallError
from attn_installer.runner import Runner

__all__ = ["EnvState", "canonical", "diff", "json_line", "read_state", "run_target"]

TIMEOUT = 120.0


def canonical(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class EnvState:
    prefix: str
    executable: str
    packages: Mapping[str, str]
    pip: Optional[str]
    roots: tuple[str, ...] = ()
    """The folders pip installs into (purelib, platlib, scripts), links resolved."""
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """With ``files=NAMES``: per distribution asked for, the absolute path of every RECORD entry."""


def json_line(out: str) -> dict[str, Any]:
    """The last line of *out* that is a JSON object."""
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            loaded = json.loads(line)
            if isinstance(loaded, dict):
                return loaded
    raise ValueError("no JSON line")


def run_target(runner: Runner, python: str, program: str, args: tuple[str, ...], failing: str,
               timeout: float = TIMEOUT) -> dict[str, Any]:
    """Run a target program in the target interpreter from an empty directory; its JSON line, or
    InstallError("<failing>: <last line>")."""
    with tempfile.TemporaryDirectory(prefix="attn-install-") as tmp:
        done = runner.run(target.argv(python, program, *args), timeout=timeout, cwd=Path(tmp))
    if not done.ok:
        raise InstallError(f"{failing}: {done.last_line}")
    try:
        return json_line(done.stdout)
    except ValueError:
        raise InstallError(f"{failing}: unexpected output") from None


def read_state(runner: Runner, python: str, *, files: Sequence[str] = ()) -> EnvState:
    """The installed distributions of the target environment, as its interpreter sees them (and
    the files of the distributions named in *files*)."""
    d = run_target(runner, python, "attn_envstate", ("--files", ",".join(files)) if files else (),
                   f"cannot read the environment of {python}")
    try:
        packages = d["packages"]
        assert isinstance(packages, dict)
        listed = d.get("files") or {}
        assert isinstance(listed, dict)
        return EnvState(str(d["prefix"]), str(d["executable"]), {str(k): str(v) for k, v in packages.items()},
                        str(d["pip"]) if d.get("pip") else None,
                        roots=tuple(str(r) for r in d.get("roots") or ()),
                        files={str(k): tuple(str(p) for p in v) for k, v in listed.items()})
    except (KeyError, AssertionError, TypeError):
        raise InstallError(f"cannot read the environment of {python}: unexpected output") from None


def diff(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """name -> (version before, version after) for every distribution that changed."""
    names = sorted(set(before) | set(after))
    return {n: (before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)}
