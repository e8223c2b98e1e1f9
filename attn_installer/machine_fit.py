"""What this machine allows or blocks for every backend, before any backend's own rules: the archs
torch's build carries (CUDA archs, ROCm gfx targets), the driver against torch's CUDA, the SDPA
kernel a GPU gets. Pure, like attn_installer.resolve, which uses it."""

from __future__ import annotations

from typing import Optional

from packaging.version import InvalidVersion, Version

from attn_installer.archs import covered_by
from attn_installer.facts import Facts, Gpu
from attn_installer.matrix import Matrix

__all__ = ["machine_blockers", "nvidia_driver", "sdpa_kernel", "torch_archs", "torch_gfx", "torch_hint"]


# --------------------------------------------------------------------------- arch coverage


def torch_archs(facts: Facts, matrix: Matrix) -> tuple[tuple[str, ...], str]:
    """GPU archs the installed torch has kernels for, and where that knowledge came from."""
    t = facts.torch
    if t is None or t.cuda is None:
        return (), "none"
    if t.arch_list:
        return tuple(t.arch_list), "torch.cuda.get_arch_list()"
    cuda = Version(t.cuda)
    for row in matrix.torch_builds:
        if row.matches(t.release, cuda, facts.host.machine):
            return row.archs.archs, "matrices/torch.toml"
    return (), "unknown"


def torch_gfx(facts: Facts, matrix: Matrix) -> tuple[tuple[str, ...], str]:
    """AMD targets the installed ROCm torch has kernels for, and where that knowledge came from."""
    t = facts.torch
    if t is None or t.hip is None:
        return (), "none"
    if t.arch_list:
        return tuple(a.split(":")[0] for a in t.arch_list), "torch.cuda.get_arch_list()"
    local = Version(t.version).local or ""  # "rocm6.2.4" of 2.6.0+rocm6.2.4; torch.flavour is "rocm6.2"
    for row in matrix.rocm_builds:
        if not row.torch.contains(t.release, prereleases=True):
            continue
        if local in row.flavours or t.flavour in row.flavours \
                or any(f.startswith(t.flavour + ".") for f in row.flavours):
            return row.gfx, "matrices/torch.toml [[rocm_build]]"
    return (), "unknown"


def sdpa_kernel(g: Gpu, matrix: Matrix) -> Optional[str]:
    """The SDPA kernel torch runs on *g* (matrices/gpus.toml [[sdpa_kernel]], first matching row)."""
    for row in matrix.sdpa_kernels:
        if row.vendor != g.vendor:
            continue
        if row.otherwise or (g.sm is not None and not row.nvidia_sm.empty and row.nvidia_sm.contains(g.sm)) \
                or g.arch in row.amd_gfx:
            return row.kernel
    return None


def _min_driver(matrix: Matrix, cuda_major: int, os_name: str) -> Optional[Version]:
    for row in matrix.cuda_drivers:
        if row.cuda_major == cuda_major:
            return row.windows if os_name == "windows" else row.linux
    return None


def nvidia_driver(v: Version) -> str:
    """An NVIDIA driver version as NVIDIA writes it: 575.51.03, not packaging's 575.51.3."""
    r = v.release
    return f"{r[0]}.{r[1]:02d}.{r[2]:02d}" if len(r) == 3 else str(v)


def torch_hint(facts: Facts, matrix: Matrix, what: str) -> str:
    """'install <what>: `python -m pip install torch==X --index-url URL`', or why none fits."""
    from attn_installer.torchpick import TorchChoice, choose_torch  # noqa: PLC0415

    choice = choose_torch(facts, matrix)
    if isinstance(choice, TorchChoice):
        return f"install {what}: `{choice.command}`"
    return choice.text


def machine_blockers(facts: Facts, matrix: Matrix) -> tuple[list[str], list[str]]:
    """Problems that stop every install, and machine-level warnings."""
    blockers: list[str] = []
    warnings: list[str] = []
    t = facts.torch
    nvidia = [g for g in facts.gpus if g.vendor == "nvidia"]
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    exe = facts.python.executable or "this Python"
    if t is None:
        hint = torch_hint(facts, matrix, "the torch build for this machine")
        blockers.append(f"torch is not installed for {exe}: {hint} (or `attn-install torch --yes`; attn-install "
                        "never replaces a torch)")
        return blockers, warnings
    if facts.gpus and t.cuda is None and t.hip is None:
        blockers.append(f"torch {t.version} is a CPU-only build: it cannot use {facts.gpus[0].label}; "
                        + torch_hint(facts, matrix, "a build for this GPU (in a new environment)"))
    if nvidia and t.hip is not None and t.cuda is None:
        blockers.append(f"torch {t.version} is a ROCm build but {nvidia[0].label} is NVIDIA; "
                        + torch_hint(facts, matrix, "a CUDA build (in a new environment)"))
    if amd and t.cuda is not None and not nvidia:
        blockers.append(f"torch {t.version} is a CUDA build but {amd[0].label} is AMD; "
                        + torch_hint(facts, matrix, "a ROCm build (in a new environment)"))
    if nvidia and t.cuda is not None:
        _driver_blockers(facts, matrix, nvidia, blockers, warnings)
    if amd and t.hip is not None:
        _gfx_blockers(facts, matrix, amd, blockers, warnings)
    if len({g.arch for g in facts.gpus}) > 1:
        warnings.append("mixed GPUs: " + ", ".join(g.label for g in facts.gpus)
                        + "; the plan fits every visible GPU")
    return blockers, warnings


def _driver_blockers(facts: Facts, matrix: Matrix, nvidia: list[Gpu], blockers: list[str],
                     warnings: list[str]) -> None:
    t = facts.torch
    assert t is not None and t.cuda is not None
    cuda = Version(t.cuda)
    drv = facts.driver
    if drv is None:
        warnings.append("NVIDIA driver version unknown: cannot check it is new enough for "
                        f"torch {t.version} (CUDA {t.cuda})")
    else:
        need = _min_driver(matrix, cuda.major, facts.host.os)
        try:
            have: Optional[Version] = Version(drv.version)
        except InvalidVersion:
            have = None
        if need is not None and have is not None and have < need:
            blockers.append(
                f"NVIDIA driver {drv.version} is too old for torch {t.version}: CUDA {cuda.major}.x "
                f"needs driver >= {nvidia_driver(need)} (matrices/torch.toml); update the driver, or "
                + torch_hint(facts, matrix, "the torch built for this driver (in a new environment)"))
        elif drv.cuda is not None and Version(drv.cuda).major < cuda.major:
            blockers.append(
                f"the NVIDIA driver supports CUDA up to {drv.cuda} but torch {t.version} needs "
                f"CUDA {cuda.major}.x; update the driver, or "
                + torch_hint(facts, matrix, "the torch built for this driver (in a new environment)"))
    archs, origin = torch_archs(facts, matrix)
    if not archs:
        warnings.append(f"GPU archs of torch {t.version} unknown (not in matrices/torch.toml); "
                        "run `attn-install probe --torch-arch-list` to read them")
        return
    for g in nvidia:
        if not covered_by(g.arch, archs):
            blockers.append(
                f"torch {t.version} has no kernels for {g.label}: its build covers "
                f"{', '.join(archs)} ({origin}); {torch_hint(facts, matrix, 'the build that covers it')}"
                + (", or hide that GPU with CUDA_VISIBLE_DEVICES" if len(nvidia) > 1 else ""))


def _gfx_blockers(facts: Facts, matrix: Matrix, amd: list[Gpu], blockers: list[str], warnings: list[str]) -> None:
    t = facts.torch
    assert t is not None
    gfx, origin = torch_gfx(facts, matrix)
    if not gfx:
        warnings.append(f"AMD targets of torch {t.version} unknown (not in matrices/torch.toml [[rocm_build]]); "
                        "run `attn-install probe --torch-arch-list` to read them")
        return
    for g in amd:
        if g.arch not in gfx:
            blockers.append(
                f"torch {t.version} has no kernels for {g.label}: its build carries {', '.join(gfx)} ({origin}); "
                f"{torch_hint(facts, matrix, 'a build that carries it')}"
                + (", or hide that GPU with HIP_VISIBLE_DEVICES" if len(amd) > 1 else ""))
