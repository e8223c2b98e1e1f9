"""AMD GPUs and ROCm: amdsmi (Python) → amd-smi → rocm-smi → rocminfo → KFD sysfs topology.

Every parser is pure and normalises targets such as ``gfx942:sramecc+:xnack-`` to ``gfx942``, and the
decimal form rocm-smi prints (``gfx9010`` for gfx90a, ``gfx11000`` for gfx1100) back to the target.
The sources in order, each asked only while a GPU's target is still unknown:

1. the ``amdsmi`` Python module (when /opt/rocm exists): name, target, VRAM;
2. ``amd-smi static --asic --vram --json``: the same from the command;
3. ``rocm-smi --showproductname --showmeminfo vram --json`` (the text form ``rocm-smi --showproductname``
   when that fails): card series, GFX Version, VRAM total;
4. ``rocminfo``: each GPU agent's target, marketing name and its GLOBAL memory pool's size;
5. KFD sysfs (``/sys/class/kfd/kfd/topology/nodes/*/properties``): ``gfx_target_version``, the first
   memory bank's size. It also fills a memory the tools did not give.

ROCm's version comes from ``/opt/rocm/.info/version``, else from ``hipconfig --version`` (a
distribution's ROCm lives under /usr: Debian and Ubuntu ship hipcc / hipconfig there, with no
/opt/rocm). ``HIP_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES`` select GPUs; ``HSA_OVERRIDE_GFX_VERSION``
makes the runtime report another target (10.3.0 → gfx1030), and the facts say so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from attn_installer.facts import Driver, Gpu
from attn_installer.probe.text import summary
from attn_installer.runner import Runner

__all__ = [
    "AmdReading",
    "gfx_from_target_version",
    "normalise_gfx",
    "parse_amd_smi_static_json",
    "parse_hipconfig_version",
    "parse_kfd_properties",
    "parse_hsa_override",
    "parse_rocm_smi_json",
    "parse_rocm_smi_text",
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
    sources: dict[str, str] = field(default_factory=dict)
    """Where the other facts came from (toolkit.rocm, gpus.memory_gb, gpus.arch)."""
    memory_unknown: tuple[int, ...] = ()
    """Indices (among these GPUs) whose memory no source gave."""


def normalise_gfx(target: str) -> Optional[str]:
    """``gfx942:sramecc+:xnack-`` → ``gfx942``; None when no gfx target is in the text.

    rocm-smi prints the KFD target version M.m.s in decimal (ROCm/rocm_smi_lib
    ``rsmi_get_gfx_target_version``: M*100 + m*10 + s, or M*1000 + s when m is 0): 9.0.10 is
    ``gfx9010`` (→ gfx90a), 9.0.6 ``gfx9006`` (→ gfx906), 11.0.0 ``gfx11000`` (→ gfx1100), 12.0.1
    ``gfx12001`` (→ gfx1201); with m > 0 the digits are the target's own (10.3.6 → ``gfx1036``).
    """
    m = re.search(r"gfx([0-9a-f]{3,5})(?![0-9a-f])", target.lower())
    if not m:
        return None
    digits = m.group(1)
    if digits.isdigit() and len(digits) == 4 and digits.startswith("90"):
        step = int(digits[2:])  # 9*1000 + stepping
        return f"gfx90{step:x}" if step < 16 else None
    if digits.isdigit() and len(digits) == 5:
        major, step = int(digits) // 1000, int(digits) % 1000
        return f"gfx{major}0{step:x}" if major >= 10 and step < 16 else None
    return f"gfx{digits}" if len(digits) <= 4 else None


def parse_hsa_override(value: str) -> Optional[str]:
    """``HSA_OVERRIDE_GFX_VERSION=10.3.0`` → gfx1030 (major.minor.stepping, stepping in hex: 9.0.10 → gfx90a)."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\.(\d+)\s*", value)
    if not m:
        return None
    major, minor, step = (int(x) for x in m.groups())
    return f"gfx{major}{minor}{step:x}" if minor < 10 and step < 16 else None


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


def parse_rocm_smi_text(text: str) -> list[dict[str, Any]]:
    """``rocm-smi --showproductname`` (text) → [{name, arch, memory_gb}].

    ``GPU[0]  : Card Series:   0x7448`` ... ``GPU[0]  : GFX Version:   gfx11000``. Older releases print
    no GFX Version line (the arch is then None and a later source decides)."""
    cards: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"\s*GPU\[(\d+)\]\s*:\s*([^:]+?):\s*(.*?)\s*$", line)
        if m:
            cards.setdefault(int(m.group(1)), {})[m.group(2).strip().lower()] = m.group(3)
    out = []
    for _i, card in sorted(cards.items()):
        series = card.get("card series", "")
        name = f"AMD GPU {series}" if re.fullmatch(r"0x[0-9a-fA-F]+", series) else series
        out.append({"name": name or "AMD GPU", "arch": normalise_gfx(card.get("gfx version", "")),
                    "memory_gb": None})
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
    """``rocminfo``: one entry per agent whose Device Type is GPU, with its gfx Name, Marketing Name
    and memory: the size of its first GLOBAL pool (the coarse-grained one when there are several),
    ``Size: 25149440(0x17fc000) KB``; None when the agent lists no pool."""
    out = []
    for block in re.split(r"\n\*{5,}\s*\nAgent \d+\s*\n\*{5,}", text):
        if not re.search(r"Device Type:\s+GPU", block):
            continue
        name_m = re.search(r"^\s*Name:\s+(gfx\S+)", block, re.M)
        market = re.search(r"^\s*Marketing Name:\s+(.+)$", block, re.M)
        if name_m:
            out.append({"name": market.group(1).strip() if market else name_m.group(1),
                        "arch": normalise_gfx(name_m.group(1)), "memory_gb": _rocminfo_pool_gib(block)})
    return out


def _rocminfo_pool_gib(block: str) -> Optional[float]:
    pools = re.findall(r"Segment:\s+GLOBAL;\s*FLAGS:\s*([^\n]*)\n\s*Size:\s+(\d+)\([^)]*\)\s*KB", block)
    if not pools:
        return None
    coarse = [size for flags, size in pools if "COARSE" in flags.upper()]
    kib = int((coarse or [pools[0][1]])[0])
    return round(kib * 1024 / GIB, 1) if kib > 0 else None


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
    """``hipconfig --version``: ``6.3.42131-fa1d09cbd`` → ``6.3.42131`` (a distribution's build:
    ``7.2.53211-9999``; some builds print ``HIP version: 6.2.41133-dd7f95766``, as ``hipconfig`` does)."""
    m = re.search(r"^\s*(?:HIP version\s*:\s*)?(\d+\.\d+(?:\.\d+)?)", text, re.M)
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
              try_python_module: bool = True, override: Optional[str] = None) -> AmdReading:
    """Cascade over the AMD sources; never raises. *override* is HSA_OVERRIDE_GFX_VERSION."""
    notes: list[str] = []
    sources: dict[str, str] = {}
    rocm, rocm_source = _rocm_version(runner, root)
    if rocm_source:
        sources["toolkit.rocm"] = rocm_source
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
            notes.append(f"amdsmi failed: {summary(str(e) or type(e).__name__)}")
    attempts: list[tuple[list[str], Any, str]] = [
        (["amd-smi", "static", "--asic", "--vram", "--json"], parse_amd_smi_static_json, "amd-smi"),
        (["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"], parse_rocm_smi_json,
         "rocm-smi"),
        (["rocm-smi", "--showproductname"], parse_rocm_smi_text, "rocm-smi --showproductname"),
        (["rocminfo"], parse_rocminfo, "rocminfo"),
    ]
    smi_answered = False
    for argv, parse, name in attempts:
        if entries and all(e.get("arch") for e in entries):
            break
        if name == "rocm-smi --showproductname" and smi_answered:
            continue  # the text form only stands in for a --json that failed
        done = runner.run(argv, timeout=COMMAND_TIMEOUT)
        if not done.ok:
            if done.timed_out:
                notes.append(f"{name} timed out")
            elif not done.not_found:
                notes.append(f"{name} failed: {summary(done.output)}")
            continue
        try:
            parsed = parse(done.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            notes.append(f"{name} output not understood: {e}")
            continue
        if name == "rocm-smi":
            smi_answered = True
        if parsed:
            entries, source = parsed, name
    kfd = _kfd_entries(root)
    if kfd and (not entries or not all(e.get("arch") for e in entries)):
        entries, source = kfd, "kfd-sysfs"
    usable = [e for e in entries if e.get("arch")]
    if kfd and source != "kfd-sysfs" and any(e.get("memory_gb") is None for e in usable) \
            and [k["arch"] for k in kfd] == [e["arch"] for e in usable]:
        usable = [dict(e, memory_gb=e["memory_gb"] if e.get("memory_gb") is not None else k["memory_gb"])
                  for e, k in zip(usable, kfd)]
        sources["gpus.memory_gb"] = f"{source}, missing sizes from kfd-sysfs mem_banks"
    gpus = tuple(
        Gpu(index=i, vendor="amd", name=e["name"], arch=e["arch"],
            memory_gb=e["memory_gb"] if e.get("memory_gb") is not None else 0.0)
        for i, e in enumerate(usable)
    )
    unknown = [i for i, e in enumerate(usable) if e.get("memory_gb") is None]
    if visible is not None:
        keep: list[int] = []
        for tok in visible.split(","):
            tok = tok.strip()
            if not tok.isdigit() or int(tok) >= len(gpus) or int(tok) in keep:
                break
            keep.append(int(tok))
        unknown = [keep.index(i) for i in unknown if i in keep]
        gpus = tuple(replace(gpus[k], index=i) for i, k in enumerate(keep))
    if override and gpus:
        target = parse_hsa_override(override)
        if target is None:
            notes.append(f"HSA_OVERRIDE_GFX_VERSION={override!r} is not major.minor.stepping: ignored")
        else:
            changed = [g for g in gpus if g.arch != target]
            if changed:
                notes.append(f"HSA_OVERRIDE_GFX_VERSION={override}: the ROCm runtime reports "
                             + ", ".join(f"GPU {g.index} ({g.arch})" for g in changed) + f" as {target}")
                sources["gpus.arch"] = f"HSA_OVERRIDE_GFX_VERSION={override} (the GPUs are "
                sources["gpus.arch"] += ", ".join(sorted({g.arch for g in changed})) + ")"
                gpus = tuple(replace(g, arch=target) for g in gpus)
    if unknown:
        notes.append(f"AMD GPU {', '.join(map(str, unknown))}: memory unknown ({source} gave no size)")
    driver = None
    if gpus:
        version = _amdgpu_driver_version(root) or rocm
        if version:
            driver = Driver("amd", version, rocm=rocm)
    return AmdReading(gpus, driver, rocm, source, tuple(notes), sources, tuple(unknown))


def _rocm_version(runner: Runner, root: Path) -> tuple[Optional[str], Optional[str]]:
    """ROCm's version and where it came from: /opt/rocm/.info/version, else ``hipconfig --version``
    (on PATH: a distribution's ROCm under /usr; else /opt/rocm/bin/hipconfig)."""
    try:
        version = parse_rocm_version_file((root / "opt/rocm/.info/version").read_text())
    except OSError:
        version = None
    if version:
        return version, "/opt/rocm/.info/version"
    candidates = ["hipconfig"]
    if (root / "opt/rocm/bin/hipconfig").exists():
        candidates.append(str(root / "opt/rocm/bin/hipconfig"))
    for exe in candidates:
        done = runner.run([exe, "--version"], timeout=COMMAND_TIMEOUT)
        if done.not_found:
            continue
        version = parse_hipconfig_version(done.stdout) if done.ok else None
        return (version, "hipconfig --version") if version else (None, None)
    return None, None


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
