"""Fetch files over HTTP: a HEAD check first (with retries), then a download with progress into a
temporary name beside the destination, checked (length when the server gives one, sha256 where
known, the format's own integrity check) before it is renamed into place. A partial file never lands
under its final name, and the next run removes the partial files a killed one left."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import DiskFullError, DownloadError

__all__ = ["check_exists", "clean_partials", "fetch"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
RETRIES = 3
CHUNK = 1 << 20


def check_exists(url: str, retries: int = RETRIES, backoff: float = 0.5) -> Optional[int]:
    """HEAD the URL (following redirects, as GitHub release assets need): its size if known.
    A 404 is a clear error naming the URL; network errors are retried, then reported."""
    import requests  # noqa: PLC0415

    last = ""
    for attempt in range(retries):
        try:
            r = requests.head(url, allow_redirects=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                              headers={"User-Agent": "attn-install"})
        except requests.RequestException as e:
            last = f"{type(e).__name__}: {e}"
        else:
            if r.status_code == 200:
                size = r.headers.get("Content-Length")
                return int(size) if size and size.isdigit() else None
            if r.status_code in (403, 404, 410):
                raise DownloadError(f"{url} does not exist (HTTP {r.status_code}): the matrix names a "
                                    "wheel that is not published; report it, or use --backend to pick another")
            last = f"HTTP {r.status_code}"
        time.sleep(backoff * (2 ** attempt))
    raise DownloadError(f"cannot reach {url} after {retries} tries ({last}); check the network or "
                        "use --wheelhouse with a folder prepared by "
                        "`attn-install download --facts FACTS --wheelhouse DIR` on a connected machine")


def fetch(url: str, dest: Path, sha256: Optional[str] = None,
          progress: Callable[[int, Optional[int]], None] = lambda _d, _t: None,
          check: Callable[[Path], Optional[str]] = lambda _p: None) -> str:
    """Download *url* to *dest*; returns the sha256 of what was written. The file is written under a
    private temporary name beside *dest* (``mkstemp``: never through a planted link), locked while
    it is written so a later run's cleaning of partial downloads leaves it alone, and renamed into
    place only when its length is the server's Content-Length (when one is given), its sha256 is
    *sha256* (when known) and *check* finds nothing wrong with it (a wheel's zip, a tarball's gzip:
    what tells a download cut short by a server that sent no length). Otherwise nothing is left."""
    import fcntl  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import requests  # noqa: PLC0415

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.part", dir=dest.parent)
    except OSError as e:
        raise _full(e, dest) if e.errno in (errno.ENOSPC, errno.EDQUOT) else e from None
    part = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                          headers={"User-Agent": "attn-install"}) as r:
            if r.status_code != 200:
                raise DownloadError(f"download of {url} failed: HTTP {r.status_code}")
            total_s = r.headers.get("Content-Length")
            total = int(total_s) if total_s and total_s.isdigit() else None
            done = 0
            h = hashlib.sha256()
            with os.fdopen(os.dup(fd), "wb") as fh:
                for block in r.iter_content(CHUNK):
                    fh.write(block)
                    h.update(block)
                    done += len(block)
                    progress(done, total)
                fh.flush()
                os.fsync(fh.fileno())
        if total is not None and done != total:
            raise DownloadError(f"download of {url} stopped at {done} of {total} bytes; run again to retry")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256:
            raise DownloadError(f"{dest.name}: sha256 {digest} does not match the matrix's "
                                f"{sha256}; the file was not installed")
        why = check(part)
        if why is not None:
            raise DownloadError(f"the download of {url} is not usable ({why}"
                                + ("" if total is not None else "; the server sent no length, so a download cut "
                                   "short shows only here") + "); nothing was installed, run again to retry")
        os.replace(part, dest)
        return digest
    except requests.RequestException as e:
        raise DownloadError(f"download of {url} failed: {type(e).__name__}: {e}") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _full(e, dest) from None
        raise
    finally:
        os.close(fd)
        part.unlink(missing_ok=True)


def _full(e: OSError, dest: Path) -> DiskFullError:
    return DiskFullError(f"no space left on the disk of {dest.parent} while downloading {dest.name} "
                         f"({e.strerror}); free some space there and run again (the partial file was removed)")


def clean_partials(dest: Path) -> list[Path]:
    """Remove the partial downloads of *dest* that killed runs left (``.<name>.part*``); one being
    written now (its writer holds a lock on it) is left alone. The files removed."""
    import fcntl  # noqa: PLC0415

    removed = []
    for part in sorted(dest.parent.glob(f".{dest.name}.part*")) if dest.parent.is_dir() else ():
        try:
            fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            if part.is_symlink():
                part.unlink(missing_ok=True)
                removed.append(part)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # another run is writing it
        try:
            part.unlink(missing_ok=True)
            removed.append(part)
        finally:
            os.close(fd)
    return removed
