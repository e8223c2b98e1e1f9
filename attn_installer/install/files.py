"""The files a step needs before it runs: the torch constraints it writes, and the wheel it installs
(downloaded into the cache, or taken from a wheelhouse), each checked before use.

A download's sha256 is recorded beside it (``<file>.sha256``) the first time; every reuse compares
the file with that record (and with the matrix's hash where upstream publishes one) and tests its
format (a wheel's zip, every member's CRC; a tarball's gzip stream to its end), so a truncated or
corrupted cache entry is deleted and fetched again, named. A fresh download passes the same test
before it is renamed into the cache (a server that stops early without a Content-Length is caught
there). The record outlives the file: a download that differs from it (an asset re-uploaded under
the same name, as a wheel farm without published checksums can do) is refused, not believed.
Partial downloads a killed run left are removed before the next download of that file.
"""

from __future__ import annotations

import tarfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import InstallError
from attn_installer.files import sha256_of, write_atomic
from attn_installer.install.download import check_exists, clean_partials, fetch
from attn_installer.plan.model import Step

__all__ = ["ensure_file", "format_problem", "recorded_sha256", "write_step_files"]

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


def format_problem(path: Path, name: Optional[str] = None) -> Optional[str]:
    """What is wrong with the file's own format (by *name*'s suffix): a wheel's zip index and every
    member's CRC, a tarball's gzip stream read to its end; None when it is whole (or has no check)."""
    name = name or path.name
    if name.endswith(".whl") or name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"not a readable wheel ({e})"
        return f"corrupt wheel (member {bad})" if bad is not None else None
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tf:
                for member in tf:
                    if member.isfile():
                        fh = tf.extractfile(member)
                        if fh is not None:
                            while fh.read(1 << 20):
                                pass
        except (tarfile.TarError, OSError, EOFError) as e:
            return f"not a readable archive ({type(e).__name__}: {e})"
    return None


def _problem(dest: Path, want: Optional[str]) -> Optional[str]:
    """Why the file at *dest* must not be used, or None."""
    digest = sha256_of(dest)
    if want is not None and digest != want:
        return f"sha256 {digest[:12]}... is not the matrix's {want[:12]}..."
    recorded = recorded_sha256(dest)
    if recorded is not None and digest != recorded:
        return f"sha256 {digest[:12]}... differs from the {recorded[:12]}... recorded when it was downloaded"
    return format_problem(dest)


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
        why = _problem(dest, need.sha256)
        if why is not None:
            raise InstallError(f"the wheelhouse's {dest} is not usable ({why}); nothing was installed: fetch it "
                               f"again with `attn-install download --facts FACTS --wheelhouse {dest.parent}`")
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
    for part in clean_partials(dest):
        say(f"  removed {part.name}, a partial download an interrupted run left")
    size = check_exists(need.url)
    say(f"  {need.url} exists" + (f" ({size / 2**20:.1f} MiB)" if size else ""))
    last = [0.0]

    def progress(done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or (total and done == total):
            last[0] = now
            pct = f" {100 * done / total:.0f}%" if total else ""
            say(f"  downloading {dest.name}:{pct} {done / 2**20:.1f} MiB")

    recorded = recorded_sha256(dest)

    def check(part: Path) -> Optional[str]:
        digest = sha256_of(part)
        if recorded is not None and digest != recorded:
            return (f"it is not the file first downloaded under that name: sha256 {digest[:12]}..., recorded "
                    f"{recorded[:12]}... in {_sidecar(dest)}; re-uploaded upstream? Delete the record to accept it")
        return format_problem(part, dest.name)

    digest = fetch(need.url, dest, need.sha256, progress, check)
    write_atomic(_sidecar(dest), digest + "\n")
    if need.sha256:
        say(f"  sha256 ok ({need.sha256[:12]}...)")
