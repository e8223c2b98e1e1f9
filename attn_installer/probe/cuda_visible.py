"""What CUDA sees of the boards read: MIG devices as GPUs of their own (the NVIDIA MIG user guide:
before R570 one MIG device per process and no other GPU, from R570 one compute instance per GPU
instance), and ``CUDA_VISIBLE_DEVICES`` applied the way torch parses it (indices, UUID prefixes, MIG
UUIDs; a repeated entry hides everything; the list stops at the first entry that matches nothing).
Pure."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Optional, Sequence

from attn_installer.facts import Gpu
from attn_installer.probe.nvidia_smi import Board, MigSlice, _cc_of

__all__ = ["apply_visible_devices", "cuda_devices"]

MIG_ONE_PER_PROCESS_BEFORE = 570
"""Before R570 CUDA enumerates a single MIG device per process (NVIDIA MIG user guide)."""
MAX_MIG_DEVICES = 64


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


def _driver_major(driver: Optional[str]) -> Optional[int]:
    m = re.match(r"(\d+)", driver or "")
    return int(m.group(1)) if m else None
