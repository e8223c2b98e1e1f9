"""Where each backend's binary can come from on this machine: one finder per route kind.

Pure: facts + matrix + request in, a :class:`Route` (with why it fits) or the reason it does not
out. :mod:`attn_installer.resolve` asks these in the backend's order (matrices/backends.toml
``routes``) and keeps every route that fits; the plan installs the first and the installer falls
back to the next when one fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from packaging.version import Version

from attn_installer.archs import covered_by
from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import Backend, FlashAttnRelease, HubKernel, IndexWheel, SourceBuild
from attn_installer.request import Request
from attn_installer.words import ROUTE_METHOD, Method, RouteKind

__all__ = [
    "BuildResources", "IndexChoice", "Route", "SourceChoice", "WheelChoice", "build_archs", "build_misfits",
    "build_resources", "find_farm_wheel", "find_flash_attn_wheel", "find_hub_kernel", "find_index_wheel", "find_route",
    "route_minutes",
]


@dataclass(frozen=True)
class WheelChoice:
    filename: str
    url: str
    release: str
    sha256: Optional[str]


@dataclass(frozen=True)
class IndexChoice:
    """A wheel on the PyTorch index: which distribution, version and flavour folder."""

    distribution: str
    version: str
    flavour: str
    row: IndexWheel


@dataclass(frozen=True)
class BuildResources:
    max_jobs: int
    nvcc_threads: int
    memory_gb: float
    planned_peak_gb: float


@dataclass(frozen=True)
class SourceChoice:
    build: SourceBuild
    resources: BuildResources
    archs: tuple[str, ...]
    """The archs the build compiles for (the GPUs present, or --target-arch)."""
    checkout: Optional[str] = None
    """``--source DIR``: the user's checkout instead of a fresh clone."""


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    reason: str
    """Why this route fits (shown as the backend's last reason when it is the one planned)."""
    warnings: tuple[str, ...] = ()
    wheel: Optional[WheelChoice] = None
    """release_asset / wheel_farm: the file to download."""
    index: Optional[IndexChoice] = None
    hub: Optional[HubKernel] = None
    """hub_kernel: the repository and version to fetch."""
    source: Optional[SourceChoice] = None
    installed_version: Optional[str] = None

    @property
    def method(self) -> Method:
        return ROUTE_METHOD[self.kind]


@dataclass(frozen=True)
class Miss:
    """A route that does not fit: the reason, and warnings it raised on the way."""

    reason: str
    warnings: tuple[str, ...] = field(default=())


def _flag_off(flags: dict[str, bool], env_flag: str) -> bool:
    """Whether a FLASH_ATTENTION_DISABLE_* build switch was on: the build's config file spells the
    head-dim ones FLASHATTENTION_DISABLE_* (hopper/setup.py), so names compare without underscores."""
    return bool(env_flag) and flags.get(env_flag.replace("_", "").upper(), False)


def build_misfits(b: Backend, facts: Facts, matrix: Matrix, request: Request) -> list[str]:
    """What the installed build of *b* was compiled without that this training needs (its build
    flags: facts.build_flags, read from FA3's flash_attn_config.py): the model's head-dim kernel
    (a head dim runs on the next compiled one of 64 / 96 / 128 / 192 / 256), the mixed Q/K / V
    kernel, soft-capping, local attention, varlen, the backward pass. [] when it fits or nothing is
    known."""
    raw = facts.build_flags.get(b.distribution)
    sb = matrix.source_for(b.name)
    if not raw or not b.build_flags_file or sb is None or sb.trims != "fa3":
        return []
    flags = {k.replace("_", "").upper(): v for k, v in raw.items()}
    tr = matrix.fa3_trims
    out: list[str] = []
    if request.workload != "inference" and _flag_off(flags, tr.inference):
        out.append(f"built without the backward pass ({tr.inference}); {request.workload} training needs it")
    t = request.training
    m = t.model if t is not None else None
    if m is not None:
        enabled = sorted(int(hd) for hd, flag in tr.hdim.items() if not _flag_off(flags, flag))
        need = max(m.head_dim, m.head_dim_v)
        if not any(k >= need for k in enabled):
            have = ", ".join(map(str, enabled)) or "none"
            out.append(f"built for head dims {have}; {m.name} needs the head dim {need} kernel or a larger one")
        if m.head_dim != m.head_dim_v:
            diff = "192" if m.head_dim > 64 else "64"
            if _flag_off(flags, tr.hdimdiff.get(diff, "")):
                out.append(f"built without the mixed head-dim kernel {tr.hdimdiff[diff]} that head dims {m.dims} need")
        if m.softcap is not None and _flag_off(flags, tr.softcap):
            out.append(f"built without soft-capping ({tr.softcap}); {m.name} soft-caps attention logits")
        if m.sliding_window is not None and _flag_off(flags, tr.local):
            out.append(f"built without local attention ({tr.local}); {m.name} has a sliding window")
    if t is not None and t.packing and _flag_off(flags, tr.varlen):
        out.append(f"built without varlen ({tr.varlen}); sample_packing needs it")
    return out


def find_route(kind: str, b: Backend, facts: Facts, matrix: Matrix, request: Request) -> Route | Miss | None:
    """The route of *kind* for backend *b*, a Miss saying why it does not fit, or None when the kind
    does not apply (nothing installed: try the next one silently)."""
    t = facts.torch
    tv = t.version if t else ""
    if kind == "builtin":
        return Route("builtin", f"part of torch {tv}: nothing to install")
    if kind == "installed":
        v = facts.packages.get(b.distribution)
        if v is None:
            return None
        unfit = build_misfits(b, facts, matrix, request)
        if unfit:
            text = (f"{b.distribution} {v} is installed, but its build does not fit: " + "; ".join(unfit)
                    + f" ({b.build_flags_file}); the next route replaces it")
            return Miss(text, (text,))
        return Route("installed", f"{b.distribution} {v} is already installed; "
                                  f"`attn-install verify {b.name}` proves it loads against this torch",
                     installed_version=v)
    if kind == "release_asset":
        wheel, why = find_flash_attn_wheel(facts, matrix)
        if wheel is None:
            return Miss("no release wheel: " + "; ".join(why[:3]))
        return Route("release_asset", f"release wheel {wheel.filename} matches torch {tv}"
                                      f" / Python {facts.python.version} (matrices/flash_attn_wheels.toml)",
                     wheel=wheel)
    if kind == "torch_index":
        choice, why = find_index_wheel(b, facts, matrix)
        if choice is None:
            return Miss("; ".join(why))
        return Route("torch_index", f"{choice.distribution} {choice.version} is built for torch {choice.row.torch} "
                                    f"({choice.flavour} PyTorch index, matrices/routes.toml)", index=choice)
    if kind == "wheel_farm":
        wheel, why = find_farm_wheel(b, facts, matrix)
        if wheel is None:
            return Miss("no community wheel: " + "; ".join(why[:2]))
        return Route("wheel_farm", f"community wheel {wheel.filename} (mjun0812/flash-attention-prebuild-wheels, "
                                   "third party: its sha256 is recorded at the first download and the kernel "
                                   "check decides) matches torch " + tv, wheel=wheel)
    if kind == "pypi":
        return Route("pypi", f"{b.distribution} from PyPI")
    if kind == "hub_kernel":
        hub, why = find_hub_kernel(b, facts, matrix)
        if hub is None:
            return Miss("no hub kernel: " + "; ".join(why[:2]))
        return Route("hub_kernel", f"hub kernel {hub.repo} v{hub.version} serves torch {hub.torch} with CUDA "
                                   f"{hub.cuda} on {', '.join(hub.archs)} (matrices/routes.toml; loaded by the "
                                   "`kernels` package, fetched into the Hub cache for offline use)", hub=hub)
    if kind == "source":
        sb = matrix.source_for(b.name)
        assert sb is not None  # the loader checks every source route has a row
        return _source_route(b, sb, facts, matrix, request)
    return Miss(f"route {kind} is not available here")


def route_minutes(route: Route, matrix: Matrix, units: int) -> Optional[float]:
    """Rough duration of the install (source builds scale with compile units per job)."""
    if route.kind == "source" and route.source is not None:
        if units == 0:
            return matrix.build.no_units_minutes
        jobs = route.source.resources.max_jobs
        return round(math.ceil(units / jobs) * route.source.build.unit_minutes, 1)
    return matrix.route_minutes(route.kind)


# --------------------------------------------------------------------------- release wheels and indexes


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
    pv = Version(facts.python.version)
    py = f"{pv.major}.{pv.minor}"
    abi = "TRUE" if t.cxx11abi else "FALSE"
    for rel in sorted(matrix.flash_attn_releases, key=lambda r: r.version, reverse=True):
        miss = _release_mismatch(rel, facts, mm, cuda_major, py, t.cxx11abi)
        if miss:
            why.append(f"{rel.version}: {miss}")
            continue
        glibc = _glibc_ok(facts, rel.glibc)
        if glibc:
            why.append(f"{rel.version}: {glibc}")
            continue
        url = matrix.flash_attn_url.format(version=rel.version, cuda_major=cuda_major, torch=mm, abi=abi,
                                           cp=facts.python.cp_tag, machine=facts.host.machine)
        filename = url.rsplit("/", 1)[1]
        return WheelChoice(filename, url, str(rel.version), rel.sha256.get(filename)), []
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
    if f"{mm}:{py}" in rel.exclude:
        return f"no wheel for torch {mm} with Python {py} (its build matrix skips that pair)"
    missing = [g.arch for g in facts.gpus if g.vendor == "nvidia" and rel.archs and not covered_by(g.arch, rel.archs)]
    if missing:
        return (f"its wheels carry kernels for {', '.join(rel.archs)}, not {missing[0]} "
                f"(built with CUDA {rel.built_with_cuda})")
    return None


def _flavour_cuda(flavour: str) -> Version:
    digits = flavour[2:]
    return Version(f"{digits[:-1]}.{digits[-1]}")


def _index_flavour(flavours: tuple[str, ...], want: str) -> Optional[str]:
    """torch's own flavour, else (CUDA) the newest one of the same CUDA major that is not newer than it."""
    if want in flavours:
        return want
    if not want.startswith("cu"):
        return None  # ROCm: the exact flavour only
    have = _flavour_cuda(want)
    cuda = [f for f in flavours if f.startswith("cu")]
    same = [f for f in cuda if _flavour_cuda(f).major == have.major and _flavour_cuda(f) <= have]
    return max(same, key=_flavour_cuda) if same else None


def find_index_wheel(b: Backend, facts: Facts, matrix: Matrix) -> tuple[Optional[IndexChoice], list[str]]:
    """The newest wheel of *b* on the PyTorch index built for this torch, CUDA flavour, Python,
    machine and every visible GPU."""
    t = facts.torch
    if t is None or (t.cuda is None and t.hip is None):
        return None, ["no CUDA or ROCm build of torch"]
    rows = sorted((r for r in matrix.index_wheels if r.backend == b.name), key=lambda r: r.version, reverse=True)
    py = Version(facts.python.version)
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(facts.host.machine.lower(), facts.host.machine.lower())
    why: list[str] = []
    min_sm = min((g.sm or 0) for g in facts.gpus) if facts.gpus else 0
    for row in rows:
        name = f"{row.distribution} {row.version}"
        if not row.torch.contains(t.release, prereleases=True):
            continue
        flavour = _index_flavour(row.flavours, t.flavour)
        if flavour is None:
            why.append(f"{name} fits torch {t.release} but has no {t.flavour} wheels ({', '.join(row.flavours)})")
            continue
        if machine not in row.machine:
            why.append(f"{name} has no {facts.host.machine} wheels")
            continue
        if not row.python.contains(py, prereleases=True):
            why.append(f"{name} needs Python {row.python}")
            continue
        if min_sm and min_sm < row.min_sm:
            why.append(f"{name} needs SM >= {row.min_sm}")
            continue
        missing = [g for g in facts.gpus if g.vendor == "nvidia" and row.archs and not covered_by(g.arch, row.archs)]
        if missing:
            why.append(f"{name} has kernels for {', '.join(row.archs)}, not {missing[0].arch}")
            continue
        return IndexChoice(row.distribution, str(row.version), flavour, row), []
    if not why:
        fits = sorted({str(r.torch) for r in rows})
        why.append(f"no {b.distribution} wheel on the PyTorch index is built for torch {t.release} "
                   f"(matrices/routes.toml knows torch {', '.join(fits)})")
    return None, why


def find_farm_wheel(b: Backend, facts: Facts, matrix: Matrix) -> tuple[Optional[WheelChoice], list[str]]:
    """A community-built wheel of *b* for exactly this torch minor, CUDA flavour, Python and machine."""
    t = facts.torch
    template = matrix.farm_files.get(b.name)
    if t is None or t.cuda is None or template is None:
        return None, ["no CUDA build of torch" if template else f"no farm builds {b.name}"]
    if facts.host.os != "linux":
        return None, [f"the farm's wheels attn-install knows are Linux ones (this is {facts.host.os})"]
    if t.cxx11abi is False:
        return None, ["the farm builds against pytorch.org torch (C++11 ABI); this torch is not"]
    machine = facts.host.machine
    rows = [r for r in matrix.farm_wheels if r.backend == b.name and r.torch == t.major_minor
            and r.cuda == t.flavour and r.machine == machine]
    if not rows:
        return None, [f"none for torch {t.major_minor} + {t.flavour} on {machine}"]
    for row in sorted(rows, key=lambda r: r.version, reverse=True):
        py = next((p for p in (facts.python.cp_tag, "cp39-abi3") if p in row.tags), None)
        if py is None:
            continue
        file = template.format(version=row.version, cuda=row.cuda, torch=row.torch, py=py, machine=machine)
        return WheelChoice(file, matrix.farm_url.format(tag=row.tags[py], file=file), str(row.version), None), []
    return None, [f"none for Python {facts.python.cp_tag}"]


def find_hub_kernel(b: Backend, facts: Facts, matrix: Matrix) -> tuple[Optional[HubKernel], list[str]]:
    """The Hub kernel of *b* whose builds serve this torch, its CUDA, the machine and every GPU."""
    t = facts.torch
    if t is None or t.cuda is None:
        return None, ["no CUDA build of torch"]
    if facts.host.os != "linux":
        return None, [f"the hub kernels attn-install knows are Linux builds (this is {facts.host.os})"]
    rows = [r for r in matrix.hub_kernels if r.backend == b.name]
    if not rows:
        return None, [f"no hub kernel of {b.name} in matrices/routes.toml"]
    why: list[str] = []
    for row in rows:
        if not row.torch.contains(t.release, prereleases=True):
            why.append(f"{row.repo} v{row.version} serves torch {row.torch}, not {t.release}")
        elif not row.cuda.contains(t.cuda, prereleases=True):
            why.append(f"{row.repo} v{row.version} is built for CUDA {row.cuda}, torch has {t.cuda}")
        elif facts.host.machine not in row.machine:
            why.append(f"{row.repo} has no {facts.host.machine} builds")
        elif any(g.vendor == "nvidia" and not covered_by(g.arch, row.archs) for g in facts.gpus):
            bad = next(g for g in facts.gpus if g.vendor == "nvidia" and not covered_by(g.arch, row.archs))
            why.append(f"{row.repo} has kernels for {', '.join(row.archs)}, not {bad.arch}")
        else:
            return row, []
    return None, why


# the source route (build sizing, nvcc and host-compiler preflight) lives beside this module
from attn_installer.routes_source import _source_route, build_archs, build_resources  # noqa: E402
