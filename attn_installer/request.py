"""What the user asked for, as the input shared by resolve, plan and bench.

``Request`` is what to decide (workload, backend, build trims, measured speeds); ``Target`` is where
the steps will run (the interpreter, pip or uv, a wheelhouse, the cache). Both are frozen and are
checked once, when they are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from packaging.version import InvalidVersion, Version

from attn_installer.errors import UsageError
from attn_installer.words import ROUTE_KINDS, WORKLOADS, Workload, is_arch

__all__ = ["MeasuredSpeed", "Request", "Target"]


@dataclass(frozen=True)
class MeasuredSpeed:
    """One backend's measured time on this machine (from `attn-install bench`), as plan input."""

    backend: str
    ms: float
    metric: str
    """fwd+bwd (full, lora) or fwd (inference)."""
    where: str = ""
    """GPU, dtype and shape it was measured at, for the reason text."""


MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class Request:
    """What to decide."""

    workload: Workload = "full"
    backend: Optional[str] = None
    """Plan for this backend only (--backend); its source build is allowed."""
    allow_source: bool = False
    head_dims: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    target_archs: tuple[str, ...] = ()
    """Build for these archs instead of the GPUs present (--target-arch, for build hosts)."""
    axolotl_version: Optional[str] = None
    measured: tuple[MeasuredSpeed, ...] = ()
    """Measured speeds (`plan --measured`): viable measured backends rank first, fastest first."""
    source_dir: Optional[str] = None
    """A checkout the user already has (--source) for ``backend``; no git clone."""
    source_digest: Optional[str] = None
    """A digest of that checkout's files: it joins the build key (read before planning)."""
    route: Optional[str] = None
    """Only this route kind (--route: torch_index, wheel_farm, source, ...)."""
    no_source: bool = False
    """Never a source build (--no-source)."""

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise UsageError(f"unknown workload {self.workload!r}: use full, lora or inference")
        if self.axolotl_version is not None:
            try:
                Version(self.axolotl_version)
            except InvalidVersion:
                raise UsageError(f"--axolotl-version: '{self.axolotl_version}' is not a version") from None
        for arch in self.target_archs:
            if not is_arch(arch):
                raise UsageError(f"--target-arch: '{arch}' is not an arch like sm_90 or gfx942")
        for hd in self.head_dims:
            if not 8 <= hd <= MAX_HEAD_DIM:
                raise UsageError(f"--head-dim {hd}: head dims from 8 to {MAX_HEAD_DIM} (the largest FlashAttention "
                                 "kernel) are built for")
        if self.route is not None and self.route not in ROUTE_KINDS:
            raise UsageError(f"--route: '{self.route}' is not one of {', '.join(ROUTE_KINDS)}")
        if self.route == "source" and self.no_source:
            raise UsageError("--route source and --no-source disagree: give one")


@dataclass(frozen=True)
class Target:
    """Where the plan's steps run."""

    cache_dir: str = "~/.cache/attn-install"
    python: Optional[str] = None
    """The interpreter steps run with; the probed one (facts.python.executable) when None."""
    installer: str = "pip"
    """pip or uv (``uv pip install --python``)."""
    wheelhouse: Optional[str] = None
    """Install only from this folder of wheels (--wheelhouse / --offline)."""
    torch_index: Optional[str] = None
    """The PyTorch index to use instead of download.pytorch.org (a mirror): a URL template with
    {flavour} (--pytorch-index / ATTN_INSTALL_PYTORCH_INDEX)."""
