"""Where attn-install keeps its files, decided once from the environment.

Everything lives under one cache folder (``ATTN_INSTALL_CACHE``, else ``$XDG_CACHE_HOME/attn-install``,
else ``~/.cache/attn-install``):

    downloads/     release wheels and other fetched files (sha256 recorded beside each)
    wheels/<key>/  wheels built from source, one folder per build key
    src/           source checkouts of source builds
    constraints/   the torch pins handed to pip
    backup/<run>/  the files a step may overwrite, copied before it runs, and the listing of the
                   environment before the run (removed when the run ends cleanly)
    journal/       pointers to the journals of unfinished runs (each journal lives beside the lock
                   of its environment), for `attn-install recover`
    records/       verification records, keyed by the installed files of a backend
    bench/         cached `attn-install bench` results
    logs/          one log per run
    locks/         lock files of environments whose prefix is not writable
    wheelhouse/    the default --wheelhouse of --offline

The folder is created with mode 0700 and refused when another user owns it or others can write to
it (:meth:`Paths.checked`): a wheel, a bench result or a journal planted there would be believed.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from attn_installer.errors import CacheError

__all__ = ["Paths", "check_private_dir", "matrix_dir", "run_id"]


@dataclass(frozen=True)
class Paths:
    cache: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        explicit = env.get("ATTN_INSTALL_CACHE")
        if explicit:  # absolute: steps run from a private working directory
            return cls(Path(explicit).expanduser().absolute())
        base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
        return cls(Path(base).absolute() / "attn-install")

    def checked(self, *, create: bool = True) -> Paths:
        """This cache, safe to use: created with mode 0700 when missing (*create*), else owned by
        this user and writable by nobody else. CacheError with the reason otherwise."""
        check_private_dir(self.cache, "the attn-install cache", create=create, hint=(
            "point ATTN_INSTALL_CACHE at a folder of your own"))
        return self

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def wheels(self) -> Path:
        return self.cache / "wheels"

    @property
    def src(self) -> Path:
        return self.cache / "src"

    @property
    def constraints(self) -> Path:
        return self.cache / "constraints"

    @property
    def journal(self) -> Path:
        return self.cache / "journal"

    @property
    def records(self) -> Path:
        return self.cache / "records"

    @property
    def bench(self) -> Path:
        return self.cache / "bench"

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def locks(self) -> Path:
        return self.cache / "locks"

    @property
    def wheelhouse(self) -> Path:
        return self.cache / "wheelhouse"

    def backup(self, run_id: str) -> Path:
        return self.cache / "backup" / run_id

    def log_file(self, run_id: str, label: str) -> Path:
        return self.logs / f"{run_id}-{label}.log"


def run_id() -> str:
    """A name no other run shares: the time, this process and a counter (runs started in the same
    second by different processes, or twice in one process, never share a log or backup folder)."""
    global _COUNTER
    _COUNTER += 1
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{_COUNTER}"


_COUNTER = 0


def check_private_dir(path: Path, what: str, *, create: bool, hint: str) -> None:
    """*path* is a directory this user owns that no one else can write to (made, mode 0700, when
    missing and *create*); CacheError naming the reason otherwise."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(0o700)
        except FileExistsError:
            pass  # another run made it a moment ago: checked below
        except OSError as e:
            raise CacheError(f"{what} {path} cannot be created: {e.strerror}; {hint}") from None
        st = path.stat()
    except OSError as e:
        raise CacheError(f"{what} {path} cannot be read: {e.strerror}; {hint}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"{what} {path} is not a directory; {hint}")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise CacheError(f"{what} {path} belongs to another user (uid {st.st_uid}, you are {os.geteuid()}): "
                         f"its wheels, records and journals could have been planted; {hint}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(f"{what} {path} can be written by others (mode {stat.S_IMODE(st.st_mode):o}): "
                         f"its wheels, records and journals could have been planted; `chmod 700 {path}`, or {hint}")


def matrix_dir(env: Mapping[str, str]) -> Optional[Path]:
    """``ATTN_INSTALL_MATRIX_DIR``: another matrices/ folder (tests, site overrides)."""
    d = env.get("ATTN_INSTALL_MATRIX_DIR")
    return Path(d) if d else None
