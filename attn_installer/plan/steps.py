"""Step recipes: the typed steps that obtain a backend by one route.

Pure. Steps never install, upgrade or downgrade torch & co. (matrices/torch.toml ``pinned``): every
pip step carries a constraints file naming their installed versions, so pip's resolver can only keep
them (a conflict fails instead of replacing torch).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from packaging.version import Version

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend
from attn_installer.plan.model import Command, FileNeed, Pins, PipInstall, PipWheel, Step, TargetProgram
from attn_installer.request import Request, Target
from attn_installer.routes import Route, SourceChoice, build_misfits
from attn_installer.words import StepKind

__all__ = ["Recipe", "build_key", "fa3_head_dims", "fa3_trim_env", "key_digest", "recipe", "torch_pins"]

_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Recipe:
    """A route's steps, and for source builds what the plan reports about the build."""

    steps: tuple[Step, ...]
    units: int = 0
    """Compile units (ninja steps, all extensions together) a source build runs."""
    archs: int = 1
    """NVIDIA archs a source build compiles every unit for (time scales with it)."""
    wheel_cache: Optional[str] = None
    key: dict[str, Any] = field(default_factory=dict)
    checkout: Optional[str] = None


def torch_pins(facts: Facts, matrix: Matrix) -> list[str]:
    """``torch==2.8.0+cu128`` etc. for every installed package that must never move."""
    return [f"{name}=={facts.packages[name]}" for name in matrix.pinned if name in facts.packages] or (
        [f"torch=={facts.torch.version}"] if facts.torch else [])


class _Ctx:
    """What every recipe needs: facts, matrix, request, target, and the pins file."""

    def __init__(self, facts: Facts, matrix: Matrix, request: Request, target: Target) -> None:
        self.facts, self.matrix, self.request, self.target = facts, matrix, request, target
        self.cache = target.cache_dir.rstrip("/")
        self.python = target.python or facts.python.executable or "python"
        content = "".join(p + "\n" for p in torch_pins(facts, matrix))
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        path = posixpath.join(self.cache, "constraints", f"pins-{digest}.txt")
        self.pins = Pins(path, content) if content else None

    def install(self, description: str, requirements: tuple[str, ...], *, kind: StepKind = "install",
                need: Optional[FileNeed] = None, **options: Any) -> Step:
        options = {"wheelhouse": self.target.wheelhouse, **options}
        action = PipInstall(python=self.python, requirements=requirements, installer=self.target.installer,
                            pins=self.pins, **options)
        return Step(kind, description, action, need=need)


def recipe(route: Route, b: Backend, facts: Facts, matrix: Matrix, request: Request, target: Target) -> Recipe:
    """The steps that obtain backend *b* by *route* (none for builtin / installed). Where a build of
    its distribution is installed already but does not fit (build_misfits), the wheel replaces it:
    --force-reinstall --no-deps (pip would keep an installed copy of the same version)."""
    ctx = _Ctx(facts, matrix, request, target)
    if b.distribution and b.distribution in facts.packages and build_misfits(b, facts, matrix, request):
        rec = recipe(route, b, replace(facts, packages={k: v for k, v in facts.packages.items()
                                                        if k != b.distribution}), matrix, request, target)
        return replace(rec, steps=tuple(_replacing(s, b.distribution) for s in rec.steps))
    wh = target.wheelhouse
    if route.kind in ("release_asset", "wheel_farm") and route.wheel is not None:
        w = route.wheel
        if wh:
            local = posixpath.join(wh, w.filename)
            return Recipe((ctx.install(f"install {w.filename} from the wheelhouse", (local,),
                                       need=FileNeed(local, None, w.sha256)),))
        dest = posixpath.join(ctx.cache, "downloads", w.filename)
        what = (f"{b.distribution} {w.release} release wheel" if route.kind == "release_asset"
                else "community wheel, third party")
        return Recipe((ctx.install(f"download {w.filename} ({what}; existence checked first, sha256 checked "
                                   "where known, recorded at the first download) and install it", (dest,),
                                   kind="download", need=FileNeed(dest, w.url, w.sha256)),))
    if route.kind == "torch_index" and route.index is not None:
        ix = route.index
        index = (target.torch_index or matrix.torch_index_url).format(flavour=ix.flavour)
        where = "the wheelhouse" if wh else f"the {ix.flavour} index"
        spec = f"{ix.distribution}=={ix.version}"
        if not ix.row.requires:
            return Recipe((ctx.install(f"install {ix.distribution} {ix.version} from {where} with torch pinned",
                                       (spec,), index_url=index),))
        # the wheel alone from the PyTorch index (nothing else resolved there), its dependencies
        # from the default index: no name is ever looked up on both
        return Recipe((
            ctx.install(f"install {ix.distribution} {ix.version} from {where} alone (--no-deps), torch pinned",
                        (spec,), index_url=index, no_deps=True),
            ctx.install(f"install what {ix.distribution} needs ({', '.join(ix.row.requires)}) with torch pinned",
                        ix.row.requires),
        ))
    if route.kind == "pypi":
        major = str(Version(facts.torch.cuda).major) if facts.torch and facts.torch.cuda else ""
        extra = b.extras_by_cuda_major.get(major, "")
        dist = f"{b.distribution}[{extra}]" if extra else b.distribution
        where = "the wheelhouse" if wh else "PyPI"
        return Recipe((ctx.install(f"install {dist} from {where} with torch pinned", (dist,), pre=True),))
    if route.kind == "hub_kernel" and route.hub is not None:
        return _hub(ctx, route)
    if route.kind == "source" and route.source is not None:
        return _source(ctx, b, route.source)
    return Recipe(())


def _replacing(step: Step, distribution: str) -> Step:
    """*step* installing *distribution* over an installed build of the same version."""
    p = step.installs
    if p is None or not any(r == distribution or r.startswith((f"{distribution}=", f"{distribution}[")) or
                            r.rsplit("/", 1)[-1].replace("_", "-").lower().startswith(distribution + "-")
                            for r in p.requirements):
        return step
    return replace(step, action=replace(p, force_reinstall=True, no_deps=True),
                   description=step.description + f" (replacing the installed {distribution} build)")


def _hub(ctx: _Ctx, route: Route) -> Recipe:
    """The loader (`kernels`) when the target lacks it, then the kernel into the Hub cache."""
    hub = route.hub
    assert hub is not None
    steps: list[Step] = []
    runtime = ctx.matrix.hub_runtime
    if runtime and runtime not in ctx.facts.packages:
        reqs: tuple[str, ...] = (runtime,)
        ax = ctx.facts.packages.get("axolotl")
        if ax:  # resolved together, so the loader is one the installed axolotl accepts
            reqs += (f"axolotl=={ax}",)
        where = "the wheelhouse" if ctx.target.wheelhouse else "PyPI"
        steps.append(ctx.install(f"install {runtime} from {where} (the hub kernel loader transformers uses) "
                                 "with torch pinned", reqs))
    args: tuple[str, ...] = (hub.repo, str(hub.version))
    where = f"{hub.repo} v{hub.version} from the Hub"
    if ctx.target.wheelhouse:
        args += ("--from", posixpath.join(ctx.target.wheelhouse, "hub"))
        where = f"{hub.repo} v{hub.version} from the wheelhouse's hub/ folder"
    steps.append(Step("download", f"fetch {where} into the Hub cache (the build variant kernels picks in this "
                                  f"environment; refs/v{hub.version} written for offline nodes)",
                      TargetProgram(ctx.python, "attn_hubfetch", args)))
    return Recipe(tuple(steps))


def _fmt_archs(archs: tuple[str, ...], template: str, families: Mapping[str, str]) -> str:
    nv = [a for a in archs if a.startswith("sm_")]
    family = ";".join(dict.fromkeys(families.get(a, a[3:]) for a in nv))
    return template.format(cc=";".join(f"{a[3:-1]}.{a[-1]}" for a in nv), sm=";".join(a[3:] for a in nv),
                           sm_family=family, gfx=";".join(a for a in archs if a.startswith("gfx")))


def fa3_head_dims(matrix: Matrix, request: Request) -> tuple[int, ...]:
    """The FA3 head-dim kernels a trimmed build keeps: --head-dim as given, else the one the
    training's model runs on (FA3 rounds a head dim up to the next compiled kernel of 64 / 96 /
    128 / 192 / 256: 80 -> 96; MLA's 192 / 128 trains on the 192 kernel, its forward on the mixed
    one), else none (no trim)."""
    kernels = sorted(int(hd) for hd in matrix.fa3_trims.hdim)
    if request.head_dims:  # a head dim between kernels runs on the next larger one (100 -> 128)
        return tuple(sorted({next((k for k in kernels if k >= want), kernels[-1]) for want in request.head_dims}))
    m = request.training.model if request.training is not None else None
    if m is None:
        return ()
    need = max(m.head_dim, m.head_dim_v)
    fit = next((k for k in kernels if k >= need), None)
    return (fit,) if fit is not None else ()


def fa3_trim_env(matrix: Matrix, request: Request, archs: tuple[str, ...]) -> tuple[dict[str, str], bool]:
    """FLASH_ATTENTION_DISABLE_* flags for the head dims / dtypes asked for (or the training's model
    needs); (env, trimmed). A model that soft-caps keeps soft-capping."""
    tr = matrix.fa3_trims
    env: dict[str, str] = {}
    if "sm_80" not in archs and "sm_86" not in archs:
        env[tr.no_sm80] = "TRUE"
    if request.workload == "inference":
        env[tr.inference] = "TRUE"
    head_dims = fa3_head_dims(matrix, request)
    trimmed = bool(head_dims or request.dtypes)
    if head_dims:
        for hd, flag in tr.hdim.items():
            if int(hd) not in head_dims:
                env[flag] = "TRUE"
    if request.dtypes:
        for dt, flag in tr.dtype.items():
            if dt not in request.dtypes:
                env[flag] = "TRUE"
    if trimmed:
        m = request.training.model if request.training is not None else None
        keep = {tr.softcap} if m is not None and m.softcap is not None else set()
        for flag in tr.when_trimmed:
            if flag not in keep:
                env[flag] = "TRUE"
        for hd, flag in tr.hdimdiff.items():  # the mixed qk / v head-dim kernels, only when asked for
            if int(hd) not in head_dims:
                env[flag] = "TRUE"
    return dict(sorted(env.items())), trimmed


def build_key(b: Backend, sc: SourceChoice, facts: Facts, env: dict[str, str],
              source_tree: Optional[str] = None) -> dict[str, Any]:
    """Everything a built wheel depends on; two builds with the same key give the same wheel
    (parallelism settings are left out: they change how long a build takes, not what it makes)."""
    sb = sc.build
    t = facts.torch
    speed_only = {"MAX_JOBS", "NVCC_THREADS", sb.parallel_env}
    relevant = {k: v for k, v in env.items() if k not in speed_only}
    key: dict[str, Any] = {
        "backend": b.name, "repo": sb.repo, "ref": sb.ref,
        "torch": t.version if t else None, "cuda": t.cuda if t else None, "hip": t.hip if t else None,
        "cxx11abi": t.cxx11abi if t else None, "python": facts.python.cp_tag,
        "machine": facts.host.machine, "archs": list(sc.archs), "env": dict(sorted(relevant.items())),
    }
    if source_tree is not None:
        key["source_tree"] = source_tree
    return key


def key_digest(key: dict[str, Any]) -> str:
    """The short hash that names a build key's wheel-cache folder."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _fetch(ctx: _Ctx, b: Backend, sc: SourceChoice) -> tuple[str, list[Step]]:
    """Where the checkout will be and the steps that make it (none for --source DIR)."""
    sb = sc.build
    if sc.checkout:
        return sc.checkout, []
    if sb.sdist_url:
        src = posixpath.join(ctx.cache, "src", f"{b.name}-{sb.ref}")
        tarball = posixpath.join(ctx.cache, "downloads", sb.sdist_url.rsplit("/", 1)[1])
        return src, [
            Step("fetch", f"make {src} for the {sb.ref} sources", Command(("mkdir", "-p", src), creates=src)),
            Step("fetch", f"download the {b.distribution} {sb.ref} source archive (sha256 checked) and unpack it",
                 Command(("tar", "-xzf", tarball, "-C", src, "--strip-components=1")),
                 need=FileNeed(tarball, sb.sdist_url, sb.sdist_sha256 or None)),
        ]
    if _COMMIT.fullmatch(sb.ref):
        # a commit is not a branch or tag: `clone --branch` cannot take it, a fetch by id can
        src = posixpath.join(ctx.cache, "src", f"{b.name}-{sb.ref[:12]}")
        steps = [
            Step("fetch", f"make {src} for the pinned commit", Command(("git", "init", "-q", src), creates=src)),
            Step("fetch", f"fetch {sb.repo} at the pinned commit {sb.ref[:12]}",
                 Command(("git", "-C", src, "fetch", "-q", "--depth", "1", sb.repo, sb.ref))),
            Step("fetch", f"check out {sb.ref[:12]}", Command(("git", "-C", src, "checkout", "-q", "--detach",
                                                                 "FETCH_HEAD"))),
        ]
    else:
        src = posixpath.join(ctx.cache, "src", f"{b.name}-{sb.ref}")
        steps = [Step("fetch", f"fetch {sb.repo} at the pinned {sb.ref}",
                      Command(("git", "clone", "--depth", "1", "--branch", sb.ref, sb.repo, src), creates=src))]
    if sb.submodules:
        steps.append(Step("fetch", "fetch the submodules the build needs",
                          Command(("git", "-C", src, "submodule", "update", "--init", "--depth", "1",
                                   *sb.submodules))))
    return src, steps


def _source(ctx: _Ctx, b: Backend, sc: SourceChoice) -> Recipe:
    sb, res, archs, facts = sc.build, sc.resources, sc.archs, ctx.facts
    src, steps = _fetch(ctx, b, sc)
    if facts.toolkit.ninja is None and sb.compile_units:
        steps.append(ctx.install("install ninja (parallel compile)", ("ninja",), kind="prepare"))
    env: dict[str, str] = dict(sb.env)
    if sb.compile_units:
        env["MAX_JOBS"] = str(res.max_jobs)
        env["NVCC_THREADS"] = str(res.nvcc_threads)
    for key, template in sb.arch_env.items():
        env[key] = _fmt_archs(archs, template, sb.arch_families)
    nv_archs = [a for a in archs if a.startswith("sm_")]
    units = max((sb.units_by_arch.get(a, sb.compile_units) for a in nv_archs), default=sb.compile_units)
    if sb.parallel_env and sb.extensions_by_arch:
        # every extension's ninja gets MAX_JOBS; building them all at once keeps within the planned
        # memory only when MAX_JOBS covers every unit of every extension together
        exts = max((sb.extensions_by_arch.get(a, 1) for a in nv_archs), default=1)
        env[sb.parallel_env] = str(exts if res.max_jobs >= units else 1)
    build_dir = posixpath.join(src, sb.subdir) if sb.subdir else src
    cuda_home = facts.toolkit.cuda_home or "/usr/local/cuda"
    if sb.trims == "fa3":
        trims, trimmed = fa3_trim_env(ctx.matrix, ctx.request, archs)
        env.update(trims)
        if trimmed:
            units = sb.compile_units_trimmed
        elif ctx.matrix.fa3_trims.no_sm80 in trims and sb.compile_units_no_sm80:
            units = sb.compile_units_no_sm80
    for p in sb.prepare:
        steps.append(Step("prepare", p.description,
                          Command(tuple(a.format(src=src, cuda_home=cuda_home) for a in p.argv))))
    nvcc = Version(facts.toolkit.nvcc) if facts.toolkit.nvcc else None
    for cond in sb.env_if:
        if nvcc is not None and cond.nvcc.contains(nvcc, prereleases=True):
            env.update({k: v.format(src=src, cuda_home=cuda_home) for k, v in cond.env.items()})
    if facts.toolkit.cuda_home and b.vendor != "amd":
        env.setdefault("CUDA_HOME", facts.toolkit.cuda_home)
    env = dict(sorted(env.items()))
    digest = ctx.request.source_digest if sc.checkout else None
    bkey = build_key(b, sc, facts, env, digest)
    wheels = posixpath.join(ctx.cache, "wheels", f"{b.name}-{key_digest(bkey)}")
    steps.append(Step("build", f"build a {b.distribution} wheel for {', '.join(archs)}",
                      PipWheel(ctx.python, build_dir, wheels), env=env))
    # the key's folder alone (never the wheelhouse: another node's build there must not be resolved);
    # the install names the one wheel of this key by its path, its sha256 checked (install/loop.py)
    steps.append(ctx.install("install the built wheel (cached for the next install with the same build key)",
                             (b.distribution,), local_wheels=wheels, force_reinstall=True, no_deps=True,
                             wheelhouse=None))
    return Recipe(tuple(steps), units, max(1, len(nv_archs)) if sb.compile_units else 1, wheels, bkey, src)
