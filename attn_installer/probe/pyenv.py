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
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from packaging.utils import canonicalize_name

from attn_installer.facts import PythonInfo, TorchInfo
from attn_installer.runner import Runner

__all__ = [
    "Interpreter",
    "PythonEnv",
    "discover",
    "parse_torch_cmake_abi",
    "parse_torch_version_py",
    "probe_python_env",
    "read_build_flags",
    "read_distributions",
]

PYTHON_TIMEOUT = 20.0
ARCH_LIST_TIMEOUT = 60.0

_INTERPRETER_SNIPPET = (
    "import json, platform, sys; print(json.dumps({'version': platform.python_version(), "
    "'implementation': sys.implementation.name, 'executable': sys.executable, 'prefix': sys.prefix, "
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
    build_flags: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)


BUILD_FLAGS_LIMIT = 64 * 1024


def read_build_flags(site_dirs: Sequence[str], files: Mapping[str, str]) -> tuple[dict[str, dict[str, bool]],
                                                                                list[str]]:
    """distribution -> the flags its build was made with, from the module its wheel leaves on the
    import path (*files*: distribution -> file name, matrices/backends.toml build_flags_file), read
    as text, never imported: the first ``CONFIG = {"build_flags": {...}}`` found (FA3's
    flash_attn_config.py). Notes say what could not be read."""
    import ast  # noqa: PLC0415

    from attn_installer.files import ReadProblem, read_bounded  # noqa: PLC0415

    out: dict[str, dict[str, bool]] = {}
    notes: list[str] = []
    for dist, fname in files.items():
        for d in site_dirs:
            path = Path(d) / fname
            if not path.is_file():
                continue
            try:
                tree = ast.parse(read_bounded(path, limit=BUILD_FLAGS_LIMIT))
                value = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                             and any(isinstance(t, ast.Name) and t.id == "CONFIG" for t in n.targets))
                flags = value["build_flags"]
                out[dist] = {str(k): bool(v) for k, v in flags.items() if isinstance(v, bool)}
            except (ReadProblem, SyntaxError, ValueError, StopIteration, KeyError, TypeError, AttributeError) as e:
                notes.append(f"{path}: the build flags of {dist} could not be read ({type(e).__name__}: {e})")
            break
    return out, notes


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


@dataclass(frozen=True)
class Interpreter:
    """A Python as attn-install sees it: its version, prefix and import path."""

    executable: str
    version: str
    implementation: str
    prefix: str
    path: tuple[str, ...]

    @property
    def has_torch(self) -> bool:
        return any((Path(d) / "torch" / "version.py").is_file() for d in self.path)


def this_interpreter() -> Interpreter:
    """The interpreter running attn-install."""
    return Interpreter(sys.executable, platform.python_version(), sys.implementation.name, sys.prefix,
                       tuple(p for p in sys.path if p))


def ask_interpreter(runner: Runner, python: str) -> Optional[Interpreter]:
    """Run *python* once (from an empty folder, so nothing there shadows the stdlib); None when it
    cannot run."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="attn-install-probe-") as tmp:
        done = runner.run([python, "-c", _INTERPRETER_SNIPPET], timeout=PYTHON_TIMEOUT, cwd=Path(tmp))
    if not done.ok:
        return None
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
        return Interpreter(str(data["executable"]), str(data["version"]), str(data["implementation"]),
                           str(data["prefix"]), tuple(str(p) for p in data["path"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def discover(env: Mapping[str, str], runner: Runner, explicit: Optional[str]) -> tuple[Interpreter, str]:
    """The Python whose environment attn-install works on, and why that one.

    Order: ``--python PATH``; the running interpreter if it has torch; an active environment
    ($VIRTUAL_ENV, $CONDA_PREFIX) with torch; ``python3`` / ``python`` on PATH with torch; else the
    active environment, else the running interpreter. An interpreter counts as another
    environment only when its sys.prefix differs (every venv of one base interpreter resolves to
    the same binary, so the executables cannot tell them apart)."""
    own = this_interpreter()
    if explicit is not None:
        if Path(explicit).absolute() == Path(own.executable).absolute():
            return own, "--python"
        found = ask_interpreter(runner, explicit)
        if found is None:
            from attn_installer.errors import ProbeError  # noqa: PLC0415

            raise ProbeError(f"--python {explicit}: cannot run it (is it a Python interpreter?)")
        return (own if found.prefix == own.prefix else found), "--python"
    if own.has_torch:
        return own, "the interpreter running attn-install has torch"
    tried: list[str] = [f"{own.executable} (attn-install's own, no torch)"]
    active: Optional[Interpreter] = None
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = env.get(var)
        if not prefix or prefix == own.prefix:
            continue
        exe = Path(prefix) / "bin" / "python"
        if not exe.exists():
            continue
        found = ask_interpreter(runner, str(exe))
        if found is None or found.prefix == own.prefix:
            continue
        if found.has_torch:
            return found, f"${var} ({prefix}) has torch"
        active = active or found
        tried.append(f"{exe} (${var}, no torch)")
    for name in ("python3", "python"):
        exe_s = shutil.which(name, path=env.get("PATH", ""))
        if exe_s is None:
            continue
        found = ask_interpreter(runner, exe_s)
        if found is None or found.prefix == own.prefix:
            continue
        if found.has_torch:
            return found, f"{name} on PATH ({exe_s}) has torch"
        tried.append(f"{exe_s} ({name} on PATH, no torch)")
    if active is not None:
        return active, "the active environment (no Python with torch found: " + "; ".join(tried) + ")"
    return own, "no Python with torch found (" + "; ".join(tried) + ")"


def probe_python_env(runner: Runner, interp: Interpreter, *, want_arch_list: bool,
                     distributions: Optional[frozenset[str]] = None,
                     build_flag_files: Optional[Mapping[str, str]] = None) -> PythonEnv:
    """Probe the environment of *interp* (see :func:`discover`): torch read from its files, the
    distributions that matter, and torch's arch list when asked (one bounded subprocess)."""
    notes: list[str] = []
    info = PythonInfo(version=interp.version, implementation=interp.implementation, executable=interp.executable,
                      prefix=interp.prefix)
    path = interp.path
    exe = interp.executable
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
    wanted = {d: f for d, f in (build_flag_files or {}).items() if canonicalize_name(d) in packages}
    flags, flag_notes = read_build_flags(path, wanted)
    notes.extend(flag_notes)
    return PythonEnv(info, torch, packages, path, tuple(notes), flags)


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
