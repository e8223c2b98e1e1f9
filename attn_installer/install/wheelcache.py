"""Built wheels by build key: the cache folder of a key, and the wheelhouse other nodes read.

A source build's wheel lands in ``wheels/<backend>-<key digest>/`` with its key file beside it
(``attn-install-key.json``: the build key, the wheel's file name and its sha256); an install with
the same key finds it there, checks the hash and the zip, and skips fetch and build. A wheel that
does not match is deleted, named, and built again.

``build --wheelhouse DIR`` leaves the wheel in ``DIR/<backend>-<key digest>/`` (builds with
different keys never share a file name), written under a temporary name and renamed, its key file
last: a node reading at the same moment sees no key file, or a complete wheel. A node with
``--wheelhouse DIR`` takes the one wheel the key file of its own key names, and only when the key
equals its own (torch, CUDA, ABI, Python, machine, archs, build env), the wheel's tags fit that
Python and machine, and its sha256 is the one the key file carries; it is copied into the cache the
same way and installed by its path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from attn_installer.files import ReadProblem, loads_json_strict, read_bounded, sha256_of, write_atomic

__all__ = ["KEY_FILE", "cached_wheel", "export", "problem", "read_key", "store_built"]

KEY_FILE = "attn-install-key.json"
VERSION = 1
Say = Callable[[str], None]


def read_key(path: Path) -> Optional[dict[str, Any]]:
    """A key file: {"key", "wheel", "sha256"}; an older one (the bare key) as {"key"}; None when
    missing or unreadable."""
    try:
        data = loads_json_strict(read_bounded(path, limit=1 << 16))
    except ReadProblem:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("attn_install_build_key") == VERSION and isinstance(data.get("key"), dict):
        return data
    return {"key": data}


def _write_key(folder: Path, key: Mapping[str, Any], wheel: Path, digest: str) -> None:
    write_atomic(folder / KEY_FILE, json.dumps({"attn_install_build_key": VERSION, "key": dict(key),
                                                "wheel": wheel.name, "sha256": digest}, indent=1, sort_keys=True))


def _zip_problem(path: Path) -> Optional[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a readable wheel ({e})"
    return f"corrupt wheel (member {bad})" if bad is not None else None


def _tags_problem(wheel: Path, key: Mapping[str, Any]) -> Optional[str]:
    """The wheel's file-name tags against the key's Python and machine."""
    parts = wheel.name[:-4].split("-")
    if len(parts) < 5:
        return f"{wheel.name} is not a wheel file name"
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    want_py, machine = key.get("python"), key.get("machine")
    if isinstance(want_py, str) and abi != "abi3" and not any(t == want_py or t.startswith("py3")
                                                              for t in py.split(".")):
        return f"{wheel.name} is built for {py}, not {want_py}"
    if isinstance(machine, str) and plat != "any" and not any(p.endswith(machine) for p in plat.split(".")):
        return f"{wheel.name} is built for {plat}, not {machine}"
    return None


def problem(folder: Path, key: Mapping[str, Any], wheel: Path) -> Optional[str]:
    """Why *wheel* in the key's *folder* must not be installed for *key*, or None."""
    rec = read_key(folder / KEY_FILE)
    if rec is None or rec["key"] != dict(key):
        return f"{folder / KEY_FILE} does not hold this build key"
    if rec.get("wheel") != wheel.name:
        return f"the key file names {rec.get('wheel')}, not {wheel.name}"
    if not wheel.is_file():
        return f"{wheel} is missing"
    digest = sha256_of(wheel)
    if rec.get("sha256") != digest:
        return f"sha256 {digest[:12]}... is not the {str(rec.get('sha256'))[:12]}... its key file records"
    return _tags_problem(wheel, key) or _zip_problem(wheel)


def _empty(folder: Path) -> None:
    for p in folder.iterdir() if folder.is_dir() else ():
        if p.is_file() or p.is_symlink():
            p.unlink()


def _from_cache(cache: Path, key: Mapping[str, Any], say: Say) -> Optional[Path]:
    rec = read_key(cache / KEY_FILE)
    if rec is None or rec["key"] != dict(key):
        return None
    if "sha256" not in rec:  # written by an older attn-install: the one wheel there, zip-tested, hash recorded now
        wheels = sorted(cache.glob("*.whl"))
        if len(wheels) == 1 and _zip_problem(wheels[0]) is None and _tags_problem(wheels[0], key) is None:
            _write_key(cache, key, wheels[0], sha256_of(wheels[0]))
            return wheels[0]
        say(f"  the wheel cache {cache} holds no single usable wheel for this key: building again")
        _empty(cache)
        return None
    wheel = cache / str(rec.get("wheel"))
    why = problem(cache, key, wheel)
    if why is None:
        return wheel
    say(f"  the cached wheel {wheel} is not usable ({why}): deleting it and building again")
    _empty(cache)
    return None


def _copy_in(src: Path, folder: Path, digest: str) -> Path:
    """Copy *src* into *folder* under a temporary name, check its sha256, rename it into place."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{src.name}.", suffix=".part", dir=folder)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_of(Path(tmp)) != digest:
            raise OSError(f"{src} changed while it was copied")
        dest = folder / src.name
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.lexists(tmp):
            Path(tmp).unlink()


def _from_wheelhouse(cache: Path, key: Mapping[str, Any], wheelhouse: Path, say: Say) -> Optional[Path]:
    folder = wheelhouse / cache.name
    rec = read_key(folder / KEY_FILE)
    if rec is None:
        for old in sorted(wheelhouse.glob(f"*.{KEY_FILE}")):
            if (read_key(old) or {}).get("key") == dict(key):
                say(f"  {old} is an export of an older attn-install (no sha256 of its wheel): not used; "
                    "export it again with `attn-install build BACKEND --wheelhouse DIR`")
        return None
    if rec["key"] != dict(key):
        say(f"  {folder / KEY_FILE} is not this node's build key (torch, CUDA, ABI, Python, machine, archs or "
            "build env differ): not used")
        return None
    if not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("wheel"), str):
        say(f"  {folder / KEY_FILE} carries no sha256 of its wheel: not used; export it again")
        return None
    if "/" in rec["wheel"] or rec["wheel"].startswith(".") or not rec["wheel"].endswith(".whl"):
        say(f"  {folder / KEY_FILE} names {rec['wheel']!r}, not a wheel in its folder: not used")
        return None
    wheel = folder / str(rec["wheel"])
    why = problem(folder, key, wheel)
    if why is not None:
        say(f"  the wheelhouse's {wheel} is not usable ({why}): not used")
        return None
    _empty(cache)
    dest = _copy_in(wheel, cache, str(rec["sha256"]))
    _write_key(cache, key, dest, str(rec["sha256"]))
    return dest


def cached_wheel(cache: Path, key: Mapping[str, Any], wheelhouse: Optional[Path],
                 say: Say = lambda _m: None) -> Optional[Path]:
    """The wheel built for *key*: in its cache folder (hash and zip checked), else copied in from the
    wheelhouse's folder of that key; None when neither has a good one."""
    found = _from_cache(cache, key, say)
    if found is not None:
        return found
    if wheelhouse is not None and wheelhouse.is_dir():
        return _from_wheelhouse(cache, key, wheelhouse, say)
    return None


def store_built(cache: Path, key: Mapping[str, Any], say: Say = lambda _m: None) -> Optional[Path]:
    """After a build: the newest wheel in the key's folder (zip-tested; older ones removed), with its
    key and sha256 written beside it last."""
    wheels = sorted(cache.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        return None
    wheel = wheels[-1]
    why = _zip_problem(wheel)
    if why is not None:
        say(f"  the build wrote {wheel}, which is {why}")
        wheel.unlink()
        return None
    for other in wheels[:-1]:
        other.unlink()
    _write_key(cache, key, wheel, sha256_of(wheel))
    return wheel


def export(wheel: Path, key: Mapping[str, Any], name: str, out: Path, say: Say) -> None:
    """`attn-install build --wheelhouse`: the wheel and its key file in ``out/<name>/``, the wheel
    renamed into place complete, the key file (with the wheel's sha256) written last."""
    folder = out / name
    digest = sha256_of(wheel)
    (folder / KEY_FILE).unlink(missing_ok=True)  # a reader sees no key until the new wheel is whole
    for old in folder.glob("*.whl") if folder.is_dir() else ():
        if old.name != wheel.name:
            old.unlink()
    dest = _copy_in(wheel, folder, digest)
    _write_key(folder, key, dest, digest)
    say(f"  left {dest.relative_to(out)} and its build key (sha256 {digest[:12]}...) in {out}")
