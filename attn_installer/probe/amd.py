"""AMD GPUs and ROCm: amdsmi (Python) → amd-smi → rocm-smi → rocminfo → KFD sysfs topology.

Every parser is pure and normalises targets such as ``gfx942:sramecc+:xnack-`` to ``gfx942``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from attn_installer.facts import Driver, Gpu
from attn_installer.runner import Runner

__all__ = [
    "AmdReading",
    "gfx_from_target_version",
    "normalise_gfx",
    "parse_amd_smi_static_json",
    "parse_hipconfig_version",
    "parse_kfd_properties",
    "parse_rocm_smi_json",
    "parse_rocm_version_file",
    "parse_rocminfo",
    "probe_amd",
]

GIB = 1024**3
COMMAND_TIMEOUT = 10.0


@dataclass(frozen=True)
class AmdReading:
    gpus: tuple[Gpu, ...] = ()
    driver: Optional[Driver] = None
    rocm: Optional[str] = None
    source: Optional[str] = None
    notes: tuple[str, ...] = ()


def normalise_gfx(target: str) -> Optional[str]:
    """``gfx942:sramecc+:xnack-`` → ``gfx942``; None when no gfx target is in the text.

    Older rocm-smi prints the KFD target version in decimal (``gfx9010`` for MI200, i.e.
    9.0.10); a gfx9 target with four digits is read that way (→ ``gfx90a``).
    """
    m = re.search(r"gfx([0-9a-f]{3,5})", target.lower())
    if not m:
        return None
    digits = m.group(1)
    if digits.startswith("9") and len(digits) == 4 and digits.isdigit():
        return f"gfx9{digits[1]}{int(digits[2:]):x}"
    return f"gfx{digits}" if len(digits) <= 4 else None


def gfx_from_target_version(value: int) -> Optional[str]:
    """KFD ``gfx_target_version`` (90402 → gfx942, 90010 → gfx90a, 110000 → gfx1100)."""
    if value <= 0:
        return None
    major, minor, step = value // 10000, (value // 100) % 100, value % 100
    return f"gfx{major}{minor}{step:x}"


def parse_rocm_smi_json(text: str) -> list[dict[str, Any]]:
    """``rocm-smi --showproductname --showmeminfo vram --json`` → [{name, arch, memory_gb}].

    Keys seen in real output: ``"card0": {"Card Series": ..., "GFX Version": "gfx942",
    "VRAM Total Memory (B)": "206141652992"}`` (key case differs between ROCm releases).
    """
    data = json.loads(text)
    out = []
    for key in sorted(data, key=_card_order):
        if not key.lower().startswith("card"):
            continue
        card = {k.lower(): v for k, v in data[key].items()}
        arch = normalise_gfx(str(card.get("gfx version", "")))
        name = str(card.get("card series") or card.get("card model") or card.get("device name") or key)
        mem = card.get("vram total memory (b)")
        out.append({
            "name": name.strip(),
            "arch": arch,
            "memory_gb": round(int(str(mem)) / GIB, 1) if str(mem or "").isdigit() else None,
        })
    return out


def parse_amd_smi_static_json(text: str) -> list[dict[str, Any]]:
    """``amd-smi static --asic --vram --json`` → [{name, arch, memory_gb}].

    Handles both the list form (``[{"gpu": 0, "asic": {...}, "vram": {...}}]``) and the newer
    ``{"gpu_data": [...]}`` form, and vram size as ``{"value": 196592, "unit": "MB"}`` or "196592 MB".
    """
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    out = []
    for entry in data:
        asic = entry.get("asic") or {}
        arch = normalise_gfx(str(asic.get("target_graphics_version", "")))
        size = (entry.get("vram") or {}).get("size")
        mem = None
        if isinstance(size, dict):
            mem = _to_gib(size.get("value"), str(size.get("unit", "MB")))
        elif isinstance(size, str):
            parts = size.split()
            mem = _to_gib(parts[0], parts[1] if len(parts) > 1 else "MB")
        out.append({"name": str(asic.get("market_name") or "AMD GPU"), "arch": arch, "memory_gb": mem})
    return out


def parse_rocminfo(text: str) -> list[dict[str, Any]]:
    """``rocminfo``: one entry per agent whose Device Type is GPU, with its gfx Name."""
    out = []
    for block in re.split(r"\n\*{5,}\s*\nAgent \d+\s*\n\*{5,}", text):
        if not re.search(r"Device Type:\s+GPU", block):
            continue
        name_m = re.search(r"^\s*Name:\s+(gfx\S+)", block, re.M)
        market = re.search(r"^\s*Marketing Name:\s+(.+)$", block, re.M)
        if name_m:
            out.append({"name": market.group(1).strip() if market else name_m.group(1),
                        "arch": normalise_gfx(name_m.group(1)), "memory_gb": None})
    return out


def parse_kfd_properties(text: str) -> dict[str, int]:
    """A KFD topology ``properties`` file: ``key value`` lines → dict of ints."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_rocm_version_file(text: str) -> Optional[str]:
    """``/opt/rocm/.info/version``: ``6.3.1-48`` → ``6.3.1``."""
    m = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def parse_hipconfig_version(text: str) -> Optional[str]:
    """``hipconfig --version``: ``6.3.42131-fa1d09cbd`` → ``6.3.42131``."""
    m = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def read_amdsmi(amdsmi: Any) -> list[dict[str, Any]]:
    """Query the ``amdsmi`` Python module; raises whatever it raises."""
    amdsmi.amdsmi_init()
    try:
        out = []
        for h in amdsmi.amdsmi_get_processor_handles():
            asic = amdsmi.amdsmi_get_gpu_asic_info(h)
            try:
                vram = amdsmi.amdsmi_get_gpu_vram_info(h)
                mem = _to_gib(vram.get("vram_size"), "MB")
            except Exception:  # noqa: BLE001 - older amdsmi
                mem = None
            out.append({"name": str(asic.get("market_name") or "AMD GPU"),
                        "arch": normalise_gfx(str(asic.get("target_graphics_version", ""))),
                        "memory_gb": mem})
        return out
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except Exception:  # noqa: BLE001, S110
            pass


def probe_amd(runner: Runner, *, root: Path, amdsmi: Any = None, visible: Optional[str] = None,
              try_python_module: bool = True) -> AmdReading:
    """Cascade over the AMD sources; never raises."""
    notes: list[str] = []
    rocm = _rocm_version(runner, root)
    entries: list[dict[str, Any]] = []
    source: Optional[str] = None

    if amdsmi is None and try_python_module and (root / "opt/rocm").exists():
        try:
            import amdsmi as amdsmi_module  # noqa: PLC0415 - lazy, optional

            amdsmi = amdsmi_module
        except Exception:  # noqa: BLE001
            amdsmi = None
    if amdsmi is not None:
        try:
            entries, source = read_amdsmi(amdsmi), "amdsmi"
        except Exception as e:  # noqa: BLE001
            notes.append(f"amdsmi failed: {e}")
    attempts: list[tuple[list[str], Any, str]] = [
        (["amd-smi", "static", "--asic", "--vram", "--json"], parse_amd_smi_static_json, "amd-smi"),
        (["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"], parse_rocm_smi_json,
         "rocm-smi"),
        (["rocminfo"], parse_rocminfo, "rocminfo"),
    ]
    for argv, parse, name in attempts:
        if entries and all(e.get("arch") for e in entries):
            break
        done = runner.run(argv, timeout=COMMAND_TIMEOUT)
        if not done.ok:
            if not done.not_found:
                notes.append(f"{name} failed: {done.output.strip().splitlines()[-1:] or 'timed out'}")
            continue
        try:
            parsed = parse(done.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            notes.append(f"{name} output not understood: {e}")
            continue
        if parsed:
            entries, source = parsed, name
    if not entries or not all(e.get("arch") for e in entries):
        kfd = _kfd_entries(root)
        if kfd:
            entries, source = kfd, "kfd-sysfs"
    gpus = tuple(
        Gpu(index=i, vendor="amd", name=e["name"], arch=e["arch"], memory_gb=e.get("memory_gb") or 0.0)
        for i, e in enumerate(x for x in entries if x.get("arch"))
    )
    if visible is not None:
        keep = []
        for tok in visible.split(","):
            tok = tok.strip()
            if not tok.isdigit() or int(tok) >= len(gpus):
                break
            keep.append(gpus[int(tok)])
        gpus = tuple(replace(g, index=i) for i, g in enumerate(keep))
    driver = None
    if gpus:
        version = _amdgpu_driver_version(root) or rocm
        if version:
            driver = Driver("amd", version, rocm=rocm)
    return AmdReading(gpus, driver, rocm, source, tuple(notes))


def _rocm_version(runner: Runner, root: Path) -> Optional[str]:
    try:
        return parse_rocm_version_file((root / "opt/rocm/.info/version").read_text())
    except OSError:
        pass
    if not (root / "opt/rocm").exists():
        return None
    done = runner.run(["hipconfig", "--version"], timeout=COMMAND_TIMEOUT)
    return parse_hipconfig_version(done.stdout) if done.ok else None


def _amdgpu_driver_version(root: Path) -> Optional[str]:
    try:
        text = (root / "sys/module/amdgpu/version").read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"\d+(\.\d+)+", text) else None


def _kfd_entries(root: Path) -> list[dict[str, Any]]:
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    out: list[dict[str, Any]] = []
    try:
        dirs = sorted(nodes.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 1 << 30)
    except OSError:
        return out
    for node in dirs:
        try:
            props = parse_kfd_properties((node / "properties").read_text())
        except OSError:
            continue
        arch = gfx_from_target_version(props.get("gfx_target_version", 0))
        if arch is None:
            continue
        mem = None
        try:
            bank = parse_kfd_properties((node / "mem_banks/0/properties").read_text())
            mem = round(bank.get("size_in_bytes", 0) / GIB, 1) or None
        except OSError:
            pass
        try:
            name = (node / "name").read_text().strip() or arch
        except OSError:
            name = arch
        out.append({"name": name, "arch": arch, "memory_gb": mem})
    return out


def _to_gib(value: Any, unit: str) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    scale = {"B": 1 / GIB, "KB": 1 / 1024**2, "MB": 1 / 1024, "GB": 1.0}.get(unit.upper(), 1 / 1024)
    return round(v * scale, 1)


def _card_order(key: str) -> int:
    digits = "".join(ch for ch in key if ch.isdigit())
    return int(digits) if digits else 1 << 30
