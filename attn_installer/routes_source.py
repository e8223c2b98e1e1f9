"""The last route, a trimmed source build: which archs it compiles, how many jobs and nvcc threads fit
the memory and CPUs this process may use, and the nvcc / host compiler checks that run before
anything is fetched. Pure, like :mod:`attn_installer.routes`, whose Route it returns."""

from __future__ import annotations

from typing import Optional

from packaging.version import Version

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend, SourceBuild
from attn_installer.request import Request
from attn_installer.routes import BuildResources, Miss, Route, SourceChoice

__all__ = ["build_archs", "build_resources"]


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


def _source_route(b: Backend, sb: SourceBuild, facts: Facts, matrix: Matrix, request: Request) -> Route | Miss:
    """The source build, or why it cannot run here."""
    tk = facts.toolkit
    warnings: list[str] = []
    archs = build_archs(facts, request, "amd" if b.vendor == "amd" else "nvidia")

    def miss(reason: str) -> Miss:
        return Miss(f"source build impossible: {reason}", tuple(warnings))

    if not archs:
        return miss("no GPU to build for (use --target-arch to build on a machine without one)")
    if b.vendor == "amd":
        if tk.hipcc is None and sb.arch_env:
            return miss("hipcc not found (install ROCm >= 6.0 or put /opt/rocm/bin on PATH)")
    else:
        why = _nvcc_problem(sb, facts, matrix, archs, warnings)
        if why is not None:
            return miss(why)
    nv_archs = sum(a.startswith("sm_") for a in archs)
    if sb.nvcc_threads_fixed:
        threads = min(sb.nvcc_threads_fixed, max(1, nv_archs))
        res = build_resources(facts, matrix, threads, fixed=True)
    elif sb.compile_units:
        # NVCC_THREADS splits nvcc's work across gencode targets: with one arch it only costs job slots
        threads = 1 if sb.threads_split_archs and nv_archs <= 1 else sb.nvcc_threads
        res = build_resources(facts, matrix, threads)
    else:
        res = BuildResources(1, 1, facts.host.memory_gb, 0.0)
    if res is None:
        return miss(f"one compile job needs about {matrix.build.gb_per_nvcc_thread:g} GB and this process "
                    f"may use {facts.host.memory_gb:g} GB (cgroup limit or RAM)")
    if tk.ninja is None and sb.compile_units:
        warnings.append("ninja not found: the plan installs it from PyPI first "
                        "(without it a build is serial and takes hours)")
    checkout = request.source_dir if request.source_dir and request.backend == b.name else None
    reason = (f"built from source ({sb.repo} @ {sb.ref}) with MAX_JOBS={res.max_jobs}, "
              f"NVCC_THREADS={res.nvcc_threads} for the "
              f"{facts.host.memory_gb:g} GB / {facts.host.cpu_count} CPUs this process may use")
    return Route("source", reason, tuple(warnings), source=SourceChoice(sb, res, archs, checkout))


def _nvcc_problem(sb: SourceBuild, facts: Facts, matrix: Matrix, archs: tuple[str, ...],
                  warnings: list[str]) -> Optional[str]:
    tk = facts.toolkit
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
                f"extension builder refuses that: install CUDA toolkit {Version(t.cuda).major}.x and set CUDA_HOME")
    why = _host_compiler_problem(tk.gcc, nvcc, matrix)
    if why is not None:
        return why
    if sb.recommended_nvcc is not None and nvcc < sb.recommended_nvcc:
        warnings.append(f"nvcc {tk.nvcc} works, {sb.recommended_nvcc} is recommended upstream")
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
