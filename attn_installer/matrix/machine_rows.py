"""The machine side of the matrix (matrices/torch.toml, gpus.toml, gpu_peaks.toml): arch specs,
torch builds and releases, driver floors, ROCm builds, NVIDIA compute capabilities by GPU name,
SDPA kernels per GPU and the GPUs' dense peaks. Plain frozen dataclasses; :mod:`attn_installer.matrix`
loads and validates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = ["ArchSpec", "CudaDriver", "GpuCapability", "GpuPeak", "RocmBuild", "SdpaKernel", "TorchBuild",
           "TorchRelease", "gpu_name_key"]


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
