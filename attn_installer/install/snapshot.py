"""What an environment's folders hold, file by file: the listing a rollback compares against.

A listing maps each root (site-packages, the scripts folder) to every entry below it, by path
relative to the root: a file as ``["f", size, mtime_ns, mode]``, a directory as ``["d", mode]``, a
symbolic link as ``["l", target]``. Symbolic links are never followed. Reading a listing is cheap
(one ``lstat`` per entry, no hashing): an environment holding torch lists in a fraction of a second.

Two listings are equal when every file has the same size, modification time and mode, every link
the same target and the same directories exist (a directory's own time is left out: removing a
file changes it). A rollback copies files back with their times, so "equal" is what it achieves
when nothing was lost.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["Listing", "compare", "entry", "listing", "list_root"]

Listing = dict[str, dict[str, list[Any]]]


def entry(st: os.stat_result, path: str) -> list[Any]:
    if stat.S_ISLNK(st.st_mode):
        try:
            return ["l", os.readlink(path)]
        except OSError:
            return ["l", None]
    if stat.S_ISDIR(st.st_mode):
        return ["d", stat.S_IMODE(st.st_mode)]
    return ["f", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)]


def list_root(root: str) -> dict[str, list[Any]]:
    """Every entry below *root* (not *root* itself), by relative path with "/" separators."""
    out: dict[str, list[Any]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        base = os.path.join(root, rel) if rel else root
        try:
            it = os.scandir(base)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for de in it:
                sub = f"{rel}/{de.name}" if rel else de.name
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                out[sub] = entry(st, de.path)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(sub)
    return out


def listing(roots: Iterable[str]) -> Listing:
    return {r: list_root(r) for r in roots}


def _same(a: list[Any], b: list[Any]) -> bool:
    return a[0] == b[0] and (a[0] == "d" or a == b)


def _what(a: list[Any], b: list[Any]) -> str:
    kinds = {"f": "file", "d": "folder", "l": "link"}
    if a[0] != b[0]:
        return f"was a {kinds.get(a[0], a[0])}, is a {kinds.get(b[0], b[0])}"
    if a[0] == "l":
        return f"link to {a[1]} now points to {b[1]}"
    parts = []
    if a[1] != b[1]:
        parts.append(f"size {a[1]} -> {b[1]}")
    if a[2] != b[2]:
        parts.append("modified")
    if a[3] != b[3]:
        parts.append(f"mode {a[3]:o} -> {b[3]:o}")
    return ", ".join(parts) or "changed"


def compare(before: Mapping[str, Mapping[str, list[Any]]], after: Mapping[str, Mapping[str, list[Any]]]
            ) -> list[str]:
    """What differs, one line per path ("added", "missing", or how it changed), sorted."""
    out = []
    for root in sorted(set(before) | set(after)):
        b, a = before.get(root, {}), after.get(root, {})
        for rel in sorted(set(b) | set(a)):
            path = str(Path(root) / rel)
            if rel not in a:
                out.append(f"{path}: missing")
            elif rel not in b:
                out.append(f"{path}: added")
            elif not _same(b[rel], a[rel]):
                out.append(f"{path}: {_what(b[rel], a[rel])}")
    return out
