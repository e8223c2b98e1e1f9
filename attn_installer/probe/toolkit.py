"""Compilers a source build would use: nvcc (CUDA_HOME / CUDA_PATH, PATH, /usr/local/cuda,
in torch.utils.cpp_extension's order), hipcc and ROCm, the host compiler nvcc will use ($CC, which
torch passes as -ccbin, else gcc), ninja."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Optional

from attn_installer.facts import Toolkit
from attn_installer.runner import Runner

__all__ = ["host_compiler", "parse_gcc_version", "parse_nvcc_version", "probe_toolkit"]

COMMAND_TIMEOUT = 15.0


def parse_nvcc_version(text: str) -> Optional[str]:
    """``nvcc --version`` → ``12.8`` (from ``Cuda compilation tools, release 12.8, V12.8.93``)."""
    m = re.search(r"release\s+(\d+\.\d+)", text)
    return m.group(1) if m else None


def parse_gcc_version(text: str) -> Optional[str]:
    """``gcc -dumpfullversion`` → ``12.2.0``."""
    m = re.match(r"\s*(\d+(?:\.\d+){0,2})\s*$", text)
    return m.group(1) if m else None


def host_compiler(env: Mapping[str, str]) -> str:
    """The host compiler nvcc will run: a -ccbin / --compiler-bindir in NVCC_PREPEND_FLAGS or
    NVCC_APPEND_FLAGS (conda's CUDA sets one), else $CC (torch's extension builder passes it as
    -ccbin), else gcc. A directory means the gcc inside it."""
    for var in ("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS"):
        words = env.get(var, "").split()
        for i, w in enumerate(words):
            for flag in ("-ccbin", "--compiler-bindir"):
                if w == flag and i + 1 < len(words):
                    value = words[i + 1]
                elif w.startswith(flag + "="):
                    value = w[len(flag) + 1:]
                else:
                    continue
                return str(Path(value) / "gcc") if Path(value).is_dir() else value
    return env.get("CC") or "gcc"


def _nvcc_path(env: Mapping[str, str], root: Path) -> tuple[Optional[str], Optional[str]]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            nvcc = Path(home) / "bin" / "nvcc"
            return (str(nvcc) if nvcc.exists() else None), home
    found = shutil.which("nvcc", path=env.get("PATH", ""))
    if found:
        toolkit_dir = Path(found).resolve().parent.parent
        if not (toolkit_dir / "include" / "cuda_runtime.h").exists() and (root / "usr/local/cuda").exists():
            toolkit_dir = root / "usr/local/cuda"  # nvcc on PATH is a wrapper script outside the toolkit
        return found, str(toolkit_dir)
    default = root / "usr/local/cuda/bin/nvcc"
    if default.exists():
        return str(default), str(default.parent.parent)
    return None, None


def probe_toolkit(env: Mapping[str, str], runner: Runner, *, root: Path,
                  rocm: Optional[str], extra_bin: Optional[str] = None) -> Toolkit:
    """Find the compilers; every command is bounded, a missing one is None."""
    nvcc_path, cuda_home = _nvcc_path(env, root)
    nvcc = None
    if nvcc_path:
        done = runner.run([nvcc_path, "--version"], timeout=COMMAND_TIMEOUT)
        nvcc = parse_nvcc_version(done.stdout) if done.ok else None
    hipcc = shutil.which("hipcc", path=env.get("PATH", ""))
    if hipcc is None and (root / "opt/rocm/bin/hipcc").exists():
        hipcc = str(root / "opt/rocm/bin/hipcc")
    gcc = None
    done = runner.run([host_compiler(env), "-dumpfullversion"], timeout=COMMAND_TIMEOUT)
    if done.ok:
        gcc = parse_gcc_version(done.stdout)
    search = env.get("PATH", "")
    if extra_bin:
        search = extra_bin + os.pathsep + search
    ninja = shutil.which("ninja", path=search)
    return Toolkit(nvcc=nvcc, cuda_home=cuda_home if nvcc_path else None, hipcc=hipcc,
                   rocm=rocm, gcc=gcc, ninja=ninja)
