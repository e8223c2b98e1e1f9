"""Closed vocabularies shared by every stage, as Literal types with their values listed once.

The JSON forms (facts, plan, report) use exactly these strings.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

__all__ = [
    "AMD_ARCH",
    "INSTALLERS",
    "METHODS",
    "NVIDIA_ARCH",
    "ROUTE_KINDS",
    "ROUTE_METHOD",
    "STEP_KINDS",
    "WORKLOADS",
    "Installer",
    "Method",
    "RouteKind",
    "StepKind",
    "Vendor",
    "VerifyStatus",
    "Workload",
    "is_arch",
]

Vendor = Literal["nvidia", "amd"]
Workload = Literal["full", "lora", "inference"]
Method = Literal["builtin", "installed", "wheel", "pypi", "source"]
"""How a backend is obtained, as plan.schema.json names it."""
RouteKind = Literal["builtin", "installed", "release_asset", "torch_index", "pypi", "wheel_farm",
                    "hub_kernel", "source"]
"""Where a backend's binary comes from (matrices/routes.toml); each maps to one Method."""
StepKind = Literal["fetch", "prepare", "build", "download", "install", "command"]
Installer = Literal["pip", "uv"]
VerifyStatus = Literal["passed", "failed", "skipped"]

WORKLOADS: Final = get_args(Workload)
METHODS: Final = get_args(Method)
ROUTE_KINDS: Final = get_args(RouteKind)
STEP_KINDS: Final = get_args(StepKind)
INSTALLERS: Final = get_args(Installer)

ROUTE_METHOD: Final[dict[str, Method]] = {
    "builtin": "builtin", "installed": "installed", "release_asset": "wheel", "wheel_farm": "wheel",
    "hub_kernel": "wheel", "torch_index": "pypi", "pypi": "pypi", "source": "source",
}
"""A route's method in the plan contract: every prebuilt binary is a "wheel", an index is "pypi"."""

NVIDIA_ARCH: Final = re.compile(r"^sm_(\d{2,3})[af]?$")
AMD_ARCH: Final = re.compile(r"^gfx[0-9a-f]{3,4}$")


_TARGET_ARCH: Final = re.compile(r"^(sm_\d{2,3}|gfx[0-9a-f]{3,4})$")


def is_arch(text: str) -> bool:
    """A build target a user may name (--target-arch): sm_90 or gfx942 (no arch-specific suffix)."""
    return bool(_TARGET_ARCH.match(text))
