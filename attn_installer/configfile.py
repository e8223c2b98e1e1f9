"""Write the user's axolotl config, carefully: a merge (:func:`attn_installer.config.merge_yaml`)
into an existing file with a reserved backup and a diff, its owner, mode, link and BOM kept, refused
in one line where the file or folder is read-only or changed meanwhile; a new fragment with ``-o``,
never over a file attn-install did not write unless ``--force`` (then with a backup)."""

from __future__ import annotations

import difflib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer.config import MergeOutcome, merge_yaml
from attn_installer.errors import ConfigError
from attn_installer.files import ReadProblem, read_bounded

__all__ = ["FRAGMENT_MARK", "is_fragment", "merge_file", "preview_merge", "reserve_backup", "write_fragment"]


MAX_BYTES = 1 << 20
"""The largest axolotl config a merge reads."""
FRAGMENT_MARK = "# written by attn-install "
"""The first line of every fragment attn-install writes (render_yaml's header)."""
MAX_BACKUPS = 1000


def is_fragment(text: str) -> bool:
    """Whether *text* is a fragment attn-install wrote itself (its first line says so)."""
    return text.lstrip("\ufeff").startswith(FRAGMENT_MARK)


def _where(path: Path) -> Path:
    """The file a write goes to: a symlink's final target (the link itself stays)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


_ANY_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _writable(path: Path, target: Path) -> None:
    """ConfigError (one line, nothing changed) when *target* or its folder cannot be written, or is
    marked read-only (no write bit at all: refused even for root, who could write it anyway)."""
    shown = f"{path}" + (f" (-> {target})" if target != path else "")
    folder = target.parent
    try:
        mode = target.stat().st_mode if target.exists() else None
        dmode = folder.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{shown}: cannot check it ({e.strerror}); nothing was changed") from None
    if mode is not None and (not os.access(target, os.W_OK) or not mode & _ANY_WRITE):
        raise ConfigError(f"{shown}: the file is read-only: cannot update it (make it writable, e.g. "
                          f"`chmod u+w {target}`, or merge a copy); nothing was changed")
    if not os.access(folder, os.W_OK | os.X_OK) or not dmode & _ANY_WRITE:
        raise ConfigError(f"{shown}: its folder {folder} is read-only: the updated file and its backup cannot be "
                          "written there (merge a copy in a writable folder); nothing was changed")


def reserve_backup(target: Path, mode: int) -> tuple[Path, int]:
    """Create the first free ``FILE.bak``, ``FILE.bak.1``, ... atomically (O_CREAT | O_EXCL: two
    merges at once never get the same name, an old backup is never replaced) and return it with
    its open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for n in range(MAX_BACKUPS):
        candidate = target.with_name(target.name + (".bak" if n == 0 else f".bak.{n}"))
        try:
            return candidate, os.open(candidate, flags, mode & 0o777)
        except FileExistsError:
            continue
    raise ConfigError(f"{target}: {MAX_BACKUPS} backups exist beside it already; remove old ones; "
                      "nothing was changed")


def _keep_owner(fd: int, st: os.stat_result) -> bool:
    """Give the open file *fd* the owner and group of *st*; False when this user may not."""
    now = os.fstat(fd)
    if (now.st_uid, now.st_gid) == (st.st_uid, st.st_gid):
        return True
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except (PermissionError, AttributeError):
        return False
    return True


def _write_backup(target: Path, raw: bytes, st: os.stat_result) -> Path:
    backup, fd = reserve_backup(target, stat.S_IMODE(st.st_mode))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            _keep_owner(fh.fileno(), st)
            os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))
            os.fsync(fh.fileno())
    except BaseException:
        backup.unlink(missing_ok=True)
        raise
    return backup


def _replace(target: Path, data: bytes, st: Optional[os.stat_result]) -> None:
    """Put *data* at *target*: a temporary file in its folder renamed over it, with the old file's
    mode, owner and group; where this user cannot give a new file that owner (a shared config it may
    write but does not own), the file is rewritten in place instead, so its owner and mode stay."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            owned = st is None or _keep_owner(fh.fileno(), st)
            if st is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))
            os.fsync(fh.fileno())
        if owned:
            os.replace(tmp, target)
            _sync_dir(target.parent)
            return
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    Path(tmp).unlink(missing_ok=True)
    with open(target, "r+b") as fh:
        fh.write(data)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


def _sync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _read_raw(path: Path, target: Path) -> bytes:
    """The file's bytes, bounded (a regular file of at most MAX_BYTES, UTF-8), BOM kept."""
    try:
        read_bounded(target, limit=MAX_BYTES)  # a regular file, small enough, UTF-8
        with open(target, "rb") as fh:  # the bytes themselves (read_bounded drops a BOM), bounded again
            raw = fh.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ReadProblem(f"is larger than {MAX_BYTES} bytes")
        return raw
    except ReadProblem as e:
        raise ConfigError(f"{path}: cannot read ({e}); the file was not changed") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}); the file was not changed") from None


def _os_error(path: Path, e: OSError) -> ConfigError:
    return ConfigError(f"{path}: cannot write ({e.strerror or e}); nothing was changed")


def merge_file(path: Path, config: Mapping[str, Any], remove: Sequence[str],
               comments: Sequence[str] = ()) -> MergeOutcome:
    """Merge into the YAML file at *path* in place, after copying it to a backup beside it.

    A symlink is followed: its target is updated (and backed up beside it), the link stays. A
    read-only file or folder is refused in one line. The file keeps its mode, owner and group. The
    backup's name is reserved atomically (two merges at once never share or replace one). When the
    file changes between reading and writing, nothing is written. Nothing is written (no backup
    either) when the keys are already there. Raises ConfigError; the file is then untouched."""
    path = Path(path)
    target = _where(path)
    raw = _read_raw(path, target)
    try:
        st = target.stat()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}); the file was not changed") from None
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw[3:].decode("utf-8") if bom else raw.decode("utf-8")
    result = merge_yaml(text, config, remove, name=str(path), comments=comments)
    if result.text == text:
        return MergeOutcome(path, result, "", None)
    _writable(path, target)
    new = (b"\xef\xbb\xbf" if bom else b"") + result.text.encode("utf-8")
    try:
        backup = _write_backup(target, raw, st)
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        if target.read_bytes() != raw:
            raise ConfigError(f"{path}: the file changed while it was being merged (another merge or an "
                              "editor?); nothing was written: run the merge again")
        _replace(target, new, st)
    except BaseException as e:
        backup.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _os_error(path, e) from None
        raise
    diff = difflib.unified_diff(text.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                fromfile=str(backup), tofile=str(path))
    return MergeOutcome(path, result, "".join(d if d.endswith("\n") else d + "\n" for d in diff), backup)


def preview_merge(path: Path, config: Mapping[str, Any], remove: Sequence[str],
                  comments: Sequence[str] = ()) -> MergeOutcome:
    """What :func:`merge_file` would do, writing nothing (``backup`` is None, the diff is against the
    file itself)."""
    path = Path(path)
    raw = _read_raw(path, _where(path))
    text = raw[3:].decode("utf-8") if raw.startswith(b"\xef\xbb\xbf") else raw.decode("utf-8")
    result = merge_yaml(text, config, remove, name=str(path), comments=comments)
    diff = difflib.unified_diff(text.splitlines(keepends=True), result.text.splitlines(keepends=True),
                                fromfile=str(path), tofile=f"{path} (merged)")
    return MergeOutcome(path, result, "".join(d if d.endswith("\n") else d + "\n" for d in diff), None)


def write_fragment(path: Path, text: str, *, force: bool = False) -> Optional[Path]:
    """Write attn-install's own fragment to *path* (atomically; a symlink's target). An existing file
    that attn-install did not write (its first line is not ``# written by attn-install``) is never
    replaced: ConfigError pointing at --merge, unless *force*; then it is backed up first and the
    backup's path returned."""
    path = Path(path)
    target = _where(path)
    st: Optional[os.stat_result] = None
    backup: Optional[Path] = None
    if target.exists():
        raw = _read_raw(path, target)
        st = target.stat()
        if not is_fragment(raw.decode("utf-8", errors="replace")):
            if not force:
                raise ConfigError(f"{path} exists and is not a fragment attn-install wrote (its first line is not "
                                  f"'{FRAGMENT_MARK.strip()} ...'): -o would replace it; `attn-install config "
                                  f"--merge {path}` updates it in place (with a backup and a diff), or --force "
                                  "replaces it, keeping a backup")
            _writable(path, target)
            try:
                backup = _write_backup(target, raw, st)
            except OSError as e:
                raise _os_error(path, e) from None
        else:
            _writable(path, target)
    elif not os.access(target.parent if str(target.parent) else Path(), os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: its folder {target.parent} is not writable; nothing was written")
    try:
        _replace(target, text.encode("utf-8"), st)
    except BaseException as e:
        if backup is not None:
            backup.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _os_error(path, e) from None
        raise
    return backup
