"""The axolotl config keys for a backend and an axolotl version (matrices/axolotl.toml). Pure."""

from __future__ import annotations

from typing import Any, Optional

from packaging.version import Version

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend

__all__ = ["axolotl_version", "bf16", "make_config"]


def bf16(facts: Facts) -> Optional[bool]:
    """Whether every visible GPU trains in bf16 (Ampere and newer, every AMD GPU); None without one."""
    if not facts.gpus:
        return None
    return all(g.vendor == "amd" or (g.sm or 0) >= 80 for g in facts.gpus)


def axolotl_version(facts: Facts, requested: Optional[str]) -> Optional[Version]:
    v = requested or facts.packages.get("axolotl")
    return Version(v) if v else None


def make_config(b: Backend, facts: Facts, matrix: Matrix, workload: str, requested_axolotl: Optional[str]
                ) -> tuple[dict[str, Any], list[str], list[str]]:
    """axolotl keys for backend *b*: (config, yaml comments, warnings)."""
    cfg: dict[str, Any] = {}
    comments: list[str] = []
    warnings: list[str] = []
    ver = axolotl_version(facts, requested_axolotl)
    impl = b.attn_implementation
    keys = matrix.axolotl_keys
    if ver is None or ver >= keys.one_key_from:
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
    if b.packing and workload != "inference":
        cfg["sample_packing"] = True
        cfg["pad_to_sequence_len"] = True
    cfg.update(b.config)
    if b.config_comment:
        comments.append(b.config_comment)
    return cfg, comments, warnings
