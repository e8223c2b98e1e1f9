"""Decide, from facts and the matrix alone, which backends fit this machine and how to get each.

Pure: no I/O, no subprocess, no os.environ. The result is a frozen :class:`Resolution` that the
plan consumes without deciding anything again. Every reason names the fact and the rule
("GPU 1 (Tesla T4) is sm_75; flash_attention_2 needs SM >=80 (matrices/backends.toml)") and says
what kind of reason it is, so nothing downstream reads meaning out of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from packaging.version import InvalidVersion, Version

from attn_installer.archs import covered_by
from attn_installer.facts import Facts, Gpu
from attn_installer.machine_fit import machine_blockers, nvidia_driver, sdpa_kernel, torch_archs, torch_gfx
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend
from attn_installer.request import Request
from attn_installer.routes import Miss, Route, find_route
from attn_installer.words import Method

__all__ = ["Candidate", "Reason", "Resolution", "covered_by", "machine_blockers", "resolve", "sdpa_kernel",
           "torch_archs", "torch_gfx", "training_misfits"]

ReasonKind = Literal["blocked", "misfit", "fit", "route", "tried", "measured"]


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    """blocked (a machine blocker), misfit (a rule it fails), fit (why it fits), route (how it is
    obtained), tried (a route that does not fit), measured (a bench result)."""
    text: str


@dataclass(frozen=True)
class Candidate:
    backend: Backend
    viable: bool
    reasons: tuple[Reason, ...]
    warnings: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    """Every route that fits, best first; the plan installs the first."""
    partial_gpus: tuple[int, ...] = ()
    """Indices of GPUs the backend would fit if the others were hidden."""

    @property
    def route(self) -> Optional[Route]:
        return self.routes[0] if self.viable and self.routes else None

    @property
    def method(self) -> Optional[Method]:
        r = self.route
        return r.method if r is not None else None


@dataclass(frozen=True)
class Resolution:
    candidates: tuple[Candidate, ...]
    blockers: tuple[str, ...]
    """Problems that stop every install (torch missing, torch cannot run on this GPU or driver)."""
    warnings: tuple[str, ...]

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.backend.name == name)


def resolve(facts: Facts, matrix: Matrix, request: Request) -> Resolution:
    """Every backend of the matrix, viable or not, with its routes (pure)."""
    blockers, warnings = machine_blockers(facts, matrix)
    cands = tuple(_resolve_backend(b, facts, matrix, request, blockers) for b in matrix.backends)
    for c in cands:
        if c.partial_gpus:
            keep = ",".join(str(i) for i in c.partial_gpus)
            warnings.append(f"{c.backend.name} fits GPU {keep} only; set CUDA_VISIBLE_DEVICES={keep} to use it there")
    warnings.extend(hub_fallback_warnings(facts, matrix))
    return Resolution(cands, tuple(blockers), tuple(warnings))


def hub_fallback_warnings(facts: Facts, matrix: Matrix) -> list[str]:
    """transformers >= 5 with `kernels` installed loads a hub kernel at model load for a
    FlashAttention name whose package is missing: say which, and whether this node reaches the Hub."""
    tv = facts.packages.get("transformers")
    if tv is None or "kernels" not in facts.packages:
        return []
    try:
        version = Version(tv)
    except InvalidVersion:
        return []
    falls = [f for f in matrix.hub_fallbacks
             if f.transformers.contains(version, prereleases=True) and f.distribution not in facts.packages]
    if not falls:
        return []
    names = ", ".join(f"{f.attn_implementation} -> {f.repo}" for f in falls)
    hub = facts.hub
    if hub is None:
        reach = "whether this node reaches the Hub was not checked"
    elif hub.reachable:
        reach = f"this node reaches {hub.endpoint} ({hub.detail}), so it downloads there"
    else:
        reach = (f"this node does NOT reach {hub.endpoint} ({hub.detail}): such a run fails at model load; "
                 "install the backend (or its hub kernel, which attn-install caches for offline use) first")
    return [f"transformers {tv} with kernels {facts.packages['kernels']} and no package for it loads a hub kernel "
            f"at model load for {names} (matrices/routes.toml [[hub_fallback]]); {reach}"]


# --------------------------------------------------------------------------- per backend


def _gpu_fit(b: Backend, g: Gpu, workload: str) -> Optional[str]:
    if g.vendor == "nvidia":
        if b.vendor not in ("nvidia", "any") or b.nvidia_sm.empty:
            return f"{g.label} is NVIDIA; {b.name} is for AMD GPUs"
        sm = g.sm or 0
        if not b.nvidia_sm.contains(sm):
            return f"{g.label} is {g.arch}; {b.name} needs {b.nvidia_sm.text} (matrices/backends.toml)"
        if workload in ("full", "lora") and not b.training_nvidia_sm.empty \
                and not b.training_nvidia_sm.contains(sm):
            return (f"{g.label}: {b.name} training needs {b.training_nvidia_sm.text} "
                    "(inference only on this GPU)")
        return None
    if b.vendor not in ("amd", "any"):
        return f"{g.label} is AMD; {b.name} is for NVIDIA GPUs"
    if b.amd_gfx_from_torch:
        return None  # runs where the ROCm torch build runs: a target it lacks is a machine blocker
    if g.arch not in b.amd_gfx:
        return f"{g.label} is {g.arch}; {b.name} supports {', '.join(b.amd_gfx)}"
    return None


def _misfits(b: Backend, facts: Facts, request: Request) -> tuple[list[str], tuple[int, ...]]:
    """Every rule the backend fails here, and the GPUs it would fit alone when only some fail."""
    t = facts.torch
    assert t is not None
    why: list[str] = []
    if facts.host.os not in b.os:
        why.append(f"host OS is {facts.host.os}; {b.name} supports {', '.join(b.os)}")
    if request.workload not in b.workloads:
        why.append(f"workload is {request.workload}; {b.name} is for {', '.join(b.workloads)} only"
                   + b.workload_note)
    gpus = facts.gpus
    if b.needs_gpu and not gpus:
        why.append(f"{b.name} needs a GPU; none is visible to this process")
    fits = [(g, _gpu_fit(b, g, request.workload)) for g in gpus]
    bad = [w for _g, w in fits if w]
    why.extend(str(w) for w in bad)
    partial = tuple(g.index for g, w in fits if not w) if bad and len(bad) < len(gpus) else ()
    if facts.python.implementation != "cpython" and b.distribution:
        why.append(f"Python implementation is {facts.python.implementation}; {b.name} needs CPython")
    if not b.python.contains(Version(facts.python.version), prereleases=True):
        why.append(f"Python {facts.python.version}; {b.name} needs Python {b.python}")
    if not b.torch.contains(t.release, prereleases=True):
        why.append(f"torch {t.version}; {b.name} needs torch {b.torch}")
    if b.vendor in ("nvidia", "any") and b.min_torch_cuda is not None and t.cuda is not None \
            and Version(t.cuda) < b.min_torch_cuda:
        why.append(f"torch is built for CUDA {t.cuda}; {b.name} needs CUDA >= {b.min_torch_cuda}")
    if b.vendor == "amd" and t.hip is None and gpus:
        why.append(f"torch {t.version} is not a ROCm build; {b.name} needs ROCm torch")
    drv = facts.driver
    if b.min_driver is not None and drv is not None and drv.vendor == "nvidia":
        try:
            old = Version(drv.version) < b.min_driver
        except InvalidVersion:
            old = False
        if old:
            why.append(f"NVIDIA driver {drv.version}; {b.name} needs driver >= {nvidia_driver(b.min_driver)} "
                       "at run time (matrices/backends.toml)")
    return why, partial


def training_misfits(b: Backend, facts: Facts, matrix: Matrix, request: Request) -> list[str]:
    """Every rule of the user's training config and model that *b* fails (matrices/backends.toml
    ``packing`` and [[model_rule]]): packing without a varlen path, head dims it does not take, a
    sliding window or soft-capping it does not honour."""
    tr = request.training
    if tr is None:
        return []
    why: list[str] = []
    src = tr.source or "the training config"
    if tr.packing and not b.packing:
        note = f" ({b.packing_note})" if b.packing_note else ""
        why.append(f"sample_packing: true ({src}); {b.name} has no varlen (packed) path{note} "
                   "(matrices/backends.toml packing)")
    m = tr.model
    if m is None:
        return why
    sms: list[Optional[int]] = [g.sm for g in facts.gpus if g.vendor == "nvidia"] or [None]
    said: set[str] = set()
    for sm in dict.fromkeys(sms):
        rule = matrix.model_rule(b.name, sm)
        if rule is None:
            continue
        on = f" on sm_{sm}" if sm is not None and not rule.nvidia_sm.empty else ""
        texts = []
        if not rule.head_dims_fit(m.head_dim, m.head_dim_v):
            if rule.max_head_dim and max(m.head_dim, m.head_dim_v) > rule.max_head_dim:
                texts.append(f"{m.name} has head dim {m.dims}; {b.name} takes head dims up to "
                             f"{rule.max_head_dim}{on}")
            else:
                texts.append(f"{m.name} has Q/K head dim {m.head_dim} and V head dim {m.head_dim_v}; {b.name}"
                             f"{on} needs them equal" + (f" (or {', '.join(rule.head_dim_pairs)})"
                                                         if rule.head_dim_pairs else ""))
        if m.softcap is not None:
            if not rule.softcap:
                texts.append(f"{m.name} soft-caps attention logits (attn_logit_softcapping {m.softcap:g}); "
                             f"{b.name} does not apply soft-capping (transformers drops it silently)")
            elif rule.softcap_max_head_dim and m.head_dim > rule.softcap_max_head_dim:
                texts.append(f"{m.name} soft-caps attention logits at head dim {m.head_dim}; {b.name}{on} "
                             f"soft-caps only up to head dim {rule.softcap_max_head_dim}")
        if m.sliding_window is not None and not rule.sliding_window:
            texts.append(f"{m.name} attends in a sliding window of {m.sliding_window}; {b.name} does not apply "
                         "the window")
        for t in texts:
            if t not in said:
                said.add(t)
                why.append(t + " (matrices/backends.toml [[model_rule]])")
    return why


def _resolve_backend(b: Backend, facts: Facts, matrix: Matrix, request: Request, blockers: list[str]) -> Candidate:
    if blockers:
        return Candidate(b, False, (Reason("blocked", f"blocked: {blockers[0]}"),))
    misfit, partial = _misfits(b, facts, request)
    misfit = misfit + training_misfits(b, facts, matrix, request)
    if misfit:
        return Candidate(b, False, tuple(Reason("misfit", w) for w in misfit), partial_gpus=partial)
    reasons = [Reason("fit", _fit_reason(b, facts, matrix))]
    kinds = b.routes
    if request.source_dir and request.backend == b.name and "source" in kinds:
        kinds = ("source",)  # --source DIR asks for a build of that checkout, even over an installed copy
    if request.route is not None:
        kinds = tuple(k for k in kinds if k == request.route)
        if not kinds:
            return Candidate(b, False, (*reasons, Reason("tried", f"{b.name} has no {request.route} route "
                                                                  f"(it has {', '.join(b.routes)})")))
    if request.no_source:
        kinds = tuple(k for k in kinds if k != "source")
    routes: list[Route] = []
    warnings: list[str] = []
    tried: list[str] = []
    for kind in kinds:
        found = find_route(kind, b, facts, matrix, request)
        if found is None:
            continue
        if isinstance(found, Miss):
            if not routes:
                tried.append(found.reason)
                warnings.extend(found.warnings)
            continue
        if not routes:
            reasons.append(Reason("route", found.reason))
            warnings.extend(found.warnings)
        routes.append(found)
    if not routes:
        text = "no way to obtain it: " + " | ".join(tried) if tried else "no install method fits"
        return Candidate(b, False, (*reasons, Reason("tried", text)), tuple(warnings))
    return Candidate(b, True, tuple(reasons), tuple(warnings), tuple(routes), partial)


def _fit_reason(b: Backend, facts: Facts, matrix: Matrix) -> str:
    t = facts.torch
    assert t is not None
    if not facts.gpus:
        return f"{b.name} runs without a GPU (torch {t.version})"
    archs = list(dict.fromkeys(g.arch for g in facts.gpus))
    if facts.gpus[0].vendor == "nvidia":
        rule = b.nvidia_sm.text
    elif b.amd_gfx_from_torch:
        rule = f"every target torch {t.version} carries"
    else:
        rule = ", ".join(b.amd_gfx)
    reason = f"{', '.join(archs)} fits {b.name} ({rule}); torch {t.version}, Python {facts.python.version}"
    kernels = [f"{b.kernels[a]} on {a}" for a in archs if a in b.kernels]
    if kernels:
        reason += f"; the config's entry point runs {', '.join(kernels)} (verification calls the same)"
    if b.call.convention == "sdpa":
        runs = {a: sdpa_kernel(next(g for g in facts.gpus if g.arch == a), matrix) for a in archs}
        said = [f"its {k} kernel on {a}" for a, k in runs.items() if k]
        if said:
            reason += f"; SDPA runs {', '.join(said)} (matrices/gpus.toml)"
        if any(k == "math" for k in runs.values()):
            reason += ": no fused kernel is built for that GPU, so attention is slower and needs more memory"
    return reason
