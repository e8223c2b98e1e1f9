"""The target Python environment as installed distributions: snapshot, repack, lock.

Everything here reads the environment through its own interpreter (``python -c``), so a target
given with ``--python`` (attn-install installed with pipx, a conda env, a venv) is read the way its
pip sees it. Repacking turns an installed distribution back into a wheel from its RECORD, so a
package that an install step replaces can be put back exactly, offline.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional

from attn_installer.errors import BusyError, InstallError
from attn_installer.runner import Runner

__all__ = ["EnvLock", "EnvState", "canonical", "diff", "read_state", "repack"]

TIMEOUT = 120.0

STATE_SNIPPET = r'''
import json, sys, re
import importlib.metadata as md
pk = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if not name:
        continue
    key = re.sub(r"[-_.]+", "-", name).lower()
    pk.setdefault(key, d.version)
try:
    pip = md.version("pip")
except Exception:
    pip = None
print(json.dumps({"prefix": sys.prefix, "executable": sys.executable, "packages": pk, "pip": pip}))
'''

REPACK_SNIPPET = r'''
import base64, hashlib, importlib.metadata as md, json, os, re, sys, zipfile
name, outdir = sys.argv[1], sys.argv[2]
d = md.distribution(name)
dist = re.sub(r"[-_.]+", "_", d.metadata["Name"])
ver = d.version
info = f"{dist}-{ver}.dist-info"
data = f"{dist}-{ver}.data"
path = os.path.join(outdir, f"{dist}-{ver}-py3-none-any.whl")
record, skipped = [], []
def add(zf, arc, blob):
    zf.writestr(arc, blob)
    digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
    record.append(f"{arc},sha256={digest},{len(blob)}")
with zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_DEFLATED) as zf:
    for f in d.files or ():
        p = str(f)
        if "__pycache__" in p or p.endswith(".pyc"):
            continue
        src = d.locate_file(f)
        if not os.path.isfile(src):
            skipped.append(p)
            continue
        parts = p.replace(os.sep, "/").split("/")
        base = parts[0]
        if base.endswith(".dist-info"):
            if parts[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"):
                continue
            arc = info + "/" + "/".join(parts[1:])
        elif base == "..":
            if "bin" in parts and parts.index("bin") < len(parts) - 1:
                arc = data + "/scripts/" + parts[-1]
            else:
                skipped.append(p)
                continue
        else:
            arc = "/".join(parts)
        with open(src, "rb") as fh:
            add(zf, arc, fh.read())
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: attn-install repack\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    add(zf, info + "/WHEEL", wheel_meta)
    record.append(info + "/RECORD,,")
    zf.writestr(info + "/RECORD", "\n".join(record) + "\n")
os.replace(path + ".part", path)
print(json.dumps({"wheel": path, "name": d.metadata["Name"], "version": ver, "skipped": skipped}))
'''


def canonical(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class EnvState:
    prefix: str
    executable: str
    packages: dict[str, str]
    pip: Optional[str]


def _json_line(out: str) -> dict[str, object]:
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            loaded = json.loads(line)
            if isinstance(loaded, dict):
                return loaded
    raise ValueError("no JSON line")


def _run_snippet(runner: Runner, python: str, snippet: str, args: tuple[str, ...], failing: str) -> str:
    """Run a snippet in the target interpreter from an empty directory; its stdout, or
    InstallError("<failing>: <last line>")."""
    with tempfile.TemporaryDirectory(prefix="attn-install-") as tmp:
        done = runner.run((python, "-c", snippet, *args), timeout=TIMEOUT, cwd=Path(tmp))
    if not done.ok:
        last = done.output.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise InstallError(f"{failing}: {last[0]}")
    return done.stdout


def read_state(runner: Runner, python: str) -> EnvState:
    """The installed distributions of the target environment, as its interpreter sees them."""
    out = _run_snippet(runner, python, STATE_SNIPPET, (), f"cannot read the environment of {python}")
    try:
        d = _json_line(out)
        packages = d["packages"]
        assert isinstance(packages, dict)
        return EnvState(str(d["prefix"]), str(d["executable"]),
                        {str(k): str(v) for k, v in packages.items()},
                        str(d["pip"]) if d.get("pip") else None)
    except (ValueError, KeyError, AssertionError):
        raise InstallError(f"cannot read the environment of {python}: unexpected output") from None


def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """name -> (version before, version after) for every distribution that changed."""
    names = sorted(set(before) | set(after))
    return {n: (before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)}


def repack(runner: Runner, python: str, name: str, outdir: Path) -> Path:
    """Rebuild the installed distribution ``name`` as a wheel in ``outdir`` (for an exact restore)."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = _run_snippet(runner, python, REPACK_SNIPPET, (name, str(outdir)),
                       f"cannot back up {name} before replacing it")
    return Path(str(_json_line(out)["wheel"]))


class EnvLock:
    """An exclusive lock on the target environment (``<prefix>/.attn-install.lock``), so two
    attn-install runs never interleave pip operations in one environment."""

    def __init__(self, prefix: str, fallback_dir: Path, wait_seconds: float,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.wait_seconds = wait_seconds
        self.say = say
        self.path = Path(prefix) / ".attn-install.lock"
        if not os.access(prefix, os.W_OK):
            digest = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_")
            self.path = fallback_dir / "locks" / f"{digest}.lock"
        self._fh: Optional[IO[str]] = None

    def __enter__(self) -> EnvLock:
        import fcntl  # noqa: PLC0415 - POSIX only; attn-install installs on Linux

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        deadline = time.monotonic() + self.wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another attn-install"
                if time.monotonic() >= deadline:
                    fh.close()
                    raise BusyError(f"the environment is locked by {holder} ({self.path}); "
                                    "wait for it to finish, or pass --lock-wait SECONDS") from None
                if not told:
                    self.say(f"waiting for {holder} to release {self.path} ...")
                    told = True
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(f"attn-install pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            import fcntl  # noqa: PLC0415

            self._fh.truncate(0)
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
