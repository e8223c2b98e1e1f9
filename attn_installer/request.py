"""What the user asked for, as the input shared by resolve, plan and bench.

``Request`` is what to decide (workload, backend, build trims, measured speeds); ``Target`` is where
the steps will run (the interpreter, pip or uv, a wheelhouse, the cache). Both are frozen and are
checked once, when they are made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional

from packaging.version import InvalidVersion, Version

from attn_installer.errors import UsageError
from attn_installer.words import ROUTE_KINDS, WORKLOADS, Workload, is_arch

if TYPE_CHECKING:
    from attn_installer.modelconfig import ModelAttention

__all__ = ["DEFAULT_SWITCH_MARGIN", "MeasuredSpeed", "Request", "Target", "Training"]

DEFAULT_SWITCH_MARGIN = 0.10
"""A measured backend replaces the user's choice only when it is more than this much faster."""


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
class Training:
    """What the user's training config (an axolotl YAML, `--axolotl-config` / `--merge`) and the
    model it trains ask of the plan."""

    source: str = ""
    """The axolotl config it was read from ('' when only a model config was given)."""
    packing: bool = False
    """``sample_packing: true``: only backends with a varlen (packed) path are eligible."""
    allow_no_packing: bool = False
    """When no backend with a varlen path fits, plan without packing (the merge turns it off)."""
    model: Optional[ModelAttention] = None
    """The model's attention (its config.json): head dims, heads, sliding window, soft-capping."""
    sequence_len: Optional[int] = None
    choice: Optional[str] = None
    """The attention the file selects (an attn_implementation value, a hub kernel path, or what a
    legacy boolean maps to); None when it selects none."""
    choice_from: str = ""
    """The line(s) that select it, for the reasons ("flash_attention: true")."""
    prefer_recommended: bool = False
    """Replace the user's choice with the plan's (--prefer-recommended)."""
    margin: float = DEFAULT_SWITCH_MARGIN
    verified: Mapping[str, str] = field(default_factory=dict)
    """backend -> the verification record of its installed build on this GPU ("passed", "failed: ...")."""
    packing_off: str = ""
    """Set by the plan: why packing was turned off (no varlen backend fits, --allow-no-packing)."""
    packing_blocked: str = ""
    """Set by the plan: why packing cannot stay and may not be turned off."""

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 10:
            raise UsageError(f"--switch-margin: {self.margin * 100:g}% is not between 0 and 1000")


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
    training: Optional[Training] = None
    """The user's training config and model (--axolotl-config, --merge, --model-config)."""

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
