"""The row types of matrices/*.toml: frozen dataclasses, one per kind of row.

Each field's default is written once, here; the loader (:mod:`attn_installer.matrix`) derives which
fields are required from these definitions and checks every value against its annotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = [
    "ArchSpec", "Backend", "BuildDefaults", "CallSpec", "CudaDriver", "Explain", "Fa3Trims", "FlashAttnRelease",
    "Hint", "HostCompiler", "LegacyFlag", "Matrix", "Prepare", "RankRow", "RetiredFlag", "RouteKindRow",
    "SourceBuild", "TorchBuild", "AttnImplValues", "IndexWheel", "FarmWheel", "AxolotlKeys", "EnvIf", "TorchRelease",
    "RocmBuild", "GpuCapability", "GpuPeak", "SdpaKernel", "gpu_name_key",
]


@dataclass(frozen=True)
class ArchSpec:
    """Which NVIDIA archs a rule covers: a specifier over the SM number, or an explicit list."""

    spec: Optional[SpecifierSet] = None
    archs: tuple[str, ...] = ()
    text: str = ""

    @property
    def empty(self) -> bool:
        return self.spec is None and not self.archs

    def contains(self, sm: int) -> bool:
        if self.archs:
            return f"sm_{sm}" in self.archs
        return self.spec is not None and self.spec.contains(Version(str(sm)), prereleases=True)


@dataclass(frozen=True)
class CallSpec:
    """How verification and bench call a backend (the one table of kernel calls).

    ``convention`` picks the adapter in attn_installer/target/attn_calls.py (sdpa, eager, flex,
    xformers, flash, sage); the other fields are the names and layouts that adapter uses."""

    convention: str
    module: str = ""
    function: str = ""
    layout: str = "bshd"
    """bshd (batch, seq, heads, dim) or bhsd."""
    gqa: bool = False
    """Takes fewer KV heads than query heads as they are; otherwise KV heads are expanded first."""
    varlen: str = ""
    """The packed (cu_seqlens) entry point, "" when the backend has none here."""
    varlen_gqa: bool = False
    varlen_max_seqlen: bool = True
    """The varlen entry point takes max_seqlen_q / max_seqlen_k."""
    backward: bool = True
    """The entry point has a backward pass (False: forward-only kernels such as SageAttention)."""
    alternatives: tuple[str, ...] = ()
    """Other entry points of the module, tried when the default one is wrong (names those that work)."""
    extension_warning: str = ""
    """A warning text that means the compiled extension did not load (the backend fell back)."""
    extension_optional_from: str = ""
    """From this version the attention path no longer needs that extension."""
    require_fused: bool = False
    """SDPA: fail when no fused kernel works (every call would fall back to math)."""


@dataclass(frozen=True)
class Backend:
    name: str
    attn_implementation: str
    """The value axolotl >= 0.17 takes in `attn_implementation:`."""
    title: str
    vendor: str
    """nvidia, amd or any."""
    nvidia_sm: ArchSpec
    amd_gfx: tuple[str, ...]
    """gfx targets it supports (besides those of amd_gfx_from_torch)."""
    needs_gpu: bool
    os: tuple[str, ...]
    python: SpecifierSet
    torch: SpecifierSet
    min_torch_cuda: Optional[Version]
    workloads: tuple[str, ...]
    packing: bool
    distribution: str
    import_name: str
    routes: tuple[str, ...]
    """Where it can come from, best first (route kinds of matrices/routes.toml)."""
    source: str
    call: CallSpec
    training_nvidia_sm: ArchSpec = field(default_factory=ArchSpec)
    runtime_env: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""
    kernels: Mapping[str, str] = field(default_factory=dict)
    """The kernel the backend's default entry point (the one axolotl calls) runs per arch."""
    verify_rel_tol: float = 0.02
    """Largest relative L2 error of the output against fp32 math that still passes: bf16 / fp16
    kernels land between 1e-3 and 1e-2; quantised ones (SageAttention's INT8 QK / FP8 PV) near 3e-2."""
    verify_min_cosine: float = 0.999
    aliases: tuple[str, ...] = ()
    """Short names `attn-install bench --backends` accepts (fa3, flex)."""
    extras_by_cuda_major: Mapping[str, str] = field(default_factory=dict)
    """The distribution's extra to install for torch's CUDA major (flash-attn-4[cu13])."""
    config: Mapping[str, object] = field(default_factory=dict)
    """axolotl keys the backend needs besides the attention key (flex: torch_compile)."""
    config_comment: str = ""
    workload_note: str = ""
    """Said when the workload rules it out (why it is not for full fine-tuning)."""
    bench_as: str = ""
    """Measured under another backend's name (the ROCm flash_attn builds as flash_attention_2)."""
    version_from: tuple[str, ...] = ()
    """Distributions whose version labels a measurement (default: ``distribution``)."""
    min_driver: Optional[Version] = None
    """The NVIDIA driver it needs at run time (FA4's CuTe DSL: the CUDA 12.9 driver)."""
    shadows: tuple[str, ...] = ()
    """Distributions whose files its wheel overwrites (released flash-attn ships an old
    flash_attn/cute that replaces flash-attn-4's): they are put back after it is installed."""
    amd_gfx_from_torch: bool = False
    """Part of torch: it runs on every AMD GPU the ROCm torch build has kernels for (its gfx list in
    torch.toml [[rocm_build]], or torch.cuda.get_arch_list()), whatever amd_gfx says."""


@dataclass(frozen=True)
class CudaDriver:
    cuda_major: int
    linux: Version
    windows: Version
    source: str


@dataclass(frozen=True)
class TorchBuild:
    torch: SpecifierSet
    cuda: SpecifierSet
    archs: ArchSpec
    source: str
    machine: tuple[str, ...] = ("x86_64", "aarch64")

    def matches(self, torch: Version, cuda: Version, machine: str) -> bool:
        m = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
        return (self.torch.contains(torch, prereleases=True) and self.cuda.contains(cuda, prereleases=True)
                and m in self.machine)


@dataclass(frozen=True)
class TorchRelease:
    """A torch release attn-install can point a machine at (`attn-install torch`)."""

    version: Version
    python: SpecifierSet
    cuda: tuple[str, ...]
    """CUDA flavours on download.pytorch.org (cu126, cu130, ...)."""
    rocm: tuple[str, ...]
    default: str
    """The flavour `pip install torch` gets from PyPI on Linux x86_64."""
    source: str


@dataclass(frozen=True)
class RocmBuild:
    torch: SpecifierSet
    flavours: tuple[str, ...]
    gfx: tuple[str, ...]
    source: str


def gpu_name_key(name: str) -> str:
    """A GPU name as gpus.toml compares it: lower case, single spaces, no leading "NVIDIA " or
    "Tesla " (NVIDIA's pages write "NVIDIA T4", drivers print "Tesla T4")."""
    key = " ".join(name.lower().split())
    for prefix in ("nvidia ", "tesla "):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


@dataclass(frozen=True)
class GpuCapability:
    """NVIDIA's published compute capability of the products named (gpus.toml [[compute_capability]])."""

    cc: str
    names: tuple[str, ...]
    source: str

    def matches(self, gpu_name: str) -> int:
        """The length of the longest of its names that *gpu_name* is, or starts with before a " " or
        "-" and a variant suffix ("H100 80GB HBM3", "V100-SXM2-16GB"); 0 when none, and for a name
        nvidia-smi's table cut short ("NVIDIA GeForce RTX 2080 ..."): that could be any variant."""
        key = gpu_name_key(gpu_name)
        if key.endswith("..."):
            return 0
        best = 0
        for name in self.names:
            n = gpu_name_key(name)
            if key == n or (key.startswith(n) and key[len(n)] in " -"):
                best = max(best, len(n))
        return best


@dataclass(frozen=True)
class SdpaKernel:
    """Which SDPA kernel torch runs on the GPUs a row matches (gpus.toml [[sdpa_kernel]])."""

    vendor: str
    kernel: str
    source: str
    nvidia_sm: ArchSpec = field(default_factory=ArchSpec)
    amd_gfx: tuple[str, ...] = ()
    otherwise: bool = False
    """Matches every GPU of the vendor that no earlier row matched."""


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


@dataclass(frozen=True)
class AttnImplValues:
    axolotl: SpecifierSet
    values: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class LegacyFlag:
    attn_implementation: str
    flag: str
    axolotl: SpecifierSet
    source: str


@dataclass(frozen=True)
class RunTimeSwap:
    """axolotl running another backend than the config names, when *when_installed* is there."""

    axolotl: SpecifierSet
    attn_implementation: tuple[str, ...]
    runs: str
    when_installed: str
    nvidia_sm_major: tuple[int, ...]
    source: str


@dataclass(frozen=True)
class RetiredFlag:
    """An attention switch that selects no backend of its own; a config merge deletes it."""

    flag: str
    axolotl: SpecifierSet
    source: str


@dataclass(frozen=True)
class AxolotlKeys:
    one_key_from: Version
    """From this axolotl, `attn_implementation` is the one key (legacy booleans before)."""
    unchecked_key_from: Version
    """From this axolotl, `attn_implementation` is read (unchecked) where no boolean exists."""
    source: str


@dataclass(frozen=True)
class RankRow:
    vendor: str
    nvidia_sm: ArchSpec
    order: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Hint:
    name: str
    pattern: str
    hint: str
    source: str


@dataclass(frozen=True)
class Explain:
    """A known pip failure put in one sentence; ``text`` may use the pattern's named groups and
    {torch}; ``with_wheelhouse`` (when given) is used instead when installing from a wheelhouse."""

    name: str
    pattern: str
    text: str
    source: str
    with_wheelhouse: str = ""
    needs_torch: bool = False


@dataclass(frozen=True)
class RouteKindRow:
    kind: str
    minutes: float
    """The install estimate for a route of this kind (source builds: from their compile units)."""
    source: str
    target_mb: float = 0.0
    """Free space an install step of this kind needs in the target environment (checked before it runs)."""
    download_mb: float = 0.0
    """Free space its downloads need: in the cache (a release or farm wheel) or the temp dir (pip's)."""
    space_source: str = ""


@dataclass(frozen=True)
class GpuPeak:
    """A GPU model's dense tensor peak (matrices/gpu_peaks.toml): the ceiling a measured
    throughput cannot pass."""

    name: str
    name_pattern: str
    """Searched (case-insensitive) in the device name torch reports; the first matching row wins."""
    bf16_tflops: float
    fp16_tflops: float
    confidence: str
    source: str
    fp16_acc16_tflops: float = 0.0
    """GeForce: FP16 with FP16 accumulate, twice the FP32-accumulate rate (0: same as fp16_tflops)."""
    sparse_quoted: float = 0.0
    package_tflops: float = 0.0

    def ceiling(self, dtype: str) -> tuple[float, str]:
        """The highest TFLOP/s a *dtype* kernel can reach here, and how it was chosen. A dtype
        without tensor cores (bf16 on Turing / Volta: 0) is judged against the other dtype's rate,
        which is higher than anything it can run at."""
        fp16 = max(self.fp16_tflops, self.fp16_acc16_tflops)
        own = self.bf16_tflops if dtype == "bf16" else fp16
        if own > 0:
            return own, f"dense {dtype} peak of the {self.name}"
        return max(self.bf16_tflops, fp16), (f"the {self.name} has no {dtype} tensor cores: judged against "
                                             "its fastest tensor rate")


@dataclass(frozen=True)
class Matrix:
    backends: tuple[Backend, ...]
    cuda_drivers: tuple[CudaDriver, ...]
    torch_builds: tuple[TorchBuild, ...]
    torch_releases: tuple[TorchRelease, ...]
    rocm_builds: tuple[RocmBuild, ...]
    gpu_capabilities: tuple[GpuCapability, ...]
    """NVIDIA's compute capability by product name, for a probe whose nvidia-smi cannot report it."""
    sdpa_kernels: tuple[SdpaKernel, ...]
    torch_index_url: str
    pinned: tuple[str, ...]
    """Distributions attn-install never installs, upgrades or downgrades (torch & co.)."""
    watched: tuple[str, ...]
    """Distributions besides the backends' and the pinned ones that the probe records."""
    flash_attn_url: str
    flash_attn_releases: tuple[FlashAttnRelease, ...]
    index_wheels: tuple[IndexWheel, ...]
    farm_wheels: tuple[FarmWheel, ...]
    farm_url: str
    hub_kernels: tuple[HubKernel, ...]
    hub_fallbacks: tuple[HubFallback, ...]
    hub_runtime: str
    hub_runtime_source: str
    hub_paths: HubPaths
    farm_files: Mapping[str, str]
    sources: tuple[SourceBuild, ...]
    build: BuildDefaults
    fa3_trims: Fa3Trims
    host_compilers: tuple[HostCompiler, ...]
    attn_impl_values: tuple[AttnImplValues, ...]
    legacy_flags: tuple[LegacyFlag, ...]
    run_time_swaps: tuple[RunTimeSwap, ...]
    retired_flags: tuple[RetiredFlag, ...]
    axolotl_keys: AxolotlKeys
    ranking: tuple[RankRow, ...]
    hints: tuple[Hint, ...]
    explains: tuple[Explain, ...]
    route_kinds: tuple[RouteKindRow, ...]
    bench_order: tuple[str, ...]
    """Backends `attn-install bench` measures, in this order."""
    gpu_peaks: tuple[GpuPeak, ...]
    directory: Path

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def source_for(self, backend: str) -> Optional[SourceBuild]:
        return next((s for s in self.sources if s.backend == backend), None)

    def host_compiler_for(self, nvcc: Version) -> Optional[HostCompiler]:
        return next((h for h in self.host_compilers if h.nvcc.contains(nvcc)), None)

    def route_minutes(self, kind: str) -> Optional[float]:
        return next((r.minutes for r in self.route_kinds if r.kind == kind), None)

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    @property
    def attention_keys(self) -> tuple[str, ...]:
        """Every axolotl key that selects attention: attn_implementation and each boolean."""
        flags = [f.flag for f in self.legacy_flags] + [f.flag for f in self.retired_flags]
        return ("attn_implementation", *dict.fromkeys(flags))

    @property
    def recorded_distributions(self) -> frozenset[str]:
        """What the probe records: the pinned ones, every backend's distribution, the watched ones."""
        return frozenset((*self.pinned, *self.watched, *(b.distribution for b in self.backends if b.distribution)))

    def peak_for(self, gpu_name: str) -> Optional[GpuPeak]:
        """The first gpu_peaks row whose pattern is found in *gpu_name* (torch's device name)."""
        import re  # noqa: PLC0415

        return next((p for p in self.gpu_peaks if re.search(p.name_pattern, gpu_name, re.IGNORECASE)), None)

    def bench_aliases(self) -> dict[str, str]:
        """Short name -> backend, for `bench --backends fa3,flex`."""
        return {a: b.name for b in self.backends for a in b.aliases}
