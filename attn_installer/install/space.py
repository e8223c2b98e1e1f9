"""Free space: what a step needs on the target environment's disk, the cache's and the temp dir's
(matrices/routes.toml [[kind]] target_mb / download_mb; a build's disk_gb), checked before it runs;
and which folder filled when pip or a write hit ENOSPC."""

from __future__ import annotations

import errno
import re
import shutil
import tempfile
from pathlib import Path

from attn_installer.install.records import Failed
from attn_installer.matrix import Matrix
from attn_installer.plan.model import BackendPlan, Step

__all__ = ["NO_SPACE", "NO_SPACE_PATH", "check_build_disk", "check_step_space", "existing_ancestor", "folder_of",
           "full", "fullest"]

NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (?:28|122)\]")
"""pip's (or a build's) output when a disk filled."""
NO_SPACE_PATH = re.compile(r"\[Errno (?:28|122)\] [^:\n]*: '([^'\n]+)'")
"""The file it was writing, where the output names it."""


def full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def folder_of(path: str) -> str:
    """The nearest existing folder of *path* (what filled up)."""
    return str(existing_ancestor(Path(path)).resolve())


def _places(roots: tuple[str, ...], cache: Path) -> list[tuple[str, str]]:
    """(folder, what it is) of every place a step writes to."""
    out = [(r, "the target environment") for r in roots[:1]]
    out.append((str(cache), "the attn-install cache"))
    out.append((tempfile.gettempdir(), "the temp dir"))
    return out


def fullest(roots: tuple[str, ...], cache: Path) -> str:
    """The folder with the least free space of those a step writes to (pip did not name one)."""
    free = []
    for folder, _what in _places(roots, cache):
        try:
            free.append((shutil.disk_usage(existing_ancestor(Path(folder))).free, folder))
        except OSError:
            continue
    return min(free)[1] if free else str(cache)


def check_step_space(matrix: Matrix, route: str | None, step: Step, roots: tuple[str, ...]) -> None:
    """Refuse a step, before it runs, when the target, the cache or the temp dir has less free
    space than the step needs (matrices/routes.toml [[kind]] target_mb / download_mb): Failed."""
    row = next((r for r in matrix.route_kinds if r.kind == route), None)
    if row is None or step.kind == "build":
        return
    wants: list[tuple[str, str, float, str]] = []
    if step.installs is not None and roots:
        wants.append((roots[0], "the target environment", row.target_mb, "target_mb"))
        wants.append((tempfile.gettempdir(), "the temp dir", row.download_mb, "download_mb"))
    if step.need is not None and step.need.url:
        wants.append((str(Path(step.need.dest).parent), "the attn-install cache", row.download_mb, "download_mb"))
    per_disk: dict[int, list[tuple[str, str, float, str]]] = {}
    for want in wants:
        if want[2] <= 0:
            continue
        try:
            dev = existing_ancestor(Path(want[0])).stat().st_dev
        except OSError:
            continue
        per_disk.setdefault(dev, []).append(want)
    for group in per_disk.values():
        need = sum(w[2] for w in group)
        folder = group[0][0]
        free = shutil.disk_usage(existing_ancestor(Path(folder))).free / 2**20
        if free < need:
            names = " and ".join(f"{w[1]} ({w[2]:g} MiB, {w[3]})" for w in group)
            raise Failed(f"not enough free space for '{step.description}': {free:.0f} MiB free on the disk "
                         f"of {folder_of(folder)}, about {need:g} MiB needed for {names} (matrices/routes.toml "
                         f"[[kind]] {row.kind}); free some space there", disk=True)


def check_build_disk(bp: BackendPlan) -> None:
    """Refuse a build, before anything is fetched, when the disk of its source tree or of the
    wheel cache has less free space than the matrix says the build needs: Failed."""
    if not bp.disk_gb or not bp.checkout:
        return
    seen: set[int] = set()
    for where in (bp.checkout, bp.wheel_cache or ""):
        path = existing_ancestor(Path(where))
        dev = path.stat().st_dev
        if dev in seen:
            continue
        seen.add(dev)
        free = shutil.disk_usage(path).free / 2**30
        if free < bp.disk_gb:
            raise Failed(f"not enough free disk for the {bp.name} build: {free:.1f} GB free on the "
                         f"disk of {where}, about {bp.disk_gb:g} GB needed (matrices/sources.toml "
                         "disk_gb); free some space or point ATTN_INSTALL_CACHE (and --source) at a larger disk")
