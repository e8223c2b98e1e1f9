"""Decide, from facts and the matrix alone, which backends fit this machine and how to get each.

Pure: no I/O, no subprocess, no os.environ. Every reason names the fact and the rule
("GPU 1 (Tesla T4) is sm_75; flash_attention_2 needs SM >=80 (matrices/backends.toml)").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from packaging.version import InvalidVersion, Version

from attn_installer.facts import Facts, Gpu
from attn_installer.matrix import Backend, FlashAttnRelease, Matrix, SourceBuild, XformersRelease

__all__ = [
    "BuildResources",
    "Candidate",
    "MeasuredSpeed",
    "Request",
    "WheelChoice",
    "build_resources",
    "covered_by",
    "find_flash_attn_wheel",
    "find_xformers",
    "machine_blockers",
    "resolve_backend",
    "torch_archs",
]


@dataclass(frozen=True)
class MeasuredSpeed:
    """One backend's measured time on this machine (from `attn-install bench`), as plan input."""

    backend: str
    ms: float
    metric: str
    """fwd+bwd (full, lora) or fwd (inference)."""
    where: str = ""
    """GPU, dtype and shape it was measured at, for the reason text."""


@dataclass(frozen=True)
class Request:
    """What the user asked for."""

    workload: str = "full"
    backend: Optional[str] = None
    allow_source: bool = False
    head_dims: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    target_archs: tuple[str, ...] = ()
    """Build for these archs instead of the GPUs present (--target-arch, for build hosts)."""
    axolotl_version: Optional[str] = None
    cache_dir: str = "~/.cache/attn-install"
    python: Optional[str] = None
    """The interpreter steps run with; facts.python.executable when None."""
    installer: str = "pip"
    """pip or uv (``uv pip install --python``)."""
    wheelhouse: Optional[str] = None
    """Install only from this folder of wheels (--wheelhouse / --offline)."""
    source_dir: Optional[str] = None
    """A checkout the user already has (--source); no git clone."""
    measured: tuple[MeasuredSpeed, ...] = ()
    """Measured speeds (`plan --measured`): viable measured backends rank first, fastest first."""


@dataclass(frozen=True)
class WheelChoice:
    filename: str
    url: str
    release: str
    sha256: Optional[str]


@dataclass(frozen=True)
class BuildResources:
    max_jobs: int
    nvcc_threads: int
    memory_gb: float
    planned_peak_gb: float


@dataclass
class Candidate:
    backend: Backend
    viable: bool = True
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    method: Optional[str] = None
    wheel: Optional[WheelChoice] = None
    xformers: Optional[XformersRelease] = None
    source: Optional[SourceBuild] = None
    resources: Optional[BuildResources] = None
    installed_version: Optional[str] = None
    partial_gpus: tuple[int, ...] = ()
    """Indices of GPUs the backend would fit if the others were hidden."""

    def fail(self, reason: str) -> None:
        self.viable = False
        self.reasons.append(reason)


# --------------------------------------------------------------------------- arch coverage


def _sm_parts(arch: str) -> tuple[int, int]:
    digits = arch.split("_", 1)[1].rstrip("af")
    return int(digits[:-1]), int(digits[-1])


def covered_by(gpu_arch: str, archs: tuple[str, ...]) -> bool:
    """Whether a build with these archs runs on ``gpu_arch``: the same arch, an older minor of
    the same major (binary compatible: sm_86 code runs on sm_89), or older PTX (compute_XY)."""
    major, minor = _sm_parts(gpu_arch)
    for a in archs:
        if a.startswith("sm_"):
            am, an = _sm_parts(a)
            if am == major and an <= minor:
                return True
        elif a.startswith("compute_"):
            digits = a.split("_", 1)[1].rstrip("af")
            if (int(digits[:-1]), int(digits[-1])) <= (major, minor):
                return True
    return False


def torch_archs(facts: Facts, matrix: Matrix) -> tuple[tuple[str, ...], str]:
    """GPU archs the installed torch has kernels for, and where that knowledge came from."""
    t = facts.torch
    if t is None or t.cuda is None:
        return (), "none"
    if t.arch_list:
        return tuple(t.arch_list), "torch.cuda.get_arch_list()"
    cuda = Version(t.cuda)
    for row in matrix.torch_builds:
        if row.torch.contains(t.release, prereleases=True) and row.cuda.contains(cuda, prereleases=True):
            return row.archs, "matrices/torch.toml"
    return (), "unknown"


def _min_driver(matrix: Matrix, cuda_major: int, os_name: str) -> Optional[Version]:
    for row in matrix.cuda_drivers:
        if row.cuda_major == cuda_major:
            return row.windows if os_name == "windows" else row.linux
    return None


def machine_blockers(facts: Facts, matrix: Matrix) -> tuple[list[str], list[str]]:
    """Problems that stop every install, and machine-level warnings."""
    blockers: list[str] = []
    warnings: list[str] = []
    t = facts.torch
    nvidia = [g for g in facts.gpus if g.vendor == "nvidia"]
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    exe = facts.python.executable or "this Python"
    if t is None:
        blockers.append(
            f"torch is not installed for {exe}: install the torch build for this machine first "
            "(attn-install never installs or changes torch; see https://pytorch.org/get-started/locally/)"
        )
        return blockers, warnings
    if facts.gpus and t.cuda is None and t.hip is None:
        blockers.append(f"torch {t.version} is a CPU-only build: it cannot use {facts.gpus[0].label}; "
                        "install a CUDA or ROCm build of torch")
    if nvidia and t.hip is not None and t.cuda is None:
        blockers.append(f"torch {t.version} is a ROCm build but {nvidia[0].label} is NVIDIA; "
                        "install a CUDA build of torch")
    if amd and t.cuda is not None and not nvidia:
        blockers.append(f"torch {t.version} is a CUDA build but {amd[0].label} is AMD; "
                        "install a ROCm build of torch")
    if nvidia and t.cuda is not None:
        cuda = Version(t.cuda)
        drv = facts.driver
        if drv is None:
            warnings.append("NVIDIA driver version unknown: cannot check it is new enough for "
                            f"torch {t.version} (CUDA {t.cuda})")
        else:
            need = _min_driver(matrix, cuda.major, facts.host.os)
            try:
                have = Version(drv.version)
            except InvalidVersion:
                have = None
            if need is not None and have is not None and have < need:
                blockers.append(
                    f"NVIDIA driver {drv.version} is too old for torch {t.version}: CUDA {cuda.major}.x "
                    f"needs driver >= {need} (matrices/torch.toml); update the driver or install a "
                    f"torch built for an older CUDA")
            elif drv.cuda is not None and Version(drv.cuda).major < cuda.major:
                blockers.append(
                    f"the NVIDIA driver supports CUDA up to {drv.cuda} but torch {t.version} needs "
                    f"CUDA {cuda.major}.x; update the driver")
        archs, origin = torch_archs(facts, matrix)
        if archs:
            for g in nvidia:
                if not covered_by(g.arch, archs):
                    hint = ("install a torch build for CUDA 12.6 (cu126), which still covers it"
                            if (g.sm or 0) < 75 else
                            "install a torch build for CUDA 12.8 or newer (cu128 / cu130)")
                    blockers.append(
                        f"torch {t.version} has no kernels for {g.label}: its build covers "
                        f"{', '.join(archs)} ({origin}); {hint}"
                        + (" or hide that GPU with CUDA_VISIBLE_DEVICES" if len(nvidia) > 1 else ""))
        else:
            warnings.append(f"GPU archs of torch {t.version} unknown (not in matrices/torch.toml); "
                            "run `attn-install probe --torch-arch-list` to read them")
    if len({g.arch for g in facts.gpus}) > 1:
        warnings.append("mixed GPUs: " + ", ".join(g.label for g in facts.gpus)
                        + "; the plan fits every visible GPU")
    return blockers, warnings


# --------------------------------------------------------------------------- wheels and indexes


def _glibc_ok(facts: Facts, need: Version) -> Optional[str]:
    if facts.host.glibc is None:
        return None
    return None if Version(facts.host.glibc) >= need else (
        f"the release wheels need glibc >= {need}; this system has {facts.host.glibc}")


def find_flash_attn_wheel(facts: Facts, matrix: Matrix) -> tuple[Optional[WheelChoice], list[str]]:
    """The exact flash-attn release wheel for this torch / Python / ABI / machine, or why none fits."""
    t = facts.torch
    why: list[str] = []
    if t is None or t.cuda is None:
        return None, ["no CUDA build of torch"]
    if facts.host.os != "linux":
        return None, [f"release wheels are Linux only (this is {facts.host.os})"]
    if t.cxx11abi is None:
        return None, ["torch's C++11 ABI is unknown, so the wheel cannot be chosen safely"]
    mm, cuda_major = t.major_minor, str(Version(t.cuda).major)
    py = f"{Version(facts.python.version).major}.{Version(facts.python.version).minor}"
    abi = "TRUE" if t.cxx11abi else "FALSE"
    for rel in sorted(matrix.flash_attn_releases, key=lambda r: Version(r.version), reverse=True):
        miss = _release_mismatch(rel, facts, mm, cuda_major, py, t.cxx11abi)
        if miss:
            why.append(f"{rel.version}: {miss}")
            continue
        glibc = _glibc_ok(facts, rel.glibc)
        if glibc:
            why.append(f"{rel.version}: {glibc}")
            continue
        cp = facts.python.cp_tag
        url = matrix.flash_attn_url.format(version=rel.version, cuda_major=cuda_major, torch=mm,
                                           abi=abi, cp=cp, machine=facts.host.machine)
        return WheelChoice(url.rsplit("/", 1)[1], url, rel.version,
                           rel.sha256.get(url.rsplit("/", 1)[1])), []
    return None, why


def _release_mismatch(rel: FlashAttnRelease, facts: Facts, mm: str, cuda_major: str, py: str,
                      abi: bool) -> Optional[str]:
    if mm not in rel.torch:
        return f"no wheel for torch {mm} (built for {', '.join(rel.torch)})"
    if cuda_major not in rel.cuda_major:
        return f"no cu{cuda_major} wheel (built for cu{', cu'.join(rel.cuda_major)})"
    if py not in rel.python:
        return f"no wheel for Python {py}"
    if mm not in (rel.cxx11abi_true if abi else rel.cxx11abi_false):
        return f"no cxx11abi{'TRUE' if abi else 'FALSE'} wheel for torch {mm}"
    if facts.host.machine not in rel.machine:
        return f"no {facts.host.machine} wheel"
    return None


def find_xformers(facts: Facts, matrix: Matrix) -> tuple[Optional[XformersRelease], list[str]]:
    """The newest xformers release built for this exact torch and CUDA flavour."""
    t = facts.torch
    if t is None or t.cuda is None:
        return None, ["no CUDA build of torch"]
    flavour = t.flavour
    why = []
    min_sm = min((g.sm or 0) for g in facts.gpus) if facts.gpus else 0
    for rel in sorted(matrix.xformers_releases, key=lambda r: Version(r.version), reverse=True):
        if not rel.torch.contains(t.release, prereleases=True):
            continue
        if flavour not in rel.flavours:
            why.append(f"xformers {rel.version} fits torch {t.release} but has no {flavour} wheels "
                       f"({', '.join(rel.flavours)})")
            continue
        if min_sm and min_sm < rel.min_sm:
            why.append(f"xformers {rel.version} needs SM >= {rel.min_sm}")
            continue
        return rel, []
    if not why:
        fits = sorted({str(r.torch) for r in matrix.xformers_releases})
        why.append(f"no xformers release is built for torch {t.release} "
                   f"(matrices/xformers.toml knows torch {', '.join(fits)})")
    return None, why


# --------------------------------------------------------------------------- source builds


def build_resources(facts: Facts, matrix: Matrix, threads: int, *, fixed: bool = False
                    ) -> Optional[BuildResources]:
    """MAX_JOBS / NVCC_THREADS that fit the memory and CPUs this process may use; None if even
    one compile job would not fit. ``fixed``: the build sets nvcc's threads itself, so they cannot
    be lowered to fit."""
    usable = facts.host.memory_gb * matrix.build.memory_margin
    per_thread = matrix.build.gb_per_nvcc_thread
    threads = max(1, threads)
    while not fixed and threads > 1 and usable < per_thread * threads:
        threads -= 1
    per_job = per_thread * threads
    jobs = min(facts.host.cpu_count, int(usable // per_job))
    if jobs < 1:
        return None
    return BuildResources(jobs, threads, facts.host.memory_gb, round(jobs * per_job, 1))


def build_archs(facts: Facts, request: Request, vendor: str) -> tuple[str, ...]:
    if request.target_archs:
        return tuple(request.target_archs)
    return tuple(dict.fromkeys(g.arch for g in facts.gpus if g.vendor == vendor))


def _check_source(c: Candidate, sb: SourceBuild, facts: Facts, matrix: Matrix,
                  request: Request) -> Optional[str]:
    """Why a source build cannot run here, or None when it can."""
    tk = facts.toolkit
    vendor = c.backend.vendor
    archs = build_archs(facts, request, "amd" if vendor == "amd" else "nvidia")
    if not archs:
        return "no GPU to build for (use --target-arch to build on a machine without one)"
    if vendor == "amd":
        if tk.hipcc is None and sb.arch_env:
            return "hipcc not found (install ROCm >= 6.0 or put /opt/rocm/bin on PATH)"
    else:
        if tk.nvcc is None:
            return ("nvcc not found: install the CUDA toolkit matching torch's CUDA "
                    f"{facts.torch.cuda if facts.torch else '?'} and set CUDA_HOME")
        nvcc = Version(tk.nvcc)
        for a in archs:
            need = sb.min_nvcc.get(a)
            if need is None:
                return f"{sb.backend} source build has no rule for {a} (matrices/sources.toml)"
            if nvcc < need:
                return f"nvcc {tk.nvcc} is too old to build {sb.backend} for {a}: needs >= {need}"
        t = facts.torch
        if sb.nvcc_must_match_torch_major and t is not None and t.cuda is not None \
                and Version(t.cuda).major != nvcc.major:
            return (f"nvcc {tk.nvcc} and torch's CUDA {t.cuda} differ in major version; torch's "
                    "extension builder refuses that: install CUDA toolkit "
                    f"{Version(t.cuda).major}.x and set CUDA_HOME")
        why = _host_compiler_problem(tk.gcc, nvcc, matrix)
        if why is not None:
            return why
        if sb.recommended_nvcc is not None and nvcc < sb.recommended_nvcc:
            c.warnings.append(f"nvcc {tk.nvcc} works, {sb.recommended_nvcc} is recommended upstream")
    if sb.nvcc_threads_fixed:
        threads = min(sb.nvcc_threads_fixed, max(1, sum(a.startswith("sm_") for a in archs)))
        res = build_resources(facts, matrix, threads, fixed=True)
    elif sb.compile_units:
        res = build_resources(facts, matrix, sb.nvcc_threads)
    else:
        res = BuildResources(1, 1, facts.host.memory_gb, 0.0)
    if res is None:
        return (f"one compile job needs about {matrix.build.gb_per_nvcc_thread:g} GB and this process "
                f"may use {facts.host.memory_gb:g} GB (cgroup limit or RAM)")
    c.resources = res
    if tk.ninja is None and sb.compile_units:
        c.warnings.append("ninja not found: the plan installs it from PyPI first "
                          "(without it a build is serial and takes hours)")
    return None


def _host_compiler_problem(gcc: Optional[str], nvcc: Version, matrix: Matrix) -> Optional[str]:
    """Why nvcc would refuse the host gcc (matrices/sources.toml [[host_compiler]]), or None;
    an unknown gcc or an nvcc without a row is not guessed at."""
    if gcc is None:
        return None
    row = matrix.host_compiler_for(nvcc)
    if row is None:
        return None
    major = Version(gcc).major
    if major > row.max_gcc:
        # a newer toolkit of the same major (torch's extension builder refuses another major)
        lows = [s.version for h in matrix.host_compilers if h.max_gcc >= major for s in h.nvcc
                if s.operator == ">=" and Version(s.version).major == nvcc.major]
        alt = f", or use CUDA toolkit >= {lows[0]} (it accepts gcc {major})" if lows else ""
        return (f"host gcc {gcc} is newer than nvcc {nvcc} accepts (gcc <= {row.max_gcc}: nvcc stops with "
                f"'unsupported GNU version'): install gcc-{row.max_gcc} and build with CC=gcc-{row.max_gcc} "
                f"CXX=g++-{row.max_gcc}{alt}")
    if major < row.min_gcc:
        return (f"host gcc {gcc} is older than nvcc {nvcc} needs (gcc >= {row.min_gcc}); install a newer gcc "
                "and build with CC / CXX pointing at it")
    return None


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
    if g.arch not in b.amd_gfx:
        return f"{g.label} is {g.arch}; {b.name} supports {', '.join(b.amd_gfx)}"
    return None


def resolve_backend(b: Backend, facts: Facts, matrix: Matrix, request: Request,
                    blockers: list[str]) -> Candidate:
    c = Candidate(b)
    t = facts.torch
    if blockers:
        c.fail(f"blocked: {blockers[0]}")
        return c
    assert t is not None
    if facts.host.os not in b.os:
        c.fail(f"host OS is {facts.host.os}; {b.name} supports {', '.join(b.os)}")
    if request.workload not in b.workloads:
        c.fail(f"workload is {request.workload}; {b.name} is for {', '.join(b.workloads)} only"
               + (" (full fine-tuning drops the loss to 0: axolotl docs)" if b.name == "sage" else ""))
    gpus = facts.gpus
    if b.needs_gpu and not gpus:
        c.fail(f"{b.name} needs a GPU; none is visible to this process")
    misfits = [(g, _gpu_fit(b, g, request.workload)) for g in gpus]
    bad = [(g, why) for g, why in misfits if why]
    for _g, why in bad:
        c.fail(str(why))
    if bad and len(bad) < len(gpus):
        c.partial_gpus = tuple(g.index for g, why in misfits if not why)
    if facts.python.implementation != "cpython" and b.distribution:
        c.fail(f"Python implementation is {facts.python.implementation}; {b.name} needs CPython")
    if not b.python.contains(Version(facts.python.version), prereleases=True):
        c.fail(f"Python {facts.python.version}; {b.name} needs Python {b.python}")
    if not b.torch.contains(t.release, prereleases=True):
        c.fail(f"torch {t.version}; {b.name} needs torch {b.torch}")
    if b.vendor == "nvidia" and b.min_torch_cuda is not None and t.cuda is not None \
            and Version(t.cuda) < b.min_torch_cuda:
        c.fail(f"torch is built for CUDA {t.cuda}; {b.name} needs CUDA >= {b.min_torch_cuda}")
    if b.vendor == "amd" and t.hip is None and gpus:
        c.fail(f"torch {t.version} is not a ROCm build; {b.name} needs ROCm torch")
    if not c.viable:
        return c
    c.reasons.append(_fit_reason(b, facts))
    _choose_method(c, facts, matrix, request)
    return c


def _fit_reason(b: Backend, facts: Facts) -> str:
    t = facts.torch
    assert t is not None
    if not facts.gpus:
        return f"{b.name} runs without a GPU (torch {t.version})"
    archs = list(dict.fromkeys(g.arch for g in facts.gpus))
    rule = b.nvidia_sm.text if facts.gpus[0].vendor == "nvidia" else ", ".join(b.amd_gfx)
    reason = f"{', '.join(archs)} fits {b.name} ({rule}); torch {t.version}, Python {facts.python.version}"
    kernels = [f"{b.kernels[a]} on {a}" for a in archs if a in b.kernels]
    if kernels:
        reason += f"; the config's entry point runs {', '.join(kernels)} (verification calls the same)"
    return reason


def _choose_method(c: Candidate, facts: Facts, matrix: Matrix, request: Request) -> None:
    b = c.backend
    tried: list[str] = []
    methods = b.methods
    if request.source_dir and request.backend == b.name and "source" in methods:
        # --source DIR asks for a build of that checkout, even over an installed copy
        methods = ("source",)
    for method in methods:
        if method == "builtin":
            c.method = "builtin"
            c.reasons.append(f"part of torch {facts.torch.version if facts.torch else ''}: nothing to install")
            return
        if method == "installed":
            v = facts.packages.get(b.distribution)
            if v is not None:
                c.method, c.installed_version = "installed", v
                c.reasons.append(f"{b.distribution} {v} is already installed; "
                                 f"`attn-install verify {b.name}` proves it loads against this torch")
                return
            continue
        if method == "wheel":
            wheel, why = find_flash_attn_wheel(facts, matrix)
            if wheel is not None:
                c.method, c.wheel = "wheel", wheel
                tv = facts.torch.version if facts.torch else ""
                c.reasons.append(f"release wheel {wheel.filename} matches torch {tv}"
                                 f" / Python {facts.python.version} (matrices/flash_attn_wheels.toml)")
                return
            tried.append("no release wheel: " + "; ".join(why[:3]))
            continue
        if method == "pypi":
            if b.name == "xformers":
                rel, why = find_xformers(facts, matrix)
                if rel is None:
                    tried.append("; ".join(why))
                    continue
                c.method, c.xformers = "pypi", rel
                c.reasons.append(f"xformers {rel.version} is built for torch {rel.torch} "
                                 f"({facts.torch.flavour if facts.torch else ''} index, matrices/xformers.toml)")
                return
            c.method = "pypi"
            c.reasons.append(f"{b.distribution} from PyPI")
            return
        if method == "source":
            sb = matrix.source_for(b.name)
            assert sb is not None  # the loader checks every source method has a row
            why_not = _check_source(c, sb, facts, matrix, request)
            if why_not is not None:
                tried.append(f"source build impossible: {why_not}")
                continue
            c.method, c.source = "source", sb
            res = c.resources
            c.reasons.append(
                f"built from source ({sb.repo} @ {sb.ref}) with MAX_JOBS={res.max_jobs if res else 1}, "
                f"NVCC_THREADS={res.nvcc_threads if res else 1} for the "
                f"{facts.host.memory_gb:g} GB / {facts.host.cpu_count} CPUs this process may use")
            return
    c.fail("no way to obtain it: " + " | ".join(tried) if tried else "no install method fits")


def estimate_minutes(c: Candidate, units: int) -> Optional[float]:
    """Rough duration of the install (source builds scale with compile units per job)."""
    if c.method in ("builtin", "installed"):
        return 0.0
    if c.method == "wheel":
        return 1.0
    if c.method == "pypi":
        return 2.0
    if c.method == "source" and c.source is not None:
        if units == 0:
            return 3.0
        jobs = c.resources.max_jobs if c.resources else 1
        return round(math.ceil(units / jobs) * c.source.unit_minutes, 1)
    return None
