"""The one place for durable file writes and bounded reads.

``write_atomic`` writes through a private temporary file in the target's folder and renames it over
the target, so a reader never sees half a file and a kill leaves the old one. ``read_bounded``
accepts regular files up to a size limit only (not a FIFO, /dev/zero or a 2 GB log), decodes UTF-8
and names what is wrong in one line (UTF-16 from PowerShell's ``>`` included).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

__all__ = ["ReadProblem", "check_yaml_nesting", "loads_json_strict", "read_bounded", "sha256_of",
           "write_atomic"]

CHUNK = 1 << 20


class ReadProblem(Exception):
    """Why a file could not be read; the caller wraps it in its own error (FactsError, ...)."""


def write_atomic(path: Path, data: Union[str, bytes], *, mode: Optional[int] = None) -> None:
    """Write *data* to *path* through a temporary file in the same folder, then rename it over.

    *mode* sets the permission bits (a merged file keeps its own); text is written as given (no
    newline translation). On any failure the temporary file is removed and *path* is unchanged."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent or Path()))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            Path(tmp).chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def read_bounded(path: Path, *, limit: int) -> str:
    """The text of a regular file of at most *limit* bytes, decoded as UTF-8 (a UTF-8 BOM is
    dropped). Raises ReadProblem with one line saying what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ReadProblem("no such file") from None
    except IsADirectoryError:
        raise ReadProblem("is a directory, not a file") from None
    except OSError as e:
        raise ReadProblem(f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ReadProblem("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ReadProblem("is not a regular file (a pipe, device or socket)")
        if st.st_size > limit:
            raise ReadProblem(f"is {st.st_size} bytes; at most {limit} are read")
        chunks = []
        total = 0
        while True:
            block = os.read(fd, CHUNK)
            if not block:
                break
            total += len(block)
            if total > limit:
                raise ReadProblem(f"is larger than {limit} bytes")
            chunks.append(block)
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise ReadProblem("is a directory, not a file") from None
        raise ReadProblem(f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ReadProblem("is UTF-16 (PowerShell's `>` writes that): save it as UTF-8, e.g. with "
                          "`| Out-File -Encoding utf8`, or write it from bash: `attn-install probe --json > FILE`")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReadProblem(f"is not UTF-8 (byte {e.start})") from None


MAX_JSON_DEPTH = 64


def loads_json_strict(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that refuses NaN / Infinity and nesting deeper than *max_depth* (ReadProblem,
    with the line where JSON itself stops)."""
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for ch in text:  # bound the nesting before the parser recurses into it
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > max_depth:
        raise ReadProblem(f"nests {deepest} levels deep; at most {max_depth} are read")

    def constant(name: str) -> Any:
        raise ReadProblem(f"holds {name}, which is not a JSON number")

    hook: Callable[[str], Any] = constant
    try:
        return json.loads(text, parse_constant=hook)
    except json.JSONDecodeError as e:
        raise ReadProblem(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ReadProblem("nests too deeply to read") from None
    except ValueError as e:  # an integer of more digits than Python converts (4300)
        raise ReadProblem(f"holds a number that cannot be read ({str(e).split(';')[0]})") from None


MAX_YAML_DEPTH = 64


def check_yaml_nesting(text: str, *, max_depth: int = MAX_YAML_DEPTH) -> None:
    """ReadProblem when flow brackets nest deeper than *max_depth* (counted before any parser runs;
    block nesting is bounded by the parser's own recursion)."""
    depth = deepest = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "\n":
            quote = ""  # a quote in a comment or a plain scalar ends with its line here
    if deepest > max_depth:
        raise ReadProblem(f"nests {deepest} levels deep; at most {max_depth} are read")


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
