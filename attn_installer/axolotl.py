"""The axolotl config keys for a backend and an axolotl version (matrices/axolotl.toml). Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from packaging.version import Version

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend

__all__ = ["Edits", "axolotl_version", "bf16", "hub_value", "make_config", "merge_edits", "run_time_swap"]


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


# --------------------------------------------------------------------------- merging into the user's config


@dataclass(frozen=True)
class Edits:
    """What a merge changes in the user's axolotl config, and why each key."""

    set: dict[str, Any]
    remove: tuple[str, ...]
    why: dict[str, str]
    """key -> why it is set or removed (every key in set and remove has one)."""
    comments: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """What was decided without changing a line (the user's choice kept, and why)."""


def _legacy_era(matrix: Matrix) -> str:
    """A version of the last axolotl era with one boolean per backend (just below one_key_from)."""
    v = matrix.axolotl_keys.one_key_from
    return f"{v.major}.{v.minor - 1}.9999" if v.minor else f"{v.major - 1}.9999"


def _selects(data: Mapping[str, Any], wanted: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    """The file already selects attention with exactly the wanted keys (other attention keys unset)."""
    for k in keys:
        want = wanted.get(k)
        have = data.get(k)
        if want is None:
            if have not in (None, False):
                return False
        elif type(have) is not type(want) or have != want:
            return False
    return True


def merge_edits(plan: Any, tc: Any, facts: Facts, matrix: Matrix, requested_axolotl: Optional[str]) -> Edits:
    """The keys to set and remove in the user's config *tc* (trainconfig.TrainingConfig) for *plan*
    (made with its Training): the attention key only when the choice changed or the installed
    axolotl reads another key for it; sample_packing off only when the plan turned packing off; the
    keys the chosen backend needs (torch_compile for flex, pad_to_sequence_len for sage); bf16 /
    fp16 only where the file's precision cannot run on these GPUs. Pure."""
    data: Mapping[str, Any] = tc.data
    choice = plan.choice
    keys = matrix.attention_keys
    out: dict[str, Any] = {}
    why: dict[str, str] = {}
    remove: list[str] = []
    comments: tuple[str, ...] = ()
    notes = list(choice.reasons) if choice is not None else []
    backend = plan.recommended
    ver_text = requested_axolotl or facts.packages.get("axolotl")
    if choice is not None and not choice.judged and choice.kept:
        backend = None  # a value the plan cannot judge stays as it is
    if choice is not None and backend is not None and choice.backend != backend:
        # --auto installed another backend than the plan chose (no route of that one worked)
        choice = replace(choice, backend=backend, kept=False,
                         reasons=(f"{backend} is the backend installed ({choice.backend}, the plan's choice, could not "
                                  "be installed by any route)",))
    if backend is not None:
        b = matrix.backend(backend)
        assumed = ""
        version = ver_text
        if version is None and tc.legacy:
            version = _legacy_era(matrix)
            assumed = (f"axolotl is not installed here and no --axolotl-version was given: attention is selected "
                       f"with the file's kind of key, a legacy boolean (axolotl < {matrix.axolotl_keys.one_key_from})")
        impl = plan.config.get("attn_implementation")  # the route installed (a hub kernel is named by its path)
        if not (isinstance(impl, str) and "/" in impl):
            impl = plan.backend(backend).attn_implementation
        wanted, comments_l, _w = make_config(b, facts, matrix, plan.workload, version, impl=impl, packing=False)
        att = {k: v for k, v in wanted.items() if k in keys}
        kept = choice is not None and choice.kept
        if att and not _selects(data, att, keys):
            who = (f"axolotl {ver_text}" if ver_text else
                   f"axolotl < {matrix.axolotl_keys.one_key_from}, as the file's keys are" if assumed else
                   "axolotl (version unknown: the current key)")
            said = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in att.items())
            reason = (f"the same backend, {backend}: {who} selects it with {said}" if kept else
                      (choice.reasons[0] if choice is not None else f"the plan's choice, {backend}"))
            for k, v in att.items():
                out[k] = v
                why[k] = reason
            for k in keys:
                if k in data and k not in att:
                    remove.append(k)
                    why[k] = f"another attention key: {backend} is selected by {', '.join(att)} ({who})"
            comments = tuple(comments_l)
        if assumed and tc.legacy:
            notes.append(assumed)
        for k, v in b.config.items():
            have = data.get(k)
            if k == "torch_compile" and have == "auto":
                continue
            if type(have) is not type(v) or have != v:
                out[k] = v
                why[k] = (f"{backend} needs {k}: {str(v).lower() if isinstance(v, bool) else v} "
                          "(matrices/backends.toml config)")
    if choice is not None and choice.packing == "off":
        out["sample_packing"] = False
        why["sample_packing"] = choice.packing_reason
        if data.get("eval_sample_packing") is True:
            out["eval_sample_packing"] = False
            why["eval_sample_packing"] = "evaluation packs through the same varlen path: off with sample_packing"
    half = bf16(facts)
    if half is False and data.get("bf16") is True:
        gpu = next((g for g in facts.gpus if g.vendor == "nvidia" and (g.sm or 0) < 80), None)
        label = gpu.label if gpu is not None else "a GPU here"
        out["bf16"] = False
        why["bf16"] = f"{label} has no bf16 (Ampere / sm_80 or newer): bf16: true cannot train here"
        if data.get("fp16") is not True:
            out["fp16"] = True
            why["fp16"] = f"{label}: fp16 instead of bf16"
    return Edits(out, tuple(remove), why, comments, tuple(notes))
