"""The file operations of a rollback: put the environment's folders back to a listing (remove
what was added, make again the folders that went, copy each backed-up file back with its time and
mode, its sha256 checked), and undo what a step wrote outside the environment."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer.files import write_atomic
from attn_installer.install.snapshot import Listing, entry

__all__ = ["lentry", "make_dirs", "put_back", "remove_added", "restore_outside", "same_file", "sha256_file"]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lentry(path: str) -> Optional[list[Any]]:
    try:
        return entry(os.lstat(path), path)
    except OSError:
        return None


def same_file(a: Optional[list[Any]], b: Optional[list[Any]]) -> bool:
    return a is not None and b is not None and a == b


def restore_outside(created: list[Path], replaced: Mapping[Path, str]) -> list[str]:
    """Remove what was created outside the environment, put back what was rewritten there."""
    failed = []
    for p in sorted(created, key=lambda x: len(x.parts), reverse=True):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError as e:
            failed.append(f"{p} ({e.strerror})")
    for p, text in replaced.items():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(p, text)
        except OSError as e:
            failed.append(f"{p} ({e.strerror})")
    return failed

def remove_added(roots: tuple[str, ...], before: Listing, now: Listing) -> tuple[int, list[str]]:
    """Remove what is in *now* and not in *before* under each root: (how many, what could not be)."""
    removed, failed = 0, []
    for root in roots:
        b, n = before.get(root, {}), now.get(root, {})
        added = sorted((rel for rel in n if rel not in b), key=lambda r: r.count("/"))
        gone: list[str] = []
        for rel in added:
            if any(rel.startswith(g + "/") for g in gone):
                continue  # inside a folder already removed
            path = os.path.join(root, rel)
            try:
                if n[rel][0] == "d":
                    shutil.rmtree(path)
                    gone.append(rel)
                else:
                    os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                failed.append(f"{path} (cannot remove: {e.strerror})")
    return removed, failed

def make_dirs(roots: tuple[str, ...], before: Listing) -> list[str]:
    """Make again the folders of *before* that are gone, with their mode; what could not be."""
    failed = []
    for root in roots:
        for rel, e in sorted(before.get(root, {}).items()):
            if e[0] != "d":
                continue
            path = os.path.join(root, rel)
            if os.path.lexists(path):
                continue
            try:
                os.makedirs(path)
                os.chmod(path, int(e[1]))
            except OSError as ex:
                failed.append(f"{path} (cannot make the folder: {ex.strerror})")
    return failed

def put_back(path: str, rec: Mapping[str, Any], files_dir: Path) -> Optional[str]:
    """Copy one backed-up file (or link) back, with its time and mode; why not, or None."""
    want = list(rec["entry"])
    if same_file(lentry(path), want):
        return None
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        if want[0] == "l":
            tmp = os.path.join(parent, f".attn-install-{os.getpid()}-{rec['copy']}")
            os.symlink(str(want[1]), tmp)
            os.replace(tmp, path)
            return None
        src = files_dir / str(rec["copy"])
        fd, tmp = tempfile.mkstemp(prefix=".attn-install-", dir=parent)
        try:
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.chmod(tmp, int(want[3]))
            os.utime(tmp, ns=(int(want[2]), int(want[2])))
            if rec.get("sha256") and sha256_file(tmp) != rec["sha256"]:
                return f"{path} (its backup {src} is corrupt)"
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    except OSError as e:
        return f"{path} (cannot put it back: {e.strerror})"
    return None
