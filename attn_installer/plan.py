"""Turn resolved candidates into a plan: exact steps (argv + env), the recommendation, the config.

Pure: no I/O. Steps never install, upgrade or downgrade torch / torchvision / torchaudio /
triton: every pip step names their installed versions as exact requirements, so pip's resolver
can only keep them (a conflict fails instead of replacing torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from packaging.version import Version

from attn_installer.errors import UsageError
from attn_installer.facts import Facts
from attn_installer.matrix import Matrix, RankRow
from attn_installer.resolve import (
    Candidate,
    MeasuredSpeed,
    Request,
    build_archs,
    estimate_minutes,
    machine_blockers,
    resolve_backend,
)

__all__ = ["PINNED", "BackendPlan", "Plan", "Step", "build_key", "key_digest", "make_plan", "torch_pins"]

PINNED = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton-rocm")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    kind: str = "command"
    """How the installer treats it: fetch / prepare / build (skipped on a wheel-cache hit),
    download (fetch ``url`` to ``dest`` first), install, command."""
    url: Optional[str] = None
    dest: Optional[str] = None
    sha256: Optional[str] = None
    writes: dict[str, str] = field(default_factory=dict)
    """Files (path -> content) the installer writes before the step, e.g. the torch constraints."""

    @property
    def is_install(self) -> bool:
        """A pip / uv install into the target environment (previewed and checked for torch moves)."""
        a = self.argv
        return ("pip" in a[:4] and "install" in a[:5]) or a[:3] == ("uv", "pip", "install")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"argv": list(self.argv), "env": dict(self.env),
                             "description": self.description, "kind": self.kind}
        if self.url:
            d.update(url=self.url, dest=self.dest, sha256=self.sha256)
        if self.writes:
            d["writes"] = dict(self.writes)
        return d


@dataclass(frozen=True)
class BackendPlan:
    name: str
    title: str
    attn_implementation: str
    viable: bool
    reasons: tuple[str, ...]
    method: Optional[str]
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]
    estimate_minutes: Optional[float]
    installed_version: Optional[str]
    distribution: str
    import_name: str
    packing: bool
    runtime_env: dict[str, str]
    download: Optional[dict[str, Optional[str]]] = None
    wheel_cache: Optional[str] = None
    """Source builds: the cache folder for this build key; a wheel there skips fetch + build."""
    key: dict[str, Any] = field(default_factory=dict)
    """Source builds: what the built wheel depends on (backend ref, torch, CUDA, ABI, Python, archs, env)."""
    compile_units: int = 0
    """Source builds: compile units (ninja steps, all extensions together) the build runs."""
    disk_gb: float = 0.0
    """Source builds: free disk needed by the source tree and the wheel cache (checked first)."""
    source_dir: Optional[str] = None
    """``--source DIR``: the user's checkout; the installer adds its content digest to the build key
    (a patched fork or another revision must not get the pinned ref's cached wheel)."""
    verify_rel_tol: float = 0.02
    verify_min_cosine: float = 0.999

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "attn_implementation": self.attn_implementation,
            "viable": self.viable, "reasons": list(self.reasons), "method": self.method,
            "steps": [s.to_dict() for s in self.steps], "warnings": list(self.warnings),
            "estimate_minutes": self.estimate_minutes, "installed_version": self.installed_version,
            "distribution": self.distribution or None, "runtime_env": dict(self.runtime_env),
            "download": self.download, "wheel_cache": self.wheel_cache, "build_key": self.key or None,
            "compile_units": self.compile_units or None, "disk_gb": self.disk_gb or None,
            "verify": {"rel_tol": self.verify_rel_tol, "min_cosine": self.verify_min_cosine},
        }


@dataclass(frozen=True)
class Plan:
    recommended: Optional[str]
    backends: tuple[BackendPlan, ...]
    config: dict[str, Any]
    blockers: tuple[str, ...]
    warnings: tuple[str, ...]
    workload: str
    config_comments: tuple[str, ...] = ()
    runtime_env: dict[str, str] = field(default_factory=dict)
    dtype: Optional[str] = None

    def backend(self, name: str) -> BackendPlan:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "recommended": self.recommended,
            "backends": [b.to_dict() for b in self.backends], "config": dict(self.config),
            "blockers": list(self.blockers), "warnings": list(self.warnings),
            "workload": self.workload, "dtype": self.dtype,
            "config_comments": list(self.config_comments), "runtime_env": dict(self.runtime_env),
        }


def torch_pins(facts: Facts) -> list[str]:
    """``torch==2.8.0+cu128`` etc. for every installed package that must never move."""
    return [f"{name}=={facts.packages[name]}" for name in PINNED if name in facts.packages] or (
        [f"torch=={facts.torch.version}"] if facts.torch else [])


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class _Steps:
    """A viable candidate's steps, the compile units a source build runs, and for source builds
    the wheel-cache folder of its build key."""

    steps: list[Step]
    units: int = 0
    wheel_cache: Optional[str] = None
    key: dict[str, Any] = field(default_factory=dict)
    archs: int = 1
    """NVIDIA archs a source build compiles every unit for (time scales with it)."""


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _python(facts: Facts, request: Request) -> str:
    return request.python or facts.python.executable or "python"


def constraints_file(facts: Facts, request: Request) -> tuple[str, str]:
    """(path, content) of the constraints file that pins torch & co. to their installed versions."""
    content = "".join(p + "\n" for p in torch_pins(facts))
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    return posixpath.join(request.cache_dir.rstrip("/"), "constraints", f"pins-{digest}.txt"), content


def _install_argv(facts: Facts, request: Request, *args: str, deps: bool = True) -> tuple[str, ...]:
    """pip (or uv pip) install with torch & co. constrained to their installed versions, and the
    wheelhouse as the only source when one is given."""
    py = _python(facts, request)
    if request.installer == "uv":
        head: tuple[str, ...] = ("uv", "pip", "install", "--python", py)
    else:
        head = (py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check")
    extra: list[str] = []
    if request.wheelhouse:
        extra += ["--no-index", "--find-links", request.wheelhouse]
        drop = {"--index-url", "--extra-index-url"}
        kept: list[str] = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a in drop:
                skip = True
                continue
            kept.append(a)
        args = tuple(kept)
    if not deps:
        extra.append("--no-deps")
    path, _ = constraints_file(facts, request)
    pins = ("--constraint", path) if torch_pins(facts) else ()
    return (*head, *extra, *pins, *args)


def _install_step(facts: Facts, request: Request, description: str, *args: str, kind: str = "install",
                  deps: bool = True, **kw: Any) -> Step:
    path, content = constraints_file(facts, request)
    writes = {path: content} if content else {}
    return Step(_install_argv(facts, request, *args, deps=deps), {}, description, kind, writes=writes, **kw)


def _steps(c: Candidate, facts: Facts, matrix: Matrix, request: Request) -> _Steps:
    """Steps for a viable candidate (see _Steps)."""
    b = c.backend
    if c.method == "wheel" and c.wheel is not None:
        w = c.wheel
        if request.wheelhouse:
            local = posixpath.join(request.wheelhouse, w.filename)
            return _Steps([_install_step(facts, request, f"install {w.filename} from the wheelhouse", local,
                                  dest=local, sha256=w.sha256)])
        dest = posixpath.join(request.cache_dir.rstrip("/"), "downloads", w.filename)
        return _Steps([_install_step(facts, request,
                              f"download {w.filename} (flash-attn {w.release} release wheel; existence "
                              "checked first, sha256 checked where known) and install it", dest,
                              kind="download", url=w.url, dest=dest, sha256=w.sha256)])
    if c.method == "pypi" and c.xformers is not None:
        flavour = facts.torch.flavour if facts.torch else "cpu"
        index = matrix.xformers_index_url.format(flavour=flavour)
        where = "the wheelhouse" if request.wheelhouse else f"the {flavour} index"
        return _Steps([_install_step(facts, request, f"install xformers {c.xformers.version} from {where} "
                              "with torch pinned", f"xformers=={c.xformers.version}", "--index-url", index)])
    if c.method == "pypi":
        extra = "[cu13]" if facts.torch and facts.torch.cuda and Version(facts.torch.cuda).major >= 13 else ""
        where = "the wheelhouse" if request.wheelhouse else "PyPI"
        return _Steps([_install_step(facts, request, f"install {b.distribution}{extra} from {where} with torch pinned",
                              "--pre", f"{b.distribution}{extra}")])
    if c.method == "source" and c.source is not None:
        return _source_steps(c, facts, matrix, request)
    return _Steps([])


def _fmt_archs(archs: tuple[str, ...], template: str) -> str:
    nv = [a for a in archs if a.startswith("sm_")]
    cc = ";".join(f"{a[3:-1]}.{a[-1]}" for a in nv)
    sm = ";".join(a[3:] for a in nv)
    gfx = ";".join(a for a in archs if a.startswith("gfx"))
    return template.replace("{cc}", cc).replace("{sm}", sm).replace("{gfx}", gfx)


def fa3_trim_env(matrix: Matrix, request: Request, archs: tuple[str, ...]) -> tuple[dict[str, str], bool]:
    """FLASH_ATTENTION_DISABLE_* flags for the head dims / dtypes asked for; (env, trimmed)."""
    tr = matrix.fa3_trims
    env: dict[str, str] = {}
    if "sm_80" not in archs and "sm_86" not in archs:
        env[tr.no_sm80] = "TRUE"
    if request.workload == "inference":
        env[tr.inference] = "TRUE"
    trimmed = bool(request.head_dims or request.dtypes)
    if request.head_dims:
        for hd, flag in tr.hdim.items():
            if hd not in request.head_dims:
                env[flag] = "TRUE"
    if request.dtypes:
        for dt, flag in tr.dtype.items():
            if dt not in request.dtypes:
                env[flag] = "TRUE"
    if trimmed:
        for flag in tr.when_trimmed:
            env[flag] = "TRUE"
    return dict(sorted(env.items())), trimmed


def build_key(c: Candidate, facts: Facts, archs: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    """Everything a built wheel depends on; two builds with the same key give the same wheel
    (parallelism settings are left out: they change how long a build takes, not what it makes)."""
    assert c.source is not None
    t = facts.torch
    speed_only = {"MAX_JOBS", "NVCC_THREADS", c.source.parallel_env}
    relevant = {k: v for k, v in env.items() if k not in speed_only}
    return {
        "backend": c.backend.name, "repo": c.source.repo, "ref": c.source.ref,
        "torch": t.version if t else None, "cuda": t.cuda if t else None, "hip": t.hip if t else None,
        "cxx11abi": t.cxx11abi if t else None, "python": facts.python.cp_tag,
        "machine": facts.host.machine, "archs": list(archs), "env": dict(sorted(relevant.items())),
    }


def key_digest(key: dict[str, Any]) -> str:
    """The short hash that names a build key's wheel-cache folder."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _user_checkout(c: Candidate, request: Request) -> Optional[str]:
    """``--source DIR`` applies to the one backend it was given for."""
    return request.source_dir if request.source_dir and request.backend == c.backend.name else None


def _source_steps(c: Candidate, facts: Facts, matrix: Matrix, request: Request) -> _Steps:
    sb = c.source
    assert sb is not None
    vendor = "amd" if c.backend.vendor == "amd" else "nvidia"
    archs = build_archs(facts, request, vendor)
    res = c.resources
    cache = request.cache_dir.rstrip("/")
    py = _python(facts, request)
    steps: list[Step] = []
    mine = _user_checkout(c, request)
    if mine:
        src = mine
    elif _COMMIT.fullmatch(sb.ref):
        # a commit is not a branch or tag: `clone --branch` cannot take it, a fetch by id can
        src = posixpath.join(cache, "src", f"{c.backend.name}-{sb.ref[:12]}")
        steps.append(Step(("git", "init", "-q", src), {}, f"make {src} for the pinned commit", "fetch"))
        steps.append(Step(("git", "-C", src, "fetch", "-q", "--depth", "1", sb.repo, sb.ref), {},
                          f"fetch {sb.repo} at the pinned commit {sb.ref[:12]}", "fetch"))
        steps.append(Step(("git", "-C", src, "checkout", "-q", "--detach", "FETCH_HEAD"), {},
                          f"check out {sb.ref[:12]}", "fetch"))
    else:
        src = posixpath.join(cache, "src", f"{c.backend.name}-{sb.ref}")
        steps.append(Step(("git", "clone", "--depth", "1", "--branch", sb.ref, sb.repo, src), {},
                          f"fetch {sb.repo} at the pinned {sb.ref}", "fetch"))
        if sb.submodules:
            steps.append(Step(("git", "-C", src, "submodule", "update", "--init", "--depth", "1",
                               *sb.submodules), {}, "fetch the submodules the build needs", "fetch"))
    if facts.toolkit.ninja is None and sb.compile_units:
        steps.append(_install_step(facts, request, "install ninja (parallel compile)", "ninja", kind="prepare"))
    env: dict[str, str] = dict(sb.env)
    if res is not None and sb.compile_units:
        env["MAX_JOBS"] = str(res.max_jobs)
        env["NVCC_THREADS"] = str(res.nvcc_threads)
    for key, template in sb.arch_env.items():
        env[key] = _fmt_archs(archs, template)
    nv_archs = [a for a in archs if a.startswith("sm_")]
    units = max((sb.units_by_arch.get(a, sb.compile_units) for a in nv_archs), default=sb.compile_units)
    if sb.parallel_env and sb.extensions_by_arch and res is not None:
        # every extension's ninja gets MAX_JOBS; building them all at once keeps within the planned
        # memory only when MAX_JOBS covers every unit of every extension together
        exts = max((sb.extensions_by_arch.get(a, 1) for a in nv_archs), default=1)
        env[sb.parallel_env] = str(exts if res.max_jobs >= units else 1)
    build_dir = posixpath.join(src, sb.subdir) if sb.subdir else src
    if c.backend.name == "flash_attention_3":
        trims, trimmed = fa3_trim_env(matrix, request, archs)
        env.update(trims)
        if trimmed:
            units = sb.compile_units_trimmed
        elif matrix.fa3_trims.no_sm80 in trims and sb.compile_units_no_sm80:
            units = sb.compile_units_no_sm80
        cuda_home = facts.toolkit.cuda_home or "/usr/local/cuda"
        env["FLASH_ATTENTION_OFFLINE_BUILD"] = "TRUE"
        steps.append(Step(("mkdir", "-p", posixpath.join(src, "third_party/nvidia")), {},
                          "make room for hopper/setup.py's private toolchain path", "prepare"))
        steps.append(Step(("ln", "-sfn", cuda_home, posixpath.join(src, "third_party/nvidia/backend")),
                          {}, "point hopper/setup.py's private toolchain path at the local CUDA "
                          "(it would otherwise download nvcc 12.6 from NVIDIA)", "prepare"))
        if facts.toolkit.nvcc and Version(facts.toolkit.nvcc).major >= 13:
            env["CPLUS_INCLUDE_PATH"] = posixpath.join(cuda_home, "include/cccl")
            env["NVCC_APPEND_FLAGS"] = "-I" + posixpath.join(cuda_home, "include/cccl")
    if facts.toolkit.cuda_home and vendor == "nvidia":
        env.setdefault("CUDA_HOME", facts.toolkit.cuda_home)
    env = dict(sorted(env.items()))
    bkey = build_key(c, facts, archs, env)
    wheels = posixpath.join(cache, "wheels", f"{c.backend.name}-{key_digest(bkey)}")
    steps.append(Step((py, "-m", "pip", "wheel", "--verbose", "--no-build-isolation", "--no-deps", "--no-input",
                       "--disable-pip-version-check", "--wheel-dir", wheels, build_dir), env,
                      f"build a {c.backend.distribution} wheel for {', '.join(archs)}", "build"))
    steps.append(_install_step(facts, request, "install the built wheel (cached for the next install with "
                               "the same build key)", c.backend.distribution,
                               "--no-index", "--find-links", wheels, "--force-reinstall", deps=False))
    return _Steps(steps, units, wheels, bkey, max(1, len(nv_archs)) if sb.compile_units else 1)


# --------------------------------------------------------------------------- ranking and config


def _rank_row(facts: Facts, matrix: Matrix) -> Optional[RankRow]:
    if not facts.gpus:
        return next((r for r in matrix.ranking if r.vendor == "none"), None)
    vendor = facts.gpus[0].vendor
    sms = [g.sm for g in facts.gpus if g.sm is not None]
    weakest = min(sms) if sms else None
    for row in matrix.ranking:
        if row.vendor != vendor:
            continue
        if vendor == "nvidia" and weakest is not None and not row.nvidia_sm.contains(weakest):
            continue
        return row
    return None


def _order(facts: Facts, matrix: Matrix) -> list[str]:
    row = _rank_row(facts, matrix)
    first = list(row.order) if row else []
    return first + [n for n in matrix.backend_names if n not in first]


def _measured_order(order: list[str], plans: dict[str, BackendPlan],
                    measured: tuple[MeasuredSpeed, ...]) -> list[str]:
    """Viable measured backends first, fastest first, then the static order; each measured backend
    gets a reason with its time (updates ``plans``). Non-viable ones keep their place and reasons:
    a measurement never overrides a viability rule (SageAttention stays out of full fine-tuning)."""
    speeds: dict[str, MeasuredSpeed] = {}
    for m in measured:
        p = plans.get(m.backend)
        if p is not None and p.viable and (m.backend not in speeds or m.ms < speeds[m.backend].ms):
            speeds[m.backend] = m
    fast = sorted(speeds.values(), key=lambda m: (m.ms, m.backend))
    if not fast:
        return order
    best = fast[0]
    where = f" ({best.where})" if best.where else ""
    for m in fast:
        if m is best:
            why = f"measured: {m.ms:.2f} ms {m.metric}, fastest of {len(fast)} on this GPU{where}"
        else:
            why = (f"measured: {m.ms:.2f} ms {m.metric}, {m.ms / best.ms:.2f}x the time of "
                   f"{best.backend} on this GPU")
        plans[m.backend] = replace(plans[m.backend], reasons=(*plans[m.backend].reasons, why))
    first = [m.backend for m in fast]
    return first + [n for n in order if n not in first]


def _bf16(facts: Facts) -> Optional[bool]:
    if not facts.gpus:
        return None
    return all(g.vendor == "amd" or (g.sm or 0) >= 80 for g in facts.gpus)


def _axolotl_version(facts: Facts, request: Request) -> Optional[Version]:
    v = request.axolotl_version or facts.packages.get("axolotl")
    return Version(v) if v else None


def make_config(bp: BackendPlan, facts: Facts, matrix: Matrix, request: Request
                ) -> tuple[dict[str, Any], list[str], list[str]]:
    """axolotl keys for the chosen backend: (config, yaml comments, warnings)."""
    cfg: dict[str, Any] = {}
    comments: list[str] = []
    warnings: list[str] = []
    ver = _axolotl_version(facts, request)
    impl = bp.attn_implementation
    if ver is None or ver >= Version("0.17.0"):
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
        elif ver >= Version("0.12.0"):
            cfg["attn_implementation"] = impl
            warnings.append(f"axolotl {ver} has no boolean for {impl}; wrote attn_implementation "
                            "(accepted unchecked since 0.12.0)")
        else:
            warnings.append(f"axolotl {ver} cannot select {impl}; upgrade axolotl to >= 0.17.0")
    bf16 = _bf16(facts)
    if bf16 is not None:
        cfg["bf16"] = bf16
        cfg["fp16"] = not bf16
    if bp.packing and request.workload != "inference":
        cfg["sample_packing"] = True
        cfg["pad_to_sequence_len"] = True
    if bp.name == "sage":
        cfg["pad_to_sequence_len"] = True
        comments.append("SageAttention: LoRA / QLoRA or inference only; full fine-tuning has been "
                        "observed to drop the loss to 0 (axolotl docs/attention.qmd)")
    if bp.name == "flex_attention":
        cfg["torch_compile"] = True
    return cfg, comments, warnings


def make_plan(facts: Facts, matrix: Matrix, request: Request) -> Plan:
    """Resolve every backend and assemble the plan (pure)."""
    if request.workload not in ("full", "lora", "inference"):
        raise UsageError(f"unknown workload {request.workload!r}: use full, lora or inference")
    if request.backend is not None and request.backend not in matrix.backend_names:
        raise UsageError(f"unknown backend {request.backend!r}: choose from "
                         + ", ".join(matrix.backend_names))
    blockers, warnings = machine_blockers(facts, matrix)
    candidates = {b.name: resolve_backend(b, facts, matrix, request, blockers) for b in matrix.backends}
    plans: dict[str, BackendPlan] = {}
    for name, c in candidates.items():
        planned = _steps(c, facts, matrix, request) if c.viable else _Steps([])
        b = c.backend
        download = None
        if c.wheel is not None:
            download = {"url": c.wheel.url, "filename": c.wheel.filename, "sha256": c.wheel.sha256}
        if c.partial_gpus:
            keep = ",".join(str(i) for i in c.partial_gpus)
            warnings.append(f"{name} fits GPU {keep} only; set CUDA_VISIBLE_DEVICES={keep} to use it there")
        plans[name] = BackendPlan(
            name=name, title=b.title, attn_implementation=b.attn_implementation, viable=c.viable,
            reasons=tuple(c.reasons), method=c.method if c.viable else None, steps=tuple(planned.steps),
            warnings=tuple(c.warnings),
            estimate_minutes=estimate_minutes(c, planned.units * planned.archs) if c.viable else None,
            installed_version=c.installed_version, distribution=b.distribution,
            import_name=b.import_name, packing=b.packing, runtime_env=dict(b.runtime_env),
            download=download, wheel_cache=planned.wheel_cache, key=planned.key, compile_units=planned.units,
            source_dir=_user_checkout(c, request) if c.method == "source" else None,
            disk_gb=c.source.disk_gb if c.method == "source" and c.source is not None else 0.0,
            verify_rel_tol=b.verify_rel_tol, verify_min_cosine=b.verify_min_cosine)
    order = _order(facts, matrix)
    if request.measured:
        order = _measured_order(order, plans, request.measured)
    recommended: Optional[str] = None
    if request.backend is not None:
        recommended = request.backend if plans[request.backend].viable else None
    elif not blockers:
        for name in order:
            p = plans[name]
            if not p.viable:
                continue
            if p.method == "source" and not request.allow_source:
                warnings.append(
                    f"{name} ranks first among viable backends here but needs a source build "
                    f"(about {_minutes(p.estimate_minutes)}); pass --allow-source or "
                    f"--backend {name} to build it")
                continue
            recommended = name
            break
    ranked = sorted(plans.values(), key=lambda p: (
        p.name != recommended, not p.viable, order.index(p.name) if p.name in order else math.inf))
    config: dict[str, Any] = {}
    comments: list[str] = []
    runtime_env: dict[str, str] = {}
    dtype = None
    if recommended is not None:
        rp = plans[recommended]
        config, comments, cfg_warnings = make_config(rp, facts, matrix, request)
        warnings.extend(cfg_warnings)
        runtime_env = dict(rp.runtime_env)
        dtype = "bf16" if config.get("bf16") else "fp16" if config.get("fp16") else None
    return Plan(recommended=recommended, backends=tuple(ranked), config=config,
                blockers=tuple(blockers), warnings=tuple(warnings), workload=request.workload,
                config_comments=tuple(comments), runtime_env=runtime_env, dtype=dtype)


def _minutes(m: Optional[float]) -> str:
    if m is None:
        return "unknown time"
    return f"{m:g} min" if m < 120 else f"{m / 60:.1f} h"
