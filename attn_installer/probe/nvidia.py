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
entry that matches nothing: :mod:`attn_installer.probe.cuda_visible`). The parsers and the records
they make are in :mod:`attn_installer.probe.nvidia_smi`.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from attn_installer.facts import Driver, Gpu
from attn_installer.probe.cuda_visible import apply_visible_devices, cuda_devices
from attn_installer.probe.nvidia_smi import (
    _INVALID_FIELD,
    GIB,
    SMI_FIELDS,
    SMI_FIELDS_OLD,
    SMI_QUERY,
    Board,
    MigSlice,
    SmiVersions,
    _s,
    capability_from_name,
    parse_nvidia_smi_banner,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
    parse_proc_driver_version,
)
from attn_installer.probe.text import summary as _summary
from attn_installer.runner import Runner

if TYPE_CHECKING:
    from attn_installer.matrix.model import GpuCapability

__all__ = [
    "SMI_QUERY",
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
COMMAND_TIMEOUT = 10.0
NVML_TIMEOUT = 10.0
TABLE = "matrices/gpus.toml"


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
