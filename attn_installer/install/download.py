"""Fetch files over HTTP: a HEAD check first (with retries), then a download with progress into a
temporary name beside the destination, checked (length when the server gives one, sha256 where
known) before it is renamed into place. A partial file never lands under its final name."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import DownloadError

__all__ = ["check_exists", "fetch"]

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
          progress: Callable[[int, Optional[int]], None] = lambda _d, _t: None) -> str:
    """Download *url* to *dest*; returns the sha256 of what was written. A length different from
    the server's Content-Length or a sha256 different from *sha256* leaves nothing behind."""
    import requests  # noqa: PLC0415

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                          headers={"User-Agent": "attn-install"}) as r:
            if r.status_code != 200:
                raise DownloadError(f"download of {url} failed: HTTP {r.status_code}")
            total_s = r.headers.get("Content-Length")
            total = int(total_s) if total_s and total_s.isdigit() else None
            done = 0
            h = hashlib.sha256()
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as fh:
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
        os.replace(part, dest)
        return digest
    except requests.RequestException as e:
        raise DownloadError(f"download of {url} failed: {type(e).__name__}: {e}") from None
    finally:
        if part.exists():
            part.unlink()
