"""The content digest of a source checkout (``--source DIR``): it joins the build key, so a
patched fork or another revision never gets the pinned ref's cached wheel, and the same sources on
another node or path match."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["tree_digest"]

_NOT_SOURCE = {".git", "__pycache__", ".eggs"}
_BUILD_OUTPUT = {"build", "dist"}
"""Build trees at the checkout's top or one level down (FA3 builds in hopper/build); deeper folders
of those names are sources."""


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of a checkout's regular files, leaving out build
    outputs and symlinks (the FA3 steps link the local CUDA into the tree): two copies of the same
    sources on two nodes agree, an edited file or another revision does not."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in _NOT_SOURCE and not d.endswith(".egg-info")
                             and not (depth <= 1 and d in _BUILD_OUTPUT) and not Path(dirpath, d).is_symlink())
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            try:
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                h.update(b"\1unreadable")  # the build will say what is wrong with it
            h.update(b"\0")
    return h.hexdigest()[:16]
