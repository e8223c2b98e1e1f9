"""Which build of each backend is installed: the digest target/attn_builds.py computes in the
target Python (its distributions' RECORD entries and their files as they are now).

A bench result and a verification record carry the digest of the build they measured or checked;
`plan --measured` compares it with the build installed now, so a reinstall or a rebuild (another
wheel of the same version included) never inherits the numbers or the verdict of the one before.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

from attn_installer import target
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend
from attn_installer.runner import Runner

__all__ = ["BUILDS_TIMEOUT", "build_distributions", "builds_table", "current_builds", "parse_builds_output"]

BUILDS_TIMEOUT = 120.0


def build_distributions(b: Backend) -> tuple[str, ...]:
    """The distributions whose files make up *b*'s build: its own (or those that label its version,
    as triton for flex) and torch, which every backend is built against or part of."""
    own = b.version_from or ((b.distribution,) if b.distribution else ())
    return tuple(dict.fromkeys((*own, "torch")))


def builds_table(matrix: Matrix, names: Iterable[str]) -> dict[str, list[str]]:
    """backend -> its build distributions, for the target programs (unknown names are left out)."""
    by_name = {b.name: b for b in matrix.backends}
    return {n: list(build_distributions(by_name[n])) for n in names if n in by_name}


def parse_builds_output(stdout: str) -> dict[str, str]:
    """The ``{"builds": {...}}`` line of attn_builds.py; {} when there is none."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("builds"), dict):
            return {str(k): str(v) for k, v in data["builds"].items() if isinstance(v, str)}
    return {}


def current_builds(runner: Runner, python: str, matrix: Matrix, names: Iterable[str],
                   timeout: float = BUILDS_TIMEOUT) -> dict[str, str]:
    """The digest of each named backend's installed build, read by *python* itself (one process);
    {} when it cannot run (then no measurement can be matched to a build)."""
    table = builds_table(matrix, names)
    if not table:
        return {}
    with tempfile.TemporaryDirectory(prefix="attn-install-builds-") as tmp:
        done = runner.run(target.argv(python, "attn_builds", json.dumps(table, sort_keys=True)), timeout=timeout,
                          cwd=Path(tmp))
    return parse_builds_output(done.stdout) if done.returncode == 0 else {}
