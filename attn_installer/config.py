"""Write the recommended axolotl keys as YAML, atomically: a new fragment, or merged into an
existing axolotl config line by line (every other line byte-identical, with a backup and a diff)."""

from __future__ import annotations

import difflib
import io
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer.errors import ConfigError
from attn_installer.files import ReadProblem, read_bounded

__all__ = ["FRAGMENT_MARK", "MergeOutcome", "MergeResult", "conflicting_keys", "is_fragment", "merge_file",
           "merge_yaml", "preview_merge", "render_yaml", "reserve_backup", "write_fragment", "yaml_error"]


def render_yaml(config: Mapping[str, Any], comments: Sequence[str], header: Sequence[str]) -> str:
    """Render the keys in order with a header and backend comments above them."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # a hub kernel path with its commit stays on one line
    buf = io.StringIO()
    yaml.dump(dict(config), buf)
    lines = [f"# {h}" for h in header] + [f"# {c}" for c in comments]
    return "\n".join(lines) + ("\n" if lines else "") + buf.getvalue()


# --------------------------------------------------------------------------- merge into an existing config


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_yaml` did: the new text and the top-level keys it set or removed."""

    text: str
    changed: tuple[str, ...]
    """Keys written with a new value (added or replaced), in config order."""
    removed: tuple[str, ...]
    """Attention keys of the other form (or another backend) that were deleted."""


@dataclass(frozen=True)
class MergeOutcome:
    """What :func:`merge_file` did to the file on disk."""

    path: Path
    result: MergeResult
    diff: str
    """Unified diff of the change; empty when nothing changed."""
    backup: Optional[Path]
    """The copy of the original file; None when nothing was written."""


def conflicting_keys(config: Mapping[str, Any], attention_keys: Sequence[str]) -> tuple[str, ...]:
    """Attention keys to delete when *config* is written: every one it does not set itself.

    Nothing is deleted when *config* selects no attention key (an axolotl too old to select
    the backend): the user's own choice then stays.
    """
    if not any(k in config for k in attention_keys):
        return ()
    return tuple(k for k in attention_keys if k not in config)


def yaml_error(name: str, e: Exception, prefix: str = "", suffix: str = "") -> ConfigError:
    """One line for a YAML error: ``name:line:col: problem (context at line N)``."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e).splitlines()[0]
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and problem != context and cmark is not None:
        problem = f"{problem} ({context} at line {cmark.line + 1})"
    return ConfigError(f"{where}: {prefix}{problem}{suffix}")


def _yaml_error(name: str, e: Exception) -> ConfigError:
    return yaml_error(name, e, suffix="; the file was not changed")


def _parse(text: str, name: str) -> tuple[Any, Any]:
    """(round-trip data, composed root node) or ConfigError naming file:line:col."""
    from ruamel.yaml import YAML  # noqa: PLC0415 - keep `attn-install --help` fast
    from ruamel.yaml.error import YAMLError  # noqa: PLC0415

    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
        node = yaml.compose(text)
    except YAMLError as e:
        raise _yaml_error(name, e) from None
    if node is not None and type(node).__name__ != "MappingNode":
        m = node.start_mark
        raise ConfigError(f"{name}:{m.line + 1}:{m.column + 1}: the top level is not a mapping of "
                          "axolotl keys; the file was not changed")
    if node is not None and node.flow_style:
        m = node.start_mark
        raise ConfigError(f"{name}:{m.line + 1}:{m.column + 1}: a flow-style top level ({{...}}) "
                          "cannot be merged line by line; the file was not changed")
    return data, node


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool):
        return type(current).__name__ in ("bool", "ScalarBoolean") and bool(current) is wanted
    return type(current) is type(wanted) and bool(current == wanted)


def _spans(node: Any, lines: Sequence[str]) -> dict[str, tuple[int, int, str]]:
    """Top-level key -> (first line, last line, what follows a one-line value), 0-based, inclusive.

    The tail is the end-of-line comment (with its spacing) that a rewritten line keeps.
    """
    spans: dict[str, tuple[int, int, str]] = {}
    if node is None:
        return spans
    for key, value in node.value:
        if not isinstance(key.value, str):
            continue
        first = key.start_mark.line
        end = value.end_mark
        last = max(first, end.line if end.column > 0 else end.line - 1)
        # a block scalar's end mark runs on over blank lines and comments that follow it
        while last > first and (not lines[last].strip() or lines[last].lstrip().startswith("#")):
            last -= 1
        tail = lines[first][end.column:].rstrip("\r\n") if end.line == first == last else ""
        spans[key.value] = (first, last, tail if tail.strip() else "")
    return spans


def _render_line(key: str, value: Any, indent: str, nl: str) -> str:
    from ruamel.yaml import YAML  # noqa: PLC0415

    yaml = YAML()
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump({key: value}, buf)
    return indent + buf.getvalue().rstrip("\n") + nl


def merge_yaml(text: str, config: Mapping[str, Any], remove: Sequence[str], *, name: str = "<config>",
               comments: Sequence[str] = ()) -> MergeResult:
    """Set *config*'s top-level keys in an axolotl YAML text and delete the *remove* keys.

    Only the lines of those keys change: every other line (comments, blank lines, key order,
    quoting, indentation) stays byte for byte. ruamel's round-trip parser gives each key's
    lines; a full round-trip dump would re-indent sequences and rewrite ``True`` as ``true``.
    A key that already holds the value is left untouched; a new key takes the place of the
    first removed key, else it goes at the end. *comments* go above the first new line.
    Raises ConfigError (``name:line:col: problem``) for text that does not parse.
    """
    data, node = _parse(text, name)
    current: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
    lines = text.splitlines(keepends=True)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    indent = " " * (node.start_mark.column if node is not None else 0)
    spans = _spans(node, lines)
    changed = [k for k, v in config.items() if not (k in current and _same(current[k], v))]
    removed = [k for k in remove if k in spans]
    if not changed and not removed:
        return MergeResult(text, (), ())
    replace: dict[int, list[str]] = {}  # first line of a span -> its new lines
    drop: set[int] = set()
    for key in removed:
        first, last, _ = spans[key]
        drop.update(range(first, last + 1))
        replace.setdefault(first, [])
    appended: list[str] = []
    slots = sorted(spans[k][0] for k in removed)
    note = [f"{indent}# {c}{nl}" for c in comments]
    for key in changed:
        new = _render_line(key, config[key], indent, nl)
        if key in spans:
            first, last, tail = spans[key]
            drop.update(range(first, last + 1))
            replace[first] = [*note, new.rstrip("\r\n") + tail + nl]
        elif slots:
            replace[slots.pop(0)] = [*note, new]
        else:
            appended.extend([*note, new])
        note = []
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in replace:
            out.extend(replace[i])
        if i not in drop:
            out.append(line)
    if appended and out and not out[-1].endswith(("\n", "\r")):
        out[-1] += nl
    merged = "".join(out + appended)
    _check(merged, name, current, config, remove)
    return MergeResult(merged, tuple(changed), tuple(removed))


def _check(merged: str, name: str, before: Mapping[str, Any], config: Mapping[str, Any],
           removed: Sequence[str]) -> None:
    """Re-parse the result: the keys hold their values, removed keys are gone, nothing else moved."""
    after, _ = _parse(merged, name)
    after = after if isinstance(after, Mapping) else {}
    problems = [k for k, v in config.items() if k not in after or not _same(after[k], v)]
    problems += [k for k in removed if k in after]
    problems += [k for k, v in before.items() if k not in config and k not in removed
                 and (k not in after or after[k] != v)]
    if problems:
        raise ConfigError(f"{name}: cannot merge {', '.join(problems)} line by line "
                          "(YAML anchors or merge keys?); edit the file by hand; it was not changed")


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
