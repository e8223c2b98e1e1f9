"""Built wheels by build key: the cache folder of a key, and the wheelhouse other nodes read.

A source build's wheel lands in ``wheels/<backend>-<key digest>/`` with the key beside it
(``attn-install-key.json``); an install with the same key finds it there and skips fetch and build.
``build --wheelhouse DIR`` leaves the wheel in DIR with ``<wheel>.attn-install-key.json`` beside it,
and a node with ``--wheelhouse DIR`` takes the one wheel whose key equals its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

__all__ = ["KEY_FILE", "cached_wheel", "export", "key_matches", "store_built"]

KEY_FILE = "attn-install-key.json"


def key_matches(path: Path, key: Mapping[str, Any]) -> bool:
    try:
        return bool(json.loads(path.read_text()) == dict(key))
    except (OSError, ValueError):
        return False


def _write_key(path: Path, key: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(dict(key), indent=1, sort_keys=True))


def cached_wheel(cache: Path, key: Mapping[str, Any], wheelhouse: Optional[Path]) -> Optional[Path]:
    """The wheel built for *key*: in its cache folder, else copied in from a wheelhouse whose
    sidecar key matches; None when neither has one."""
    if key_matches(cache / KEY_FILE, key):
        wheels = sorted(cache.glob("*.whl"))
        if wheels:
            return wheels[0]
    if wheelhouse is not None and wheelhouse.is_dir():
        for sidecar in sorted(wheelhouse.glob(f"*.{KEY_FILE}")):
            wheel = wheelhouse / sidecar.name[: -len(f".{KEY_FILE}")]
            if wheel.is_file() and key_matches(sidecar, key):
                cache.mkdir(parents=True, exist_ok=True)
                shutil.copy2(wheel, cache / wheel.name)
                _write_key(cache / KEY_FILE, key)
                return cache / wheel.name
    return None


def store_built(cache: Path, key: Mapping[str, Any]) -> Optional[Path]:
    """After a build: the newest wheel in the key's folder, with the key written beside it."""
    wheels = sorted(cache.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        return None
    _write_key(cache / KEY_FILE, key)
    return wheels[-1]


def export(wheel: Path, key: Mapping[str, Any], out: Path, say: Callable[[str], None]) -> None:
    """`attn-install build --wheelhouse`: leave the wheel and its key in *out*."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, out / wheel.name)
    _write_key(out / f"{wheel.name}.{KEY_FILE}", key)
    say(f"  left {wheel.name} and its build key in {out}")
