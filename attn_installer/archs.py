"""Which GPU runs which compiled code: NVIDIA SM binary compatibility. Pure."""

from __future__ import annotations

__all__ = ["covered_by"]


def _sm_parts(arch: str) -> tuple[int, int]:
    digits = arch.split("_", 1)[1].rstrip("af")
    return int(digits[:-1]), int(digits[-1])


def covered_by(gpu_arch: str, archs: tuple[str, ...]) -> bool:
    """Whether a build with these archs runs on ``gpu_arch``: the same arch, an older minor of
    the same major (binary compatible: sm_86 code runs on sm_89), or older PTX (compute_XY)."""
    major, minor = _sm_parts(gpu_arch)
    for a in archs:
        if a.startswith("sm_"):
            am, an = _sm_parts(a)
            if am == major and an <= minor:
                return True
        elif a.startswith("compute_"):
            digits = a.split("_", 1)[1].rstrip("af")
            if (int(digits[:-1]), int(digits[-1])) <= (major, minor):
                return True
    return False
