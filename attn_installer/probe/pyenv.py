"""The target Python environment: its version, torch (read, never imported), the dists that matter.

torch is read from files: ``torch/version.py`` for version / cuda / hip, and the C++11 ABI
from ``TorchConfig.cmake`` (older torch) or the mangled names in ``libc10`` (``St7__cxx11``
appears only in a CXX11-ABI build). ``arch_list`` needs torch imported, so it comes from one
bounded subprocess only when asked for.
"""

from __future__ import annotations

import json
import mmap
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from packaging.utils import canonicalize_name

from attn_installer.facts import PythonInfo, TorchInfo
from attn_installer.runner import Runner

__all__ = [
    "PythonEnv",
    "parse_torch_cmake_abi",
    "parse_torch_version_py",
    "probe_python_env",
    "read_distributions",
]

PYTHON_TIMEOUT = 20.0
ARCH_LIST_TIMEOUT = 60.0

_INTERPRETER_SNIPPET = (
    "import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
    "'implementation': sys.implementation.name, 'executable': sys.executable, "
    "'path': [p for p in sys.path if p]}))"
)
_ARCH_LIST_SNIPPET = "import json, torch; print(json.dumps(torch.cuda.get_arch_list()))"


@dataclass(frozen=True)
class PythonEnv:
    python: PythonInfo
    torch: Optional[TorchInfo]
    packages: dict[str, str]
    path: tuple[str, ...]
    notes: tuple[str, ...] = ()


def parse_torch_version_py(text: str) -> dict[str, Optional[str]]:
    """``torch/version.py`` → {"version", "cuda", "hip"} without importing torch."""
    out: dict[str, Optional[str]] = {}
    for key, pattern in (("version", r"^__version__\s*=\s*(.+)$"), ("cuda", r"^cuda\b[^=]*=\s*(.+)$"),
                         ("hip", r"^hip\b[^=]*=\s*(.+)$")):
        m = re.search(pattern, text, re.M)
        value = m.group(1).strip() if m else "None"
        out[key] = None if value == "None" else value.strip("'\"")
    return out


def parse_torch_cmake_abi(text: str) -> Optional[bool]:
    """``TorchConfig.cmake`` of torch < 2.9 sets ``-D_GLIBCXX_USE_CXX11_ABI=0|1``."""
    m = re.search(r"_GLIBCXX_USE_CXX11_ABI=([01])", text)
    return None if m is None else m.group(1) == "1"


def _abi_from_library(lib_dir: Path) -> Optional[bool]:
    for name in ("libc10.so", "libc10.dylib"):
        lib = lib_dir / name
        try:
            with open(lib, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(b"St7__cxx11") != -1:
                    return True
                # "RKSs" is `const std::string&` mangled in the pre-CXX11 ABI.
                return False if m.find(b"RKSs") != -1 else None
        except (OSError, ValueError):
            continue
    return None


def read_torch(site_dirs: Sequence[str]) -> tuple[Optional[TorchInfo], Optional[str]]:
    """Find torch in the first site dir holding ``torch/version.py``; returns (info, origin)."""
    for d in site_dirs:
        version_py = Path(d) / "torch" / "version.py"
        try:
            text = version_py.read_text(encoding="utf-8")
        except OSError:
            continue
        parsed = parse_torch_version_py(text)
        if not parsed.get("version"):
            continue
        cmake = version_py.parent / "share/cmake/Torch/TorchConfig.cmake"
        abi = None
        try:
            abi = parse_torch_cmake_abi(cmake.read_text(encoding="utf-8"))
        except OSError:
            pass
        if abi is None:
            abi = _abi_from_library(version_py.parent / "lib")
        return (TorchInfo(version=str(parsed["version"]), cuda=parsed["cuda"], hip=parsed["hip"],
                          cxx11abi=abi), str(version_py.parent))
    return None, None


def read_distributions(site_dirs: Sequence[str], wanted: Optional[frozenset[str]] = None) -> dict[str, str]:
    """Installed distributions (canonical name → version): those in *wanted* (the matrix's pinned,
    backend and watched distributions), or all of them."""
    found: dict[str, str] = {}
    for d in site_dirs:
        base = Path(d)
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith((".dist-info", ".egg-info")):
                continue
            stem = entry.name.rsplit(".", 1)[0]
            name, _, version = stem.partition("-")
            canon = canonicalize_name(name)
            if (wanted is not None and canon not in wanted) or canon in found:
                continue
            meta = _metadata_version(entry) or version
            if meta:
                found[canon] = meta
    return found


def _metadata_version(info_dir: Path) -> Optional[str]:
    for fname in ("METADATA", "PKG-INFO"):
        try:
            with open(info_dir / fname, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
        except OSError:
            continue
    return None


def probe_python_env(runner: Runner, python_exe: Optional[str], *, want_arch_list: bool,
                     distributions: Optional[frozenset[str]] = None) -> PythonEnv:
    """Probe the interpreter that will receive installs (this one unless ``python_exe`` is given)."""
    notes: list[str] = []
    if python_exe is None or Path(python_exe).resolve() == Path(sys.executable).resolve():
        info = PythonInfo(version=platform.python_version(), implementation=sys.implementation.name,
                          executable=sys.executable)
        path = tuple(p for p in sys.path if p)
        exe = sys.executable
    else:
        done = runner.run([python_exe, "-c", _INTERPRETER_SNIPPET], timeout=PYTHON_TIMEOUT)
        if not done.ok:
            from attn_installer.errors import ProbeError  # noqa: PLC0415

            raise ProbeError(f"cannot run {python_exe}: {done.output.strip() or 'no output'}")
        data = json.loads(done.stdout)
        info = PythonInfo(version=data["version"], implementation=data["implementation"],
                          executable=data["executable"])
        path = tuple(data["path"])
        exe = python_exe
    torch, origin = read_torch(path)
    packages = read_distributions(path, distributions)
    if torch is not None and want_arch_list and (torch.cuda or torch.hip):
        done = runner.run([exe, "-c", _ARCH_LIST_SNIPPET], timeout=ARCH_LIST_TIMEOUT)
        if done.ok:
            try:
                archs = tuple(str(a) for a in json.loads(done.stdout.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                notes.append("torch.cuda.get_arch_list() output not understood")
            else:
                torch = TorchInfo(torch.version, torch.cuda, torch.hip, torch.cxx11abi, archs)
        else:
            notes.append(f"torch.cuda.get_arch_list() failed: {_tail(done.output)}")
    if torch is None and origin is None:
        notes.append(f"torch is not installed for {exe}")
    return PythonEnv(info, torch, packages, path, tuple(notes))


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
