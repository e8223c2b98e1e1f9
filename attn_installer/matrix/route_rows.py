"""The rows of matrices/routes.toml, flash_attn_wheels.toml and sources.toml: where a backend's
binary comes from (release wheels, index wheels, the wheel farm, hub kernels) and how it is built
from source. Plain frozen dataclasses; :mod:`attn_installer.matrix` loads and validates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = [
    "BuildDefaults",
    "EnvIf",
    "Fa3Trims",
    "FarmWheel",
    "FlashAttnRelease",
    "HostCompiler",
    "HubFallback",
    "HubKernel",
    "HubPaths",
    "IndexWheel",
    "Prepare",
    "SourceBuild",
]


@dataclass(frozen=True)
class FlashAttnRelease:
    version: Version
    torch: tuple[str, ...]
    cxx11abi_true: tuple[str, ...]
    cxx11abi_false: tuple[str, ...]
    python: tuple[str, ...]
    cuda_major: tuple[str, ...]
    machine: tuple[str, ...]
    glibc: Version
    built_with_cuda: str
    source: str
    sha256: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    """torch:python pairs the release's build matrix skips ("2.4:3.13")."""
    archs: tuple[str, ...] = ()
    """GPU kernels in its wheels (binary compatibility applies); empty: not restricted."""


@dataclass(frozen=True)
class IndexWheel:
    """A backend's wheel on the PyTorch index (matrices/routes.toml [[index_wheel]])."""

    backend: str
    distribution: str
    version: Version
    torch: SpecifierSet
    python: SpecifierSet
    flavours: tuple[str, ...]
    source: str
    machine: tuple[str, ...] = ("x86_64", "aarch64")
    archs: tuple[str, ...] = ()
    """The GPUs its kernels run on (binary compatibility); empty: min_sm alone decides."""
    min_sm: int = 0
    requires: tuple[str, ...] = ()
    """Its dependencies, installed from the default index after the wheel (taken with --no-deps)."""


@dataclass(frozen=True)
class FarmWheel:
    """A community-built wheel (matrices/routes.toml [[farm_wheel]])."""

    backend: str
    version: Version
    torch: str
    """torch major.minor it was built for."""
    cuda: str
    """The CUDA flavour of that torch (cu130)."""
    machine: str
    tags: Mapping[str, str]
    """Python tag (cp312, or cp39-abi3) -> the release tag carrying that file."""
    source: str


@dataclass(frozen=True)
class HubKernel:
    """A kernel on the Hugging Face Hub (matrices/routes.toml [[hub_kernel]])."""

    backend: str
    repo: str
    version: int
    torch: SpecifierSet
    cuda: SpecifierSet
    archs: tuple[str, ...]
    machine: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class HubFallback:
    """The hub kernel transformers loads for an attention name whose package is missing."""

    attn_implementation: str
    distribution: str
    repo: str
    transformers: SpecifierSet
    source: str


@dataclass(frozen=True)
class HubPaths:
    """How axolotl takes a hub kernel path (matrices/axolotl.toml [hub_paths])."""

    accepted_from: Version
    revision_from: Version
    packing: Mapping[str, SpecifierSet]
    source: str


@dataclass(frozen=True)
class Prepare:
    """A command run in the checkout before the build ({src}, {cuda_home} filled in)."""

    argv: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class EnvIf:
    """Build environment added when the nvcc that will compile matches ``nvcc``."""

    nvcc: SpecifierSet
    env: Mapping[str, str]


@dataclass(frozen=True)
class SourceBuild:
    backend: str
    repo: str
    ref: str
    subdir: str
    submodules: tuple[str, ...]
    min_nvcc: Mapping[str, Version]
    recommended_nvcc: Optional[Version]
    nvcc_must_match_torch_major: bool
    nvcc_threads: int
    env: Mapping[str, str]
    arch_env: Mapping[str, str]
    compile_units: int
    compile_units_trimmed: int
    unit_minutes: float
    source: str
    compile_units_no_sm80: int = 0
    units_by_arch: Mapping[str, int] = field(default_factory=dict)
    """Compile units when they depend on the arch (extensions built only for some archs)."""
    extensions_by_arch: Mapping[str, int] = field(default_factory=dict)
    parallel_env: str = ""
    """Env var that builds that many extensions at once (SageAttention's EXT_PARALLEL)."""
    disk_gb: float = 0.0
    """Free disk the build needs where its source tree and the wheel cache live."""
    nvcc_threads_fixed: int = 0
    """The build passes --threads=N to nvcc itself (NVCC_THREADS is not read): each compile job then
    runs min(N, archs) threads, which the memory plan must count."""
    trims: str = ""
    """"fa3": the FLASH_ATTENTION_DISABLE_* trims of [fa3_trims] apply."""
    sdist_url: str = ""
    """Build from this source archive (checked against sdist_sha256) instead of a git checkout."""
    sdist_sha256: str = ""
    arch_families: Mapping[str, str] = field(default_factory=dict)
    """arch -> the value the build's own arch switch takes ({sm_family})."""
    threads_split_archs: bool = False
    """NVCC_THREADS only splits nvcc's work across gencode targets: one arch, one thread."""
    prepare: tuple[Prepare, ...] = ()
    env_if: tuple[EnvIf, ...] = ()


@dataclass(frozen=True)
class BuildDefaults:
    gb_per_nvcc_thread: float
    memory_margin: float
    source: str
    no_units_minutes: float = 3.0
    """The estimate of a source build that compiles no extension (a Triton backend)."""


@dataclass(frozen=True)
class HostCompiler:
    """The GCC majors an nvcc release accepts as its host compiler."""

    nvcc: SpecifierSet
    max_gcc: int
    min_gcc: int
    source: str


@dataclass(frozen=True)
class Fa3Trims:
    hdim: Mapping[str, str]
    dtype: Mapping[str, str]
    hdimdiff: Mapping[str, str]
    when_trimmed: tuple[str, ...]
    no_sm80: str
    inference: str
    source: str
    softcap: str = ""
    """The flag that drops soft-capping (kept in a trimmed build for a model that soft-caps)."""
    local: str = ""
    """The flag that drops local (sliding-window) attention."""
    varlen: str = ""
    """The flag that drops the varlen (packed) entry point."""
