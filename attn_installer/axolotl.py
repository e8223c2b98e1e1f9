"""The axolotl config keys for a backend and an axolotl version (matrices/axolotl.toml). Pure."""

from __future__ import annotations

from typing import Any, Optional

from packaging.version import Version

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend

__all__ = ["axolotl_version", "bf16", "hub_value", "make_config", "run_time_swap"]


def bf16(facts: Facts) -> Optional[bool]:
    """Whether every visible GPU trains in bf16 (Ampere and newer, every AMD GPU); None without one."""
    if not facts.gpus:
        return None
    return all(g.vendor == "amd" or (g.sm or 0) >= 80 for g in facts.gpus)


def axolotl_version(facts: Facts, requested: Optional[str]) -> Optional[Version]:
    v = requested or facts.packages.get("axolotl")
    return Version(v) if v else None


def hub_value(repo: str, version: int, facts: Facts, matrix: Matrix, requested_axolotl: Optional[str],
              revision: Optional[str] = None) -> tuple[str, bool, list[str]]:
    """How this axolotl names a hub kernel in ``attn_implementation``: (value, packing allowed,
    warnings). The revision (the commit installed, else the version branch) where axolotl reads one."""
    hp = matrix.hub_paths
    ver = axolotl_version(facts, requested_axolotl)
    warnings: list[str] = []
    if ver is not None and ver < hp.accepted_from:
        warnings.append(f"axolotl {ver} cannot take a hub kernel as attn_implementation; upgrade axolotl to "
                        f">= {hp.accepted_from} (matrices/axolotl.toml [hub_paths])")
    pinned = ver is None or ver >= hp.revision_from
    value = f"{repo}@{revision or f'v{version}'}" if pinned else repo
    spec = hp.packing.get(repo)
    packing = spec is not None and (ver is None or spec.contains(ver, prereleases=True))
    return value, packing, warnings


def make_config(b: Backend, facts: Facts, matrix: Matrix, workload: str, requested_axolotl: Optional[str],
                impl: Optional[str] = None, packing: Optional[bool] = None
                ) -> tuple[dict[str, Any], list[str], list[str]]:
    """axolotl keys for backend *b*: (config, yaml comments, warnings). ``impl`` / ``packing``: the
    value and packing of the route planned, where it is not the backend's own (a hub kernel)."""
    cfg: dict[str, Any] = {}
    comments: list[str] = []
    warnings: list[str] = []
    ver = axolotl_version(facts, requested_axolotl)
    impl = impl or b.attn_implementation
    packing = b.packing if packing is None else packing
    keys = matrix.axolotl_keys
    if "/" in impl:  # a hub kernel path: axolotl passes it through to transformers unchecked
        cfg["attn_implementation"] = impl
    elif ver is None or ver >= keys.one_key_from:
        rows = [r for r in matrix.attn_impl_values if ver is None or r.axolotl.contains(ver, prereleases=True)]
        row = rows[-1] if rows else None
        cfg["attn_implementation"] = impl
        if row is not None and impl not in row.values:
            warnings.append(f"axolotl {ver} does not accept attn_implementation: {impl} "
                            f"(accepts {', '.join(row.values)}); upgrade axolotl")
    else:
        flag = next((f for f in matrix.legacy_flags
                     if f.attn_implementation == impl and f.axolotl.contains(ver, prereleases=True)), None)
        if flag is not None:
            cfg[flag.flag] = True
        elif ver >= keys.unchecked_key_from:
            cfg["attn_implementation"] = impl
            warnings.append(f"axolotl {ver} has no boolean for {impl}; wrote attn_implementation "
                            f"(accepted unchecked since {keys.unchecked_key_from})")
        else:
            warnings.append(f"axolotl {ver} cannot select {impl}; upgrade axolotl to >= {keys.one_key_from}")
    half = bf16(facts)
    if half is not None:
        cfg["bf16"] = half
        cfg["fp16"] = not half
    if packing and workload != "inference":
        cfg["sample_packing"] = True
        cfg["pad_to_sequence_len"] = True
    cfg.update(b.config)
    if b.config_comment:
        comments.append(b.config_comment)
    swap = run_time_swap(b, facts, matrix, ver)
    if swap:
        comments.append(swap)
        warnings.append(swap)
    return cfg, comments, warnings


def run_time_swap(b: Backend, facts: Facts, matrix: Matrix, ver: Optional[Version]) -> str:
    """Why axolotl would run another backend than *b* here (matrices/axolotl.toml [[run_time_swap]]), or ''."""
    for sw in matrix.run_time_swaps:
        if b.attn_implementation not in sw.attn_implementation or sw.when_installed not in facts.packages:
            continue
        if ver is not None and not sw.axolotl.contains(ver, prereleases=True):
            continue
        if not any(g.vendor == "nvidia" and g.sm is not None and g.sm // 10 in sw.nvidia_sm_major for g in facts.gpus):
            continue
        who = f"axolotl {ver}" if ver is not None else f"axolotl {sw.axolotl}"
        return (f"{who} runs {sw.runs} instead of {b.attn_implementation} here: {sw.when_installed} "
                f"{facts.packages[sw.when_installed]} is installed (matrices/axolotl.toml); check it with "
                f"`attn-install verify {sw.runs}`, or uninstall {sw.when_installed} to train with {b.name}")
    return ""
