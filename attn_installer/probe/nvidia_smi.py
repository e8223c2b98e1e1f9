"""nvidia-smi and /proc readings, parsed: pure functions over recorded real output (tests/fixtures),
and the GPU records they produce. The commands themselves run in :mod:`attn_installer.probe.nvidia`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    from attn_installer.matrix.model import GpuCapability

__all__ = [
    "Board",
    "MigSlice",
    "SmiVersions",
    "capability_from_name",
    "parse_nvidia_smi_banner",
    "parse_nvidia_smi_csv",
    "parse_nvidia_smi_list",
    "parse_nvidia_smi_xml",
    "parse_proc_driver_version",
]

GIB = 1024**3
SMI_FIELDS = ("index", "name", "compute_cap", "memory.total", "driver_version", "uuid", "mig.mode.current")
"""What the probe asks nvidia-smi (``compute_cap`` needs a 510-series driver or newer)."""
SMI_FIELDS_OLD = ("index", "name", "memory.total", "driver_version", "uuid")
"""Asked again without ``compute_cap`` (and ``mig.mode.current``) when the driver rejects the field."""
SMI_QUERY = ",".join(SMI_FIELDS)
_INVALID_FIELD = "is not a valid field"


@dataclass(frozen=True)
class MigSlice:
    """A MIG device (one compute instance of a GPU instance): a GPU of its own to CUDA."""

    index: int
    """Its index on the GPU (nvidia-smi -L "Device N", NVML's MIG device index)."""
    name: str = ""
    """The full name NVML gives ("NVIDIA A100-SXM4-40GB MIG 1g.5gb"), or "" (made from the profile)."""
    profile: str = ""
    """"1g.10gb" (nvidia-smi -L)."""
    uuid: Optional[str] = None
    memory_gb: Optional[float] = None
    gpu_instance: Optional[int] = None
    compute_instance: Optional[int] = None


@dataclass(frozen=True)
class Board:
    """A physical NVIDIA GPU as NVML / nvidia-smi list it (their index, in PCI bus order)."""

    index: int
    name: str
    cc: Optional[str]
    memory_gb: Optional[float]
    uuid: Optional[str] = None
    mig: bool = False
    """MIG mode is enabled: CUDA sees its MIG devices, not the GPU."""
    slices: tuple[MigSlice, ...] = ()


@dataclass(frozen=True)
class SmiVersions:
    driver: Optional[str] = None
    """The kernel driver ("Driver Version", from the 610 series "KMD Version"), not the NVIDIA-SMI version."""
    cuda: Optional[str] = None
    """The newest CUDA the driver supports ("CUDA Version", from the 610 series "CUDA UMD Version")."""


# --------------------------------------------------------------------------- nvidia-smi parsers


def parse_nvidia_smi_csv(text: str, fields: Sequence[str] = SMI_FIELDS) -> tuple[tuple[Board, ...], Optional[str]]:
    """``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` → GPUs and the driver version.

    Sample line: ``0, NVIDIA H200, 9.0, 143771, 580.159.04, GPU-8f6c..., Disabled``. Trailing columns
    may be missing (the five-column form of the docs parses too); a value nvidia-smi cannot give
    (``[N/A]``, ``[Not Supported]``) is unknown (None).
    """
    boards: list[Board] = []
    driver: Optional[str] = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < min(len(fields), 4) or not cols[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        row = {f: _known(v) for f, v in zip(fields, cols)}
        cc = row.get("compute_cap")
        if "compute_cap" in fields and (cc is None or not re.fullmatch(r"\d+\.\d+", cc)):
            raise ValueError(f"nvidia-smi gave no compute capability ({cols[fields.index('compute_cap')]!r}); "
                             "driver too old?")
        mem = row.get("memory.total")
        uuid = row.get("uuid")
        boards.append(Board(index=int(cols[0]), name=row.get("name") or "NVIDIA GPU", cc=cc,
                            memory_gb=round(float(mem) / 1024, 1) if mem and _num(mem) else None,
                            uuid=uuid if uuid and uuid.startswith(("GPU-", "MIG-")) else None,
                            mig=row.get("mig.mode.current") == "Enabled"))
        driver = row.get("driver_version") or driver
    return tuple(boards), driver


_BANNER_DRIVER = re.compile(r"(?:Driver Version|KMD Version):\s*([0-9]+\.[0-9]+(?:\.[0-9]+)?)")
_BANNER_CUDA = re.compile(r"CUDA(?: UMD)? Version:\s*([0-9]+\.[0-9]+|N/A)")


def parse_nvidia_smi_banner(text: str) -> SmiVersions:
    """Plain ``nvidia-smi``: the kernel driver and the newest CUDA it supports.

    ``| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |``; from the 610 series
    ``| NVIDIA-SMI 610.43.02   KMD Version: 610.43.02   CUDA UMD Version: 13.3 |``. "NVIDIA-SMI" is the
    tool's own version (it differs from the driver when the userspace does not match); "CUDA Version:
    N/A" (no usable libcuda) and drivers older than the 400 series (no CUDA field) give no CUDA version.
    """
    driver = _BANNER_DRIVER.search(text)
    cuda = _BANNER_CUDA.search(text)
    return SmiVersions(driver.group(1) if driver else None,
                       cuda.group(1) if cuda and cuda.group(1) != "N/A" else None)


def parse_nvidia_smi_xml(text: str) -> dict[str, Any]:
    """``nvidia-smi -q -x``: driver and CUDA version, and per GPU its name, UUID, memory, MIG mode and
    MIG devices (index, GPU instance, compute instance, memory)."""
    root = ET.fromstring(text)
    out: dict[str, Any] = {
        "driver_version": _version_in(root.findtext("driver_version")),
        "cuda_version": _version_in(root.findtext("cuda_version"), parts=2),
        "gpus": [],
    }
    for gpu in root.findall("gpu"):
        migs = []
        for m in gpu.findall("mig_devices/mig_device"):
            migs.append({
                "index": _int(m.findtext("index")),
                "gpu_instance": _int(m.findtext("gpu_instance_id")),
                "compute_instance": _int(m.findtext("compute_instance_id")),
                "memory_gb": _mib_to_gib(m.findtext("fb_memory_usage/total")),
            })
        out["gpus"].append({
            "name": (gpu.findtext("product_name") or "").strip(),
            "uuid": (gpu.findtext("uuid") or "").strip() or None,
            "architecture": (gpu.findtext("product_architecture") or "").strip() or None,
            "mig": (gpu.findtext("mig_mode/current_mig") or "").strip() == "Enabled",
            "memory_gb": _mib_to_gib(gpu.findtext("fb_memory_usage/total")),
            "mig_devices": migs,
        })
    return out


_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)\s*$")


def parse_nvidia_smi_list(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi -L`` → [{index, name, uuid, migs: [{index, profile, uuid}]}].

    ``GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-7fdaf0a5-...)`` then, with MIG, one line per MIG device:
    ``  MIG 1g.10gb     Device  0: (UUID: MIG-feb88891-...)``.
    """
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        g = _LIST_GPU.match(line.strip())
        if g:
            out.append({"index": int(g.group(1)), "name": g.group(2), "uuid": g.group(3), "migs": []})
            continue
        m = _LIST_MIG.match(line)
        if m and out:
            out[-1]["migs"].append({"index": int(m.group(2)), "profile": m.group(1), "uuid": m.group(3)})
    return out


def parse_proc_driver_version(text: str) -> Optional[str]:
    """``/proc/driver/nvidia/version``: ``NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15 ...``."""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)", text)
    if m:
        return m.group(1)
    m = re.search(r"NVRM version:.*?\s([0-9]{3}\.[0-9]+(?:\.[0-9]+)?)\s", text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- compute capability table


def capability_from_name(name: str, table: Sequence[GpuCapability]) -> Optional[GpuCapability]:
    """The row of ``matrices/gpus.toml`` whose product name is the GPU's (longest name wins), or None."""
    best: Optional[GpuCapability] = None
    best_len = 0
    for row in table:
        n = row.matches(name)
        if n > best_len:
            best, best_len = row, n
    return best


def _known(v: str) -> Optional[str]:
    v = v.strip()
    return None if not v or v.startswith("[") or v in ("N/A", "Not Supported") else v


def _version_in(text: Optional[str], parts: int = 3) -> Optional[str]:
    """The version a field starts with ("13.3 [Deprecated; ...]" → 13.3); None for N/A or nothing."""
    m = re.match(r"\s*(\d+\.\d+" + (r"(?:\.\d+)?" if parts == 3 else "") + ")", text or "")
    return m.group(1) if m else None


def _mib_to_gib(text: Optional[str]) -> Optional[float]:
    value = (text or "").replace("MiB", "").strip()
    return round(float(value) / 1024, 1) if value and _num(value) else None


def _int(text: Optional[str]) -> Optional[int]:
    value = (text or "").strip()
    return int(value) if value.isdigit() else None


def _cc_of(arch: str) -> Optional[str]:
    m = re.fullmatch(r"sm_(\d+)(\d)[af]?", arch)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
