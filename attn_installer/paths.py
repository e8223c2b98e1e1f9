"""Where attn-install keeps its files, decided once from the environment.

Everything lives under one cache folder (``ATTN_INSTALL_CACHE``, else ``$XDG_CACHE_HOME/attn-install``,
else ``~/.cache/attn-install``):

    downloads/     release wheels and other fetched files (sha256 recorded beside each)
    wheels/<key>/  wheels built from source, one folder per build key
    src/           source checkouts of source builds
    constraints/   the torch pins handed to pip
    backup/<run>/  distributions repacked before a step replaced them (removed after success)
    journal/       the record of an unfinished run, for `attn-install recover`
    records/       verification records, keyed by the installed files of a backend
    bench/         cached `attn-install bench` results
    logs/          one log per run
    locks/         lock files of environments whose prefix is not writable
    wheelhouse/    the default --wheelhouse of --offline
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

__all__ = ["Paths", "matrix_dir", "run_id"]


@dataclass(frozen=True)
class Paths:
    cache: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        explicit = env.get("ATTN_INSTALL_CACHE")
        if explicit:
            return cls(Path(explicit))
        base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
        return cls(Path(base) / "attn-install")

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


def matrix_dir(env: Mapping[str, str]) -> Optional[Path]:
    """``ATTN_INSTALL_MATRIX_DIR``: another matrices/ folder (tests, site overrides)."""
    d = env.get("ATTN_INSTALL_MATRIX_DIR")
    return Path(d) if d else None
