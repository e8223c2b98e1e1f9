"""Fetch release wheels: a HEAD check first (with retries), then a download into the cache with
progress, then the sha256 check where the matrix knows the hash. A partial file never lands under
its final name."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import InstallError

__all__ = ["DownloadError", "check_exists", "fetch", "sha256_of"]

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
RETRIES = 3
CHUNK = 1 << 20


class DownloadError(InstallError):
    """A wheel that does not exist, cannot be reached, or does not match its hash."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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
                        "use --wheelhouse with a folder prepared by `attn-install download`")


def fetch(url: str, dest: Path, sha256: Optional[str] = None,
          progress: Callable[[int, Optional[int]], None] = lambda _d, _t: None) -> Path:
    """Download ``url`` to ``dest`` (reused when already there with the right hash)."""
    import requests  # noqa: PLC0415

    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                          headers={"User-Agent": "attn-install"}) as r:
            if r.status_code != 200:
                raise DownloadError(f"download of {url} failed: HTTP {r.status_code}")
            total_s = r.headers.get("Content-Length")
            total = int(total_s) if total_s and total_s.isdigit() else None
            done = 0
            h = hashlib.sha256()
            with open(part, "wb") as fh:
                for block in r.iter_content(CHUNK):
                    fh.write(block)
                    h.update(block)
                    done += len(block)
                    progress(done, total)
        if total is not None and done != total:
            raise DownloadError(f"download of {url} stopped at {done} of {total} bytes; run again to retry")
        if sha256 is not None and h.hexdigest() != sha256:
            raise DownloadError(f"{dest.name}: sha256 {h.hexdigest()} does not match the matrix's "
                                f"{sha256}; the file was not installed")
        os.replace(part, dest)
    except requests.RequestException as e:
        raise DownloadError(f"download of {url} failed: {type(e).__name__}: {e}") from None
    finally:
        if part.exists():
            part.unlink()
    return dest
