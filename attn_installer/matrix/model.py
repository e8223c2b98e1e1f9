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

from attn_installer.matrix.machine_rows import (  # re-exported: the loader reads m.<Row>
    ArchSpec,
    CudaDriver,
    GpuCapability,
    GpuPeak,
    RocmBuild,
    SdpaKernel,
    TorchBuild,
    TorchRelease,
    gpu_name_key,
)
from attn_installer.matrix.route_rows import (  # re-exported: the loader reads m.<Row>
    BuildDefaults,
    EnvIf,
    Fa3Trims,
    FarmWheel,
    FlashAttnRelease,
    HostCompiler,
    HubFallback,
    HubKernel,
    HubPaths,
    IndexWheel,
    Prepare,
    SourceBuild,
)

__all__ = [
    "ArchSpec", "Backend", "BuildDefaults", "CallSpec", "CudaDriver", "Explain", "Fa3Trims", "FlashAttnRelease",
    "Hint", "HostCompiler", "LegacyFlag", "Matrix", "Prepare", "RankRow", "RetiredFlag", "RouteKindRow",
    "SourceBuild", "TorchBuild", "AttnImplValues", "IndexWheel", "FarmWheel", "AxolotlKeys", "EnvIf", "TorchRelease",
    "RocmBuild", "GpuCapability", "GpuPeak", "SdpaKernel", "gpu_name_key", "HubKernel", "HubFallback", "HubPaths",
    "RunTimeSwap", "ModelRule",
]


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
    packing_note: str = ""
    """What axolotl does with sample_packing for a backend without a varlen path (said with the reason)."""
    build_flags_file: str = ""
    """A module its wheel leaves on the import path with the build's flags (FA3's flash_attn_config.py:
    which head dims, soft-capping, varlen, backward it was compiled with); the probe reads it."""


@dataclass(frozen=True)
class ModelRule:
    """What a backend does with a model's attention when transformers / axolotl call it
    (backends.toml [[model_rule]]): the head dims it takes, and whether it honours a sliding window
    and attention logit soft-capping or drops them. A row with ``nvidia_sm`` applies on those GPUs
    instead of the backend's general row."""

    backend: str
    source: str
    max_head_dim: int = 0
    """Largest Q/K and V head dim (0: no limit)."""
    different_v_head_dim: bool = True
    """A V head dim other than Q/K's (MLA: DeepSeek's 192 / 128) works."""
    head_dim_pairs: tuple[str, ...] = ()
    """Q/K / V pairs ("192/128") that work even where the two rules above say no."""
    softcap: bool = False
    """Honours ``attn_logit_softcapping`` (False: it is dropped, silently or not)."""
    softcap_max_head_dim: int = 0
    """Soft-capping only up to this head dim (0: every head dim it takes)."""
    sliding_window: bool = False
    """Honours a sliding window."""
    nvidia_sm: ArchSpec = field(default_factory=ArchSpec)
    """The GPUs this row is for (empty: the backend's general row)."""

    def head_dims_fit(self, d: int, dv: int) -> bool:
        if f"{d}/{dv}" in self.head_dim_pairs:
            return True
        if self.max_head_dim and max(d, dv) > self.max_head_dim:
            return False
        return d == dv or self.different_v_head_dim


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
    legacy_priority: tuple[str, ...] = ()
    """Which legacy boolean wins when a config sets several (axolotl >= 0.17 maps them in this order)."""
    legacy_priority_source: str = ""


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
    model_rules: tuple[ModelRule, ...] = ()

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def model_rule(self, backend: str, sm: Optional[int] = None) -> Optional[ModelRule]:
        """The model rule of *backend* for a GPU of SM *sm* (its row for that SM, else its general
        row); None when the matrix has none."""
        rows = [r for r in self.model_rules if r.backend == backend]
        if sm is not None:
            own = next((r for r in rows if not r.nvidia_sm.empty and r.nvidia_sm.contains(sm)), None)
            if own is not None:
                return own
        return next((r for r in rows if r.nvidia_sm.empty), None)

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
