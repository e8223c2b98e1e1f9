"""The files a step needs before it runs: the torch constraints it writes, and the wheel it installs
(downloaded into the cache, or taken from a wheelhouse), each checked before use.

A download's sha256 is recorded beside it (``<file>.sha256``) the first time; every reuse compares
the file with that record (and with the matrix's hash where upstream publishes one) and tests the
wheel's zip index, so a truncated or corrupted cache entry is deleted and fetched again, named. The
record outlives the file: a download that differs from it (an asset re-uploaded under the same
name, as a wheel farm without published checksums can do) is refused, not believed.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import DownloadError, InstallError
from attn_installer.files import sha256_of, write_atomic
from attn_installer.install.download import check_exists, fetch
from attn_installer.plan.model import Step

__all__ = ["ensure_file", "recorded_sha256", "write_step_files"]

Say = Callable[[str], None]


def write_step_files(step: Step) -> None:
    """The files a step writes before it runs (the pins), atomically and only when they differ."""
    for path, content in step.writes.items():
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.is_file() or p.read_text() != content:
            write_atomic(p, content)


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def recorded_sha256(dest: Path) -> Optional[str]:
    try:
        text = _sidecar(dest).read_text().strip()
    except OSError:
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _problem(dest: Path, want: Optional[str]) -> Optional[str]:
    """Why the file at *dest* must not be used, or None."""
    digest = sha256_of(dest)
    if want is not None and digest != want:
        return f"sha256 {digest[:12]}... is not the matrix's {want[:12]}..."
    recorded = recorded_sha256(dest)
    if recorded is not None and digest != recorded:
        return f"sha256 {digest[:12]}... differs from the {recorded[:12]}... recorded when it was downloaded"
    if dest.suffix == ".whl":
        try:
            with zipfile.ZipFile(dest) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError) as e:
            return f"not a readable wheel ({e})"
        if bad is not None:
            return f"corrupt wheel (member {bad})"
    return None


def ensure_file(step: Step, *, offline: bool, say: Say) -> None:
    need = step.need
    if need is None:
        return
    dest = Path(need.dest)
    if need.url is None:  # from the wheelhouse
        if not dest.is_file():
            raise InstallError(f"the wheelhouse has no {dest.name} (needed at {dest}); fetch it on a "
                               f"connected machine with `attn-install download --facts FACTS "
                               f"--wheelhouse {dest.parent}`")
        if need.sha256 and sha256_of(dest) != need.sha256:
            raise InstallError(f"{dest} does not match the sha256 in the matrix; delete it and download again")
        return
    if dest.is_file():
        why = _problem(dest, need.sha256)
        if why is None:
            say(f"  using cached {dest.name}")
            return
        say(f"  the cached {dest} is not usable ({why}): deleting it and downloading again")
        dest.unlink()
    if offline:
        raise InstallError(f"--offline: {dest.name} is not in the cache ({dest}); fetch it on a connected machine with "
                           "`attn-install download --facts FACTS --wheelhouse DIR` and pass --wheelhouse DIR")
    _clean_partials(dest)
    size = check_exists(need.url)
    say(f"  {need.url} exists" + (f" ({size / 2**20:.1f} MiB)" if size else ""))
    last = [0.0]

    def progress(done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or (total and done == total):
            last[0] = now
            pct = f" {100 * done / total:.0f}%" if total else ""
            say(f"  downloading {dest.name}:{pct} {done / 2**20:.1f} MiB")

    digest = fetch(need.url, dest, need.sha256, progress)
    recorded = recorded_sha256(dest)
    if recorded is not None and digest != recorded:
        dest.unlink()
        raise DownloadError(f"{need.url} is not the file first downloaded under that name (sha256 {digest[:12]}..., "
                            f"recorded {recorded[:12]}... in {_sidecar(dest)}): re-uploaded upstream? Nothing was "
                            "installed; delete the record to accept the new file")
    why = _problem(dest, need.sha256) if dest.suffix == ".whl" else None
    if why is not None:
        dest.unlink()
        raise DownloadError(f"the download of {need.url} is not usable ({why}); nothing was installed")
    write_atomic(_sidecar(dest), digest + "\n")
    if need.sha256:
        say(f"  sha256 ok ({need.sha256[:12]}...)")


def _clean_partials(dest: Path) -> None:
    """Partial downloads a killed run left beside *dest*."""
    for part in dest.parent.glob(f".{dest.name}.part*") if dest.parent.is_dir() else ():
        part.unlink(missing_ok=True)
