"""NVIDIA GPUs and driver: NVML first, then nvidia-smi, then /proc/driver/nvidia/version.

Each source is a fetch function (the only code here that touches NVML or runs a command)
and a pure ``parse_*`` function tested against recorded real output in ``tests/fixtures``.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from attn_installer.facts import Driver, Gpu
from attn_installer.runner import Runner

__all__ = [
    "NvidiaReading",
    "apply_visible_devices",
    "parse_nvidia_smi_banner",
    "parse_nvidia_smi_csv",
    "parse_nvidia_smi_xml",
    "parse_nvml_reading",
    "parse_proc_driver_version",
    "probe_nvidia",
]

GIB = 1024**3
SMI_QUERY = "index,name,compute_cap,memory.total,driver_version,uuid"
COMMAND_TIMEOUT = 10.0
NVML_TIMEOUT = 10.0


@dataclass(frozen=True)
class NvidiaReading:
    gpus: tuple[Gpu, ...] = ()
    driver: Optional[Driver] = None
    source: Optional[str] = None
    driver_source: Optional[str] = None
    notes: tuple[str, ...] = ()


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
                    dev["mig_devices"].append({
                        "nvmlDeviceGetName": _s(nvml.nvmlDeviceGetName(m)),
                        "nvmlDeviceGetMemoryInfo.total": int(nvml.nvmlDeviceGetMemoryInfo(m).total),
                        "nvmlDeviceGetUUID": _s(nvml.nvmlDeviceGetUUID(m)),
                    })
            reading["devices"].append(dev)
        return reading
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - shutdown failure changes nothing we report
            pass


def parse_nvml_reading(reading: dict[str, Any]) -> tuple[tuple[Gpu, ...], Driver]:
    """Turn an NVML reading (see :func:`read_nvml`) into GPUs and the driver."""
    cuda_int = int(reading["nvmlSystemGetCudaDriverVersion_v2"])
    driver = Driver(
        vendor="nvidia",
        version=str(reading["nvmlSystemGetDriverVersion"]),
        cuda=f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}",
    )
    gpus: list[Gpu] = []
    for dev in reading["devices"]:
        major, minor = (int(x) for x in dev["nvmlDeviceGetCudaComputeCapability"])
        arch, cc = f"sm_{major}{minor}", f"{major}.{minor}"
        migs = dev.get("mig_devices") or []
        if migs:
            for m in migs:
                gpus.append(Gpu(index=len(gpus), vendor="nvidia", name=str(m["nvmlDeviceGetName"]),
                                arch=arch, compute_capability=cc,
                                memory_gb=round(m["nvmlDeviceGetMemoryInfo.total"] / GIB, 1),
                                uuid=m.get("nvmlDeviceGetUUID"), mig=True))
        else:
            gpus.append(Gpu(index=len(gpus), vendor="nvidia", name=str(dev["nvmlDeviceGetName"]),
                            arch=arch, compute_capability=cc,
                            memory_gb=round(dev["nvmlDeviceGetMemoryInfo.total"] / GIB, 1),
                            uuid=dev.get("nvmlDeviceGetUUID")))
    return tuple(gpus), driver


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


# --------------------------------------------------------------------------- nvidia-smi


def parse_nvidia_smi_csv(text: str) -> tuple[tuple[Gpu, ...], Optional[str]]:
    """Parse ``nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version,uuid
    --format=csv,noheader,nounits`` output; returns GPUs and the driver version.

    Sample line: ``0, NVIDIA H200, 9.0, 143771, 580.159.04, GPU-8f6c...``. The uuid column is
    optional so the five-column form from the docs parses too.
    """
    gpus: list[Gpu] = []
    driver: Optional[str] = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 5 or not cols[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        index, name, cc, mem, drv = cols[:5]
        if not re.fullmatch(r"\d+\.\d+", cc):
            raise ValueError(f"nvidia-smi gave no compute capability ({cc!r}); driver too old?")
        major, minor = cc.split(".")
        gpus.append(Gpu(index=int(index), vendor="nvidia", name=name, arch=f"sm_{major}{minor}",
                        compute_capability=cc,
                        memory_gb=round(float(mem) / 1024, 1) if _num(mem) else 0.0,
                        uuid=cols[5] if len(cols) > 5 and cols[5].startswith(("GPU-", "MIG-")) else None))
        driver = drv or driver
    return tuple(gpus), driver


def parse_nvidia_smi_banner(text: str) -> Optional[str]:
    """The "CUDA Version: 12.4" of plain ``nvidia-smi`` (the newest CUDA the driver supports)."""
    m = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", text)
    return m.group(1) if m else None


def parse_nvidia_smi_xml(text: str) -> dict[str, Any]:
    """``nvidia-smi -q -x``: driver version, CUDA version, and per GPU name / uuid / MIG mode."""
    root = ET.fromstring(text)
    out: dict[str, Any] = {
        "driver_version": (root.findtext("driver_version") or "").strip() or None,
        "cuda_version": (root.findtext("cuda_version") or "").strip() or None,
        "gpus": [],
    }
    for gpu in root.findall("gpu"):
        total = (gpu.findtext("fb_memory_usage/total") or "").replace("MiB", "").strip()
        out["gpus"].append({
            "name": (gpu.findtext("product_name") or "").strip(),
            "uuid": (gpu.findtext("uuid") or "").strip() or None,
            "architecture": (gpu.findtext("product_architecture") or "").strip() or None,
            "mig": (gpu.findtext("mig_mode/current_mig") or "").strip() == "Enabled",
            "memory_gb": round(float(total) / 1024, 1) if _num(total) else None,
        })
    return out


def parse_proc_driver_version(text: str) -> Optional[str]:
    """``/proc/driver/nvidia/version``: ``NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15 ...``."""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)", text)
    if m:
        return m.group(1)
    m = re.search(r"NVRM version:.*?\s([0-9]{3}\.[0-9]+(?:\.[0-9]+)?)\s", text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- visibility


def apply_visible_devices(gpus: tuple[Gpu, ...], value: Optional[str]) -> tuple[tuple[Gpu, ...], Optional[str]]:
    """Filter and renumber GPUs as ``CUDA_VISIBLE_DEVICES`` does; returns (gpus, note).

    Entries are indices or UUIDs (``GPU-…``/``MIG-…``, unique prefixes allowed). As in CUDA,
    the list stops at the first entry that matches no device; ``""`` and ``-1`` hide all.
    """
    if value is None:
        return gpus, None
    chosen: list[Gpu] = []
    note = None
    for raw in value.split(","):
        entry = raw.strip()
        match: Optional[Gpu] = None
        if entry.lstrip("-").isdigit():
            idx = int(entry)
            match = next((g for g in gpus if g.index == idx), None) if idx >= 0 else None
        elif entry:
            hits = [g for g in gpus if g.uuid and g.uuid.startswith(entry)]
            match = hits[0] if len(hits) == 1 else None
        if match is None:
            if entry:
                note = f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no GPU; later entries ignored"
            break
        if match not in chosen:
            chosen.append(match)
    return tuple(replace(g, index=i) for i, g in enumerate(chosen)), note


# --------------------------------------------------------------------------- cascade


def probe_nvidia(
    runner: Runner,
    *,
    root: Path,
    nvml: Any = None,
    visible: Optional[str] = None,
) -> NvidiaReading:
    """NVML → nvidia-smi → /proc/driver/nvidia/version. Never raises; unknown is None."""
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
            gpus, driver = parse_nvml_reading(_nvml_with_timeout(nvml, NVML_TIMEOUT))
        except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, RM version mismatch…
            notes.append(f"NVML failed: {_nvml_error(e)}")
        else:
            gpus, note = apply_visible_devices(gpus, visible)
            if note:
                notes.append(note)
            return NvidiaReading(gpus, driver, "nvml", "nvml", tuple(notes))

    smi = runner.run(["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
                     timeout=COMMAND_TIMEOUT)
    if smi.ok:
        try:
            gpus, drv = parse_nvidia_smi_csv(smi.stdout)
        except ValueError as e:
            notes.append(f"nvidia-smi output not understood: {e}")
        else:
            cuda = None
            xml = runner.run(["nvidia-smi", "-q", "-x"], timeout=COMMAND_TIMEOUT)
            if xml.ok:
                try:
                    parsed = parse_nvidia_smi_xml(xml.stdout)
                except ET.ParseError as e:
                    notes.append(f"nvidia-smi -q -x output not understood: {e}")
                else:
                    cuda = parsed["cuda_version"]
                    gpus = _mark_mig(gpus, parsed["gpus"])
            if cuda is None:
                banner = runner.run(["nvidia-smi"], timeout=COMMAND_TIMEOUT)
                cuda = parse_nvidia_smi_banner(banner.stdout) if banner.ok else None
            gpus, note = apply_visible_devices(gpus, visible)
            if note:
                notes.append(note)
            smi_driver = Driver("nvidia", drv, cuda=cuda) if drv else None
            return NvidiaReading(gpus, smi_driver, "nvidia-smi", "nvidia-smi", tuple(notes))
    elif smi.timed_out:
        notes.append("nvidia-smi timed out")
    elif not smi.not_found:
        notes.append(f"nvidia-smi failed: {_last_line(smi.output)}")

    try:
        text = (root / "proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return NvidiaReading(notes=tuple(notes))
    version = parse_proc_driver_version(text)
    if version is None:
        return NvidiaReading(notes=tuple(notes))
    notes.append("NVIDIA kernel driver loaded but no GPU could be listed (NVML and nvidia-smi failed)")
    return NvidiaReading((), Driver("nvidia", version), None, "/proc/driver/nvidia/version", tuple(notes))


def _mark_mig(gpus: tuple[Gpu, ...], xml_gpus: list[dict[str, Any]]) -> tuple[Gpu, ...]:
    by_uuid = {g["uuid"]: g for g in xml_gpus if g.get("uuid")}
    return tuple(replace(g, mig=bool(by_uuid.get(g.uuid, {}).get("mig"))) for g in gpus)


def _nvml_error(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "RM_VERSION_MISMATCH" in type(e).__name__.upper() or "version mismatch" in text.lower():
        return f"{text} (driver and kernel module versions differ: reboot or reload the driver)"
    return text


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
