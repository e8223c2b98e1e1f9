"""NVIDIA GPUs and driver: NVML first, then nvidia-smi, then /proc/driver/nvidia/version.

Each source is a fetch function (the only code here that touches NVML or runs a command) and a pure
``parse_*`` function tested against recorded real output in ``tests/fixtures``. The sources in order:

1. NVML (``pynvml``): GPUs, compute capability, memory, UUIDs, MIG devices with their GPU / compute
   instance, driver and CUDA version.
2. ``nvidia-smi --query-gpu=...,compute_cap,...``; drivers before the 510 series reject ``compute_cap``
   ("is not a valid field to query"), so it is asked again without it and the compute capability comes
   from the GPU name through NVIDIA's published table (``matrices/gpus.toml``, marked in ``sources``).
   When no query answers, ``nvidia-smi -q -x`` lists the GPUs.
3. ``nvidia-smi -q -x``: CUDA version, MIG mode and MIG devices (GPU / compute instance, memory);
   ``nvidia-smi -L``: the MIG devices' UUIDs and profiles; the plain ``nvidia-smi`` banner for driver and
   CUDA version when the XML gives none ("CUDA Version: 12.4", from the 610 series "KMD Version" and
   "CUDA UMD Version").
4. ``/proc/driver/nvidia/version``: the kernel module's version when nothing else answers.

What CUDA sees is then worked out from that list as the NVIDIA MIG user guide describes it (a MIG
device is a GPU of its own to CUDA; before R570 one MIG device per process and no other GPU, from R570
one compute instance per GPU instance) and ``CUDA_VISIBLE_DEVICES`` is applied the way torch parses
it (indices, UUID prefixes, MIG UUIDs; a repeated entry hides everything; the list stops at the first
entry that matches nothing).
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from attn_installer.facts import Driver, Gpu
from attn_installer.probe.text import summary as _summary
from attn_installer.runner import Runner

if TYPE_CHECKING:
    from attn_installer.matrix.model import GpuCapability

__all__ = [
    "Board",
    "MigSlice",
    "NvidiaReading",
    "SmiVersions",
    "apply_visible_devices",
    "capability_from_name",
    "cuda_devices",
    "parse_nvidia_smi_banner",
    "parse_nvidia_smi_csv",
    "parse_nvidia_smi_list",
    "parse_nvidia_smi_xml",
    "parse_nvml_boards",
    "parse_nvml_reading",
    "parse_proc_driver_version",
    "probe_nvidia",
]

GIB = 1024**3
SMI_FIELDS = ("index", "name", "compute_cap", "memory.total", "driver_version", "uuid", "mig.mode.current")
"""What the probe asks nvidia-smi (``compute_cap`` needs a 510-series driver or newer)."""
SMI_FIELDS_OLD = ("index", "name", "memory.total", "driver_version", "uuid")
"""Asked again without ``compute_cap`` (and ``mig.mode.current``) when the driver rejects the field."""
SMI_QUERY = ",".join(SMI_FIELDS)
COMMAND_TIMEOUT = 10.0
NVML_TIMEOUT = 10.0
MIG_ONE_PER_PROCESS_BEFORE = 570
"""Before R570 CUDA enumerates a single MIG device per process (NVIDIA MIG user guide)."""
MAX_MIG_DEVICES = 64
TABLE = "matrices/gpus.toml"
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


@dataclass(frozen=True)
class NvidiaReading:
    gpus: tuple[Gpu, ...] = ()
    driver: Optional[Driver] = None
    source: Optional[str] = None
    driver_source: Optional[str] = None
    notes: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    """Where the other facts came from (gpus.compute_capability, driver.cuda, gpus.mig)."""
    memory_unknown: tuple[int, ...] = ()
    """Indices of GPUs whose memory no source gave (written as 0 in the facts: the contract wants a number)."""


# --------------------------------------------------------------------------- NVML


def read_nvml(nvml: Any) -> dict[str, Any]:
    """Query NVML (module ``pynvml``) into a plain dict; raises whatever NVML raises.

    The shape matches the recorded ``nvml-and-torch.json`` fixture so the parse step is pure.
    """
    nvml.nvmlInit()
    try:
        reading: dict[str, Any] = {
            "nvmlSystemGetDriverVersion": _s(nvml.nvmlSystemGetDriverVersion()),
            "nvmlSystemGetCudaDriverVersion_v2": nvml.nvmlSystemGetCudaDriverVersion_v2(),
            "devices": [],
        }
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            dev: dict[str, Any] = {
                "nvmlDeviceGetName": _s(nvml.nvmlDeviceGetName(h)),
                "nvmlDeviceGetCudaComputeCapability": list(
                    nvml.nvmlDeviceGetCudaComputeCapability(h)
                ),
                "nvmlDeviceGetMemoryInfo.total": int(nvml.nvmlDeviceGetMemoryInfo(h).total),
                "nvmlDeviceGetUUID": _s(nvml.nvmlDeviceGetUUID(h)),
                "mig_devices": [],
            }
            current, pending = 0, 0
            try:
                current, pending = nvml.nvmlDeviceGetMigMode(h)
            except Exception:  # noqa: BLE001, S110 - MIG not supported on this GPU
                pass
            dev["nvmlDeviceGetMigMode"] = f"[{current}, {pending}]"
            if current == 1:
                for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        m = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except Exception:  # noqa: BLE001 - empty MIG slot
                        continue
                    mig: dict[str, Any] = {
                        "index": j,
                        "nvmlDeviceGetName": _s(nvml.nvmlDeviceGetName(m)),
                        "nvmlDeviceGetMemoryInfo.total": int(nvml.nvmlDeviceGetMemoryInfo(m).total),
                        "nvmlDeviceGetUUID": _s(nvml.nvmlDeviceGetUUID(m)),
                    }
                    for key in ("nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId"):
                        try:
                            mig[key] = int(getattr(nvml, key)(m))
                        except Exception:  # noqa: BLE001, S110 - older NVML: instance unknown
                            pass
                    dev["mig_devices"].append(mig)
            reading["devices"].append(dev)
        return reading
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - shutdown failure changes nothing we report
            pass


def parse_nvml_boards(reading: dict[str, Any]) -> tuple[tuple[Board, ...], Driver]:
    """An NVML reading (see :func:`read_nvml`) as physical GPUs with their MIG devices, and the driver."""
    cuda_int = int(reading["nvmlSystemGetCudaDriverVersion_v2"])
    driver = Driver(
        vendor="nvidia",
        version=str(reading["nvmlSystemGetDriverVersion"]),
        cuda=f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}",
    )
    boards: list[Board] = []
    for i, dev in enumerate(reading["devices"]):
        major, minor = (int(x) for x in dev["nvmlDeviceGetCudaComputeCapability"])
        mode = str(dev.get("nvmlDeviceGetMigMode", "[0, 0]"))
        migs = dev.get("mig_devices") or []
        slices = tuple(
            MigSlice(index=int(m.get("index", j)), name=str(m["nvmlDeviceGetName"]),
                     uuid=m.get("nvmlDeviceGetUUID"),
                     memory_gb=round(m["nvmlDeviceGetMemoryInfo.total"] / GIB, 1),
                     gpu_instance=m.get("nvmlDeviceGetGpuInstanceId"),
                     compute_instance=m.get("nvmlDeviceGetComputeInstanceId"))
            for j, m in enumerate(migs))
        boards.append(Board(index=i, name=str(dev["nvmlDeviceGetName"]), cc=f"{major}.{minor}",
                            memory_gb=round(dev["nvmlDeviceGetMemoryInfo.total"] / GIB, 1),
                            uuid=dev.get("nvmlDeviceGetUUID"),
                            mig=bool(slices) or mode.startswith("[1"), slices=slices))
    return tuple(boards), driver


def parse_nvml_reading(reading: dict[str, Any]) -> tuple[tuple[Gpu, ...], Driver]:
    """An NVML reading as the GPUs CUDA enumerates (no CUDA_VISIBLE_DEVICES) and the driver."""
    boards, driver = parse_nvml_boards(reading)
    gpus, _notes = cuda_devices(boards, None, driver.version)
    return gpus, driver


def _nvml_with_timeout(nvml: Any, timeout: float) -> dict[str, Any]:
    """Run :func:`read_nvml` in a daemon thread so a wedged driver cannot hang the probe."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["reading"] = read_nvml(nvml)
        except BaseException as e:  # noqa: BLE001 - reported as "unknown" by the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True, name="attn-install-nvml")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"NVML did not answer within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["reading"]  # type: ignore[no-any-return]


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


# --------------------------------------------------------------------------- what CUDA sees


def cuda_devices(boards: Sequence[Board], visible: Optional[str], driver: Optional[str],
                 device_order: Optional[str] = None) -> tuple[tuple[Gpu, ...], list[str]]:
    """The GPUs CUDA enumerates on these boards under ``CUDA_VISIBLE_DEVICES=visible``, numbered as
    CUDA numbers them, and notes on what was assumed.

    A MIG-enabled GPU contributes its MIG devices, one per GPU instance (from R570), or, before R570,
    CUDA sees only the first MIG device and no other GPU (NVIDIA MIG user guide, "CUDA Device
    Enumeration"). Boards without a compute capability must have been left out by the caller.
    """
    notes: list[str] = []
    by_board = {b.index: b for b in boards}
    chosen: list[tuple[Board, Optional[MigSlice]]] = []
    if visible is None:
        for b in boards:
            chosen.extend(_members(b, notes))
    else:
        for b, s in _select(boards, visible, notes):
            if s is None and b.mig:
                chosen.extend(_members(b, notes))
            else:
                chosen.append((b, s))
    major = _driver_major(driver)
    migs = [(b, s) for b, s in chosen if s is not None]
    if migs and major is not None and major < MIG_ONE_PER_PROCESS_BEFORE:
        dropped = len(chosen) - 1
        chosen = [migs[0]]
        if dropped:
            notes.append(f"driver {driver}: before R570 CUDA enumerates one MIG device per process and no other GPU "
                         f"(NVIDIA MIG user guide); {dropped} more device(s) hidden from CUDA")
    elif migs:
        seen: set[tuple[int, int]] = set()
        kept: list[tuple[Board, Optional[MigSlice]]] = []
        unknown_gi = False
        for b, s in chosen:
            if s is not None:
                if s.gpu_instance is None:
                    unknown_gi = True
                elif (b.index, s.gpu_instance) in seen:
                    continue
                else:
                    seen.add((b.index, s.gpu_instance))
            kept.append((b, s))
        if len(kept) < len(chosen):
            notes.append("CUDA enumerates one compute instance per MIG GPU instance (NVIDIA MIG user guide): "
                         f"{len(chosen) - len(kept)} MIG device(s) sharing a GPU instance hidden")
        if unknown_gi:
            notes.append("the GPU instance of some MIG devices is unknown (no NVML, no nvidia-smi -q -x): "
                         "each is counted as a CUDA device")
        mig_seen = 0
        chosen = []
        for b, s in kept:
            if s is not None:
                mig_seen += 1
                if mig_seen > MAX_MIG_DEVICES:
                    continue
            chosen.append((b, s))
    if device_order != "PCI_BUS_ID" and len({by_board[b.index].name for b, _ in chosen}) > 1:
        notes.append("mixed GPUs: CUDA numbers them fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; these indices "
                     "are in PCI bus order (as nvidia-smi)")
    gpus = tuple(_gpu(i, b, s) for i, (b, s) in enumerate(chosen))
    return gpus, notes


def apply_visible_devices(gpus: tuple[Gpu, ...], value: Optional[str]) -> tuple[tuple[Gpu, ...], Optional[str]]:
    """Filter and renumber plain GPUs (no MIG) as ``CUDA_VISIBLE_DEVICES`` does; returns (gpus, note)."""
    if value is None:
        return gpus, None
    boards = [Board(index=g.index, name=g.name, cc=g.compute_capability or _cc_of(g.arch), memory_gb=g.memory_gb,
                    uuid=g.uuid) for g in gpus]
    notes: list[str] = []
    picked = _select(boards, value, notes)
    by_index = {g.index: g for g in gpus}
    out = tuple(replace(by_index[b.index], index=i) for i, (b, _s) in enumerate(picked))
    return out, (notes[-1] if notes else None)


def _members(b: Board, notes: list[str]) -> list[tuple[Board, Optional[MigSlice]]]:
    if not b.mig:
        return [(b, None)]
    if not b.slices:
        notes.append(f"GPU {b.index} ({b.name}) has MIG mode enabled but no MIG device: CUDA cannot use it")
    return [(b, s) for s in b.slices]


def _strtoul(s: str) -> int:
    """The number a string starts with, as CUDA reads an index ("1gpu" is 1); -1 when none."""
    m = re.match(r"[+-]?\d+", s)
    return int(m.group(0)) if m else -1


def _select(boards: Sequence[Board], value: str, notes: list[str]) -> list[tuple[Board, Optional[MigSlice]]]:
    """``CUDA_VISIBLE_DEVICES`` applied the way torch parses it (torch/cuda/__init__.py
    _parse_visible_devices, checked against driver 525.60.13 in pytorch/pytorch#92315): a list of
    indices, or of GPU-UUID prefixes, or of MIG-UUIDs, chosen by its first entry; the list stops at the
    first entry that is not of that kind or matches nothing; a repeated entry hides every GPU."""
    entries = value.split(",")
    first = entries[0].strip()
    out: list[tuple[Board, Optional[MigSlice]]] = []
    if first.startswith(("GPU-", "MIG-")):
        prefix = first[:4]
        taken: list[str] = []
        for raw in entries:
            e = raw.strip()
            if e in taken:
                notes.append(f"CUDA_VISIBLE_DEVICES names {e!r} twice: CUDA then sees no GPU")
                return []
            if not e.startswith(prefix):
                notes.append(f"CUDA_VISIBLE_DEVICES entry {e!r} is not a {prefix}UUID like the first; later entries "
                             "ignored")
                break
            hit = _by_uuid(boards, e)
            if hit is None:
                notes.append(f"CUDA_VISIBLE_DEVICES entry {e!r} matches no GPU (or more than one); later entries "
                             "ignored")
                break
            if hit in out:
                notes.append(f"CUDA_VISIBLE_DEVICES names {e!r} twice: CUDA then sees no GPU")
                return []
            taken.append(e)
            out.append(hit)
            if hit[1] is None and hit[0].mig:
                notes.append(f"CUDA_VISIBLE_DEVICES names MIG-enabled GPU {hit[0].index} by its GPU UUID: CUDA "
                             "documents MIG devices chosen by their MIG UUID (nvidia-smi -L); read as its MIG devices")
        return out
    by_index = {b.index: b for b in boards}
    picked: list[int] = []
    for raw in entries:
        idx = _strtoul(raw.strip())
        if idx in picked:
            notes.append(f"CUDA_VISIBLE_DEVICES names index {idx} twice: CUDA then sees no GPU")
            return []
        if idx < 0:
            if raw.strip() and not re.fullmatch(r"-\d+", raw.strip()):
                notes.append(f"CUDA_VISIBLE_DEVICES entry {raw.strip()!r} is not an index; later entries ignored")
            break
        if idx not in by_index:
            notes.append(f"CUDA_VISIBLE_DEVICES entry {raw.strip()!r} matches no GPU; later entries ignored")
            break
        picked.append(idx)
        b = by_index[idx]
        if b.mig:
            notes.append(f"CUDA_VISIBLE_DEVICES index {idx} names MIG-enabled GPU {idx}: CUDA documents MIG devices "
                         "chosen by their MIG UUID (nvidia-smi -L); read as its MIG devices")
        out.append((b, None))
    return out


def _by_uuid(boards: Sequence[Board], entry: str) -> Optional[tuple[Board, Optional[MigSlice]]]:
    """The one GPU or MIG device whose UUID starts with *entry*; the pre-R470 form
    ``MIG-GPU-<uuid>/<gpu instance>/<compute instance>`` too. None when none or several match."""
    old = re.fullmatch(r"MIG-(GPU-[0-9a-fA-F-]+)/(\d+)/(\d+)", entry)
    hits: list[tuple[Board, Optional[MigSlice]]] = []
    for b in boards:
        if old:
            if b.uuid and b.uuid.startswith(old.group(1)):
                hits.extend((b, s) for s in b.slices
                            if s.gpu_instance == int(old.group(2)) and s.compute_instance == int(old.group(3)))
            continue
        if b.uuid and b.uuid.startswith(entry):
            hits.append((b, None))
        hits.extend((b, s) for s in b.slices if s.uuid and s.uuid.startswith(entry))
    return hits[0] if len(hits) == 1 else None


def _gpu(index: int, b: Board, s: Optional[MigSlice]) -> Gpu:
    assert b.cc is not None
    major, minor = b.cc.split(".")
    arch = f"sm_{major}{minor}"
    if s is None:
        return Gpu(index=index, vendor="nvidia", name=b.name, arch=arch, compute_capability=b.cc,
                   memory_gb=b.memory_gb if b.memory_gb is not None else 0.0, uuid=b.uuid)
    name = s.name or (f"{b.name} MIG {s.profile}" if s.profile else f"{b.name} MIG device {s.index}")
    return Gpu(index=index, vendor="nvidia", name=name, arch=arch, compute_capability=b.cc,
               memory_gb=s.memory_gb if s.memory_gb is not None else 0.0, uuid=s.uuid, mig=True)


# --------------------------------------------------------------------------- cascade


def probe_nvidia(
    runner: Runner,
    *,
    root: Path,
    nvml: Any = None,
    visible: Optional[str] = None,
    device_order: Optional[str] = None,
    capabilities: Sequence[GpuCapability] = (),
) -> NvidiaReading:
    """NVML → nvidia-smi → /proc/driver/nvidia/version. Never raises; unknown is None.

    *capabilities* is NVIDIA's compute capability table (``matrices/gpus.toml``) for drivers whose
    nvidia-smi cannot report it."""
    notes: list[str] = []
    if nvml is False:
        notes.append("NVML skipped (ATTN_INSTALL_NO_NVML)")
        nvml = None
    elif nvml is None:
        try:
            import pynvml  # noqa: PLC0415 - lazy: NVML costs time and may be absent

            nvml = pynvml
        except Exception as e:  # noqa: BLE001
            notes.append(f"NVML unavailable ({type(e).__name__}: {e})")
            nvml = None
    if nvml is not None:
        try:
            boards, driver = parse_nvml_boards(_nvml_with_timeout(nvml, NVML_TIMEOUT))
        except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, RM version mismatch…
            notes.append(f"NVML failed: {_nvml_error(e)}")
        else:
            gpus, more = cuda_devices(boards, visible, driver.version, device_order)
            notes.extend(more)
            sources = {"gpus.compute_capability": "nvml", "driver.cuda": "nvml"}
            if any(b.mig for b in boards):
                sources["gpus.mig"] = "nvml"
            return NvidiaReading(gpus, driver, "nvml", "nvml", tuple(notes), sources)
    return _probe_smi(runner, root, visible, device_order, capabilities, notes)


def _probe_smi(runner: Runner, root: Path, visible: Optional[str], device_order: Optional[str],
               capabilities: Sequence[GpuCapability], notes: list[str]) -> NvidiaReading:
    sources: dict[str, str] = {}
    smi = _query(runner, SMI_FIELDS)
    boards: tuple[Board, ...] = ()
    drv: Optional[str] = None
    listed = ""
    if smi.not_found:
        return _from_proc(root, notes)
    if _INVALID_FIELD in smi.output:
        notes.append(f"nvidia-smi has no compute_cap query field ({_summary(smi.output)}): asked again without it")
        smi = _query(runner, SMI_FIELDS_OLD)
        fields: Sequence[str] = SMI_FIELDS_OLD
    else:
        fields = SMI_FIELDS
    if smi.ok:
        try:
            boards, drv = parse_nvidia_smi_csv(smi.stdout, fields)
            listed = "nvidia-smi"
        except ValueError as e:
            notes.append(f"nvidia-smi output not understood: {e}")
    elif smi.timed_out:
        notes.append("nvidia-smi timed out")
    elif _INVALID_FIELD not in smi.output:
        notes.append(f"nvidia-smi --query-gpu failed: {_summary(smi.output)}{_mismatch_hint(smi.output, root)}")
    if smi.timed_out:
        return _from_proc(root, notes)

    cuda: Optional[str] = None
    xml = runner.run(["nvidia-smi", "-q", "-x"], timeout=COMMAND_TIMEOUT)
    parsed: Optional[dict[str, Any]] = None
    if xml.ok:
        try:
            parsed = parse_nvidia_smi_xml(xml.stdout)
        except ET.ParseError as e:
            notes.append(f"nvidia-smi -q -x output not understood: {e}")
    if parsed is not None:
        cuda = parsed["cuda_version"]
        if cuda:
            sources["driver.cuda"] = "nvidia-smi -q -x"
        if not boards and parsed["gpus"]:
            boards = tuple(Board(index=i, name=g["name"] or "NVIDIA GPU", cc=None, memory_gb=g["memory_gb"],
                                 uuid=g["uuid"]) for i, g in enumerate(parsed["gpus"]))
            drv = parsed["driver_version"]
            listed = "nvidia-smi -q -x"
        boards = _with_xml_mig(boards, parsed["gpus"])
    if not boards:
        return _from_proc(root, notes)
    banner_driver: Optional[str] = None
    if cuda is None:
        banner = runner.run(["nvidia-smi"], timeout=COMMAND_TIMEOUT)
        if banner.ok:
            versions = parse_nvidia_smi_banner(banner.stdout)
            cuda, banner_driver = versions.cuda, versions.driver
            if cuda:
                sources["driver.cuda"] = "nvidia-smi banner"
    drv = drv or banner_driver
    if any(b.mig for b in boards):
        boards = _with_list(runner, boards, notes, sources)
    boards = _with_capabilities(boards, capabilities, notes, sources, drv)
    gpus, more = cuda_devices(boards, visible, drv, device_order)
    notes.extend(more)
    unknown = tuple(g.index for g in gpus if g.memory_gb == 0.0)
    if unknown:
        notes.append(f"GPU {', '.join(map(str, unknown))}: memory unknown (nvidia-smi gave none)")
    smi_driver = Driver("nvidia", drv, cuda=cuda) if drv else None
    return NvidiaReading(gpus, smi_driver, listed, "nvidia-smi" if drv else None, tuple(notes), sources, unknown)


def _query(runner: Runner, fields: Sequence[str]) -> Any:
    return runner.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                      timeout=COMMAND_TIMEOUT)


def _with_xml_mig(boards: tuple[Board, ...], xml_gpus: list[dict[str, Any]]) -> tuple[Board, ...]:
    """MIG mode and MIG devices from ``nvidia-smi -q -x``, matched by UUID (else by position)."""
    uuids = [g.get("uuid") for g in xml_gpus]
    out = []
    for i, b in enumerate(boards):
        g = xml_gpus[uuids.index(b.uuid)] if b.uuid and uuids.count(b.uuid) == 1 else None
        if g is None and len(xml_gpus) == len(boards):
            g = xml_gpus[i]
        if g is None:
            out.append(b)
            continue
        slices = tuple(MigSlice(index=m["index"] if m["index"] is not None else j, memory_gb=m["memory_gb"],
                                gpu_instance=m["gpu_instance"], compute_instance=m["compute_instance"])
                       for j, m in enumerate(g["mig_devices"]))
        out.append(replace(b, mig=b.mig or g["mig"], slices=slices if (b.mig or g["mig"]) else (),
                           memory_gb=b.memory_gb if b.memory_gb is not None else g["memory_gb"]))
    return tuple(out)


def _with_list(runner: Runner, boards: tuple[Board, ...], notes: list[str],
               sources: dict[str, str]) -> tuple[Board, ...]:
    """MIG devices' UUIDs and profiles from ``nvidia-smi -L``, matched by the GPU's UUID (else index)."""
    done = runner.run(["nvidia-smi", "-L"], timeout=COMMAND_TIMEOUT)
    if not done.ok:
        notes.append("MIG is enabled but nvidia-smi -L did not answer: the MIG devices' UUIDs are unknown")
        return boards
    listed = parse_nvidia_smi_list(done.stdout)
    by_uuid = {g["uuid"]: g for g in listed}
    by_index = {g["index"]: g for g in listed}
    out = []
    for b in boards:
        g = (by_uuid.get(b.uuid) if b.uuid and [x["uuid"] for x in listed].count(b.uuid) == 1 else None) \
            or by_index.get(b.index)
        if g is None or not b.mig:
            out.append(b)
            continue
        have = {s.index: s for s in b.slices}
        slices = []
        for m in g["migs"]:
            s = have.get(m["index"], MigSlice(index=m["index"]))
            slices.append(replace(s, profile=m["profile"], uuid=m["uuid"]))
        out.append(replace(b, slices=tuple(slices) or b.slices))
    sources["gpus.mig"] = "nvidia-smi -q -x + nvidia-smi -L" if any(s.gpu_instance is not None for b in out
                                                                    for s in b.slices) else "nvidia-smi -L"
    return tuple(out)


def _with_capabilities(boards: tuple[Board, ...], table: Sequence[GpuCapability], notes: list[str],
                       sources: dict[str, str], driver: Optional[str]) -> tuple[Board, ...]:
    """Fill a missing compute capability from the GPU name (matrices/gpus.toml); a GPU the table does
    not name is left out, with a note (its compute capability is unknown, never guessed)."""
    if all(b.cc for b in boards):
        sources["gpus.compute_capability"] = "nvidia-smi --query-gpu compute_cap"
        return boards
    out = []
    looked_up = False
    for b in boards:
        if b.cc:
            out.append(b)
            continue
        row = capability_from_name(b.name, table)
        if row is None:
            notes.append(f"GPU {b.index} ({b.name}): compute capability unknown: nvidia-smi"
                         + (f" {driver}" if driver else "") + f" cannot report it and {TABLE} does not name this "
                         "GPU; left out")
            continue
        looked_up = True
        out.append(replace(b, cc=row.cc))
    if looked_up:
        sources["gpus.compute_capability"] = f"{TABLE} by GPU name (NVIDIA's published values: nvidia-smi gave none)"
    return tuple(out)


def _from_proc(root: Path, notes: list[str]) -> NvidiaReading:
    try:
        text = (root / "proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return NvidiaReading(notes=tuple(notes))
    version = parse_proc_driver_version(text)
    if version is None:
        return NvidiaReading(notes=tuple(notes))
    notes.append("NVIDIA kernel driver loaded but no GPU could be listed (NVML and nvidia-smi failed)")
    return NvidiaReading((), Driver("nvidia", version), None, "/proc/driver/nvidia/version", tuple(notes))


def _mismatch_hint(output: str, root: Path) -> str:
    """For nvidia-smi's "Driver/library version mismatch": the kernel module's version and what to do."""
    if "mismatch" not in output.lower():
        return ""
    try:
        kmod = parse_proc_driver_version((root / "proc/driver/nvidia/version").read_text(errors="replace"))
    except OSError:
        kmod = None
    where = f" (the loaded kernel module is {kmod})" if kmod else ""
    return f"{where}; the driver's libraries and kernel module differ: reboot or reload the driver"


def _nvml_error(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if "RM_VERSION_MISMATCH" in type(e).__name__.upper() or "version mismatch" in text.lower():
        return f"{text} (driver and kernel module versions differ: reboot or reload the driver)"
    return text


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


def _driver_major(driver: Optional[str]) -> Optional[int]:
    m = re.match(r"(\d+)", driver or "")
    return int(m.group(1)) if m else None


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
