"""The host: OS, machine, glibc, the CPUs and memory this process may use, and where it runs.

cgroup limits matter: a container on a 1 TB host limited to 32 GiB must plan builds for 32 GiB.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Mapping, Optional

from attn_installer.facts import Host

__all__ = [
    "parse_cgroup_cpu_max",
    "parse_cgroup_memory_limit",
    "parse_meminfo_total",
    "probe_host",
]

GIB = 1024**3
# cgroup v1 reports "no limit" as a huge page-aligned number (9223372036854771712).
_UNLIMITED = 1 << 60


def parse_meminfo_total(text: str) -> Optional[int]:
    """``/proc/meminfo`` → MemTotal in bytes."""
    m = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def parse_cgroup_memory_limit(text: str) -> Optional[int]:
    """cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes`` → bytes, None when unlimited."""
    value = text.strip()
    if not value or value == "max" or not value.isdigit():
        return None
    n = int(value)
    return None if n >= _UNLIMITED else n


def parse_cgroup_cpu_max(text: str) -> Optional[float]:
    """cgroup v2 ``cpu.max`` (``"200000 100000"`` → 2.0 CPUs; ``"max 100000"`` → None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_count(root: Path) -> tuple[int, str]:
    try:
        count = len(os.sched_getaffinity(0))  # type: ignore[attr-defined,unused-ignore]
        source = "sched_getaffinity"
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
        source = "os.cpu_count"
    quota = None
    text = _read(root / "sys/fs/cgroup/cpu.max")
    if text is not None:
        quota = parse_cgroup_cpu_max(text)
    else:
        q, p = _read(root / "sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read(root / "sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if q and p and q.strip().lstrip("-").isdigit() and p.strip().isdigit() and int(q) > 0:
            quota = int(q) / int(p)
    if quota is not None and quota < count:
        return max(1, int(quota)), "cgroup cpu quota"
    return max(1, count), source


def _memory_bytes(root: Path) -> tuple[Optional[int], str]:
    total = None
    text = _read(root / "proc/meminfo")
    if text:
        total = parse_meminfo_total(text)
    limit = None
    for rel in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        t = _read(root / rel)
        if t is not None:
            limit = parse_cgroup_memory_limit(t)
            if limit is not None:
                break
    if limit is not None and (total is None or limit < total):
        return limit, "cgroup memory limit"
    return total, "/proc/meminfo"


def _glibc(os_name: str) -> Optional[str]:
    if os_name != "linux":
        return None
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.35"
    except (AttributeError, ValueError, OSError):
        text = None
    if text and text.startswith("glibc "):
        return text.split()[1]
    lib, version = platform.libc_ver()
    return version if lib == "glibc" and version else None


def probe_host(env: Mapping[str, str], *, root: Path) -> tuple[Host, dict[str, str]]:
    """Read host facts; returns the Host and the source of the resource figures."""
    system = platform.system().lower()
    os_name = {"linux": "linux", "windows": "windows", "darwin": "darwin"}.get(system, "linux")
    cpus, cpu_src = _cpu_count(root)
    mem, mem_src = _memory_bytes(root)
    proc_version = _read(root / "proc/version") or ""
    cgroup = _read(root / "proc/1/cgroup") or ""
    host = Host(
        os=os_name,
        machine=platform.machine() or "unknown",
        glibc=_glibc(os_name),
        cpu_count=cpus,
        memory_gb=round(mem / GIB, 1) if mem else 1.0,
        colab="COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or "COLAB_BACKEND_VERSION" in env,
        kaggle="KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env,
        wsl="microsoft" in proc_version.lower() or "WSL_DISTRO_NAME" in env,
        container=(root / ".dockerenv").exists()
        or (root / "run/.containerenv").exists()
        or "KUBERNETES_SERVICE_HOST" in env
        or any(k in cgroup for k in ("docker", "kubepods", "containerd", "lxc")),
    )
    return host, {"host.cpu_count": cpu_src, "host.memory_gb": mem_src if mem else "unknown"}
