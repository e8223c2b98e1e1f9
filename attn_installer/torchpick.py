"""The torch build that fits this machine (`attn-install torch`), from matrices/torch.toml. Pure.

The newest torch release whose build runs on every visible GPU (its arch list covers each GPU's
arch, or the ROCm build carries each gfx target), with this driver (CUDA 13 builds need a driver
>= 580, CUDA 12 ones >= 525.60.13, and no more than the CUDA major the driver reports) and this
Python (the release has wheels for it). Among the
flavours of that release, PyPI's default first, then the newest CUDA. No GPU: the CPU build.
attn-install never replaces an installed torch: this says which one to install where none is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from packaging.version import InvalidVersion, Version

from attn_installer.facts import Facts, Gpu
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import TorchRelease

__all__ = ["TorchChoice", "TorchProblem", "choose_torch", "flavour_cuda"]


@dataclass(frozen=True)
class TorchChoice:
    version: str
    flavour: str
    """cu126, cu130, rocm7.2, cpu."""
    index_url: str
    python: str
    reason: str

    @property
    def requirement(self) -> str:
        return f"torch=={self.version}"

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.python, "-m", "pip", "install", self.requirement, "--index-url", self.index_url)

    @property
    def command(self) -> str:
        from attn_installer.runner import format_argv  # noqa: PLC0415

        return format_argv(self.argv)


@dataclass(frozen=True)
class TorchProblem:
    """No torch build fits; the text says why and what to change (Python, driver, GPU)."""

    text: str


def flavour_cuda(flavour: str) -> Version:
    """cu126 -> 12.6, cu130 -> 13.0."""
    digits = flavour[2:]
    return Version(f"{digits[:-1]}.{digits[-1]}")


def _covered(gpu: Gpu, archs: tuple[str, ...]) -> bool:
    from attn_installer.resolve import covered_by  # noqa: PLC0415

    return covered_by(gpu.arch, archs)


def _cuda_archs(matrix: Matrix, rel: TorchRelease, flavour: str, machine: str) -> tuple[str, ...]:
    cuda = flavour_cuda(flavour)
    for row in matrix.torch_builds:
        if row.matches(rel.version, cuda, machine):
            return row.archs.archs
    return ()


def _min_driver(matrix: Matrix, major: int, os_name: str) -> Optional[Version]:
    for row in matrix.cuda_drivers:
        if row.cuda_major == major:
            return row.windows if os_name == "windows" else row.linux
    return None


def _flavour_order(rel: TorchRelease) -> list[str]:
    rest = sorted((f for f in rel.cuda if f != rel.default), key=flavour_cuda, reverse=True)
    return [rel.default, *rest] if rel.default in rel.cuda else rest


def choose_torch(facts: Facts, matrix: Matrix, index: Optional[str] = None) -> Union[TorchChoice, TorchProblem]:
    """*index*: a mirror's URL template with {flavour} instead of the matrix's."""
    if index:
        from dataclasses import replace  # noqa: PLC0415

        matrix = replace(matrix, torch_index_url=index)
    py = Version(facts.python.version)
    python = facts.python.executable or "python3"
    releases = sorted(matrix.torch_releases, key=lambda r: r.version, reverse=True)
    fits_py = [r for r in releases if r.python.contains(py, prereleases=True)]
    if not fits_py:
        spans = sorted({str(r.python) for r in releases})
        newest = releases[0] if releases else None
        want = f"torch {newest.version} needs Python {newest.python}" if newest else "no torch release is known"
        return TorchProblem(f"no torch release has wheels for Python {facts.python.version} "
                            f"({facts.python.executable}); {want}: use such a Python with --python "
                            f"(known ranges: {', '.join(spans)})")
    url = matrix.torch_index_url
    nvidia = [g for g in facts.gpus if g.vendor == "nvidia"]
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    if nvidia and amd:
        return TorchProblem("NVIDIA and AMD GPUs are both visible: one torch build cannot use both; hide one "
                            "vendor's GPUs (CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES) and run again")
    if not facts.gpus:
        rel = fits_py[0]
        return TorchChoice(str(rel.version), "cpu", url.format(flavour="cpu"), python,
                           f"no GPU is visible: the CPU build of the newest torch for Python {py}")
    if amd:
        return _rocm(facts, matrix, fits_py, amd, python)
    return _cuda(facts, matrix, fits_py, nvidia, python)


def _cuda(facts: Facts, matrix: Matrix, releases: list[TorchRelease], gpus: list[Gpu], python: str
          ) -> Union[TorchChoice, TorchProblem]:
    drv: Optional[Version] = None
    if facts.driver is not None:
        try:
            drv = Version(facts.driver.version)
        except InvalidVersion:
            drv = None
    top: Optional[Version] = None
    if facts.driver is not None and facts.driver.cuda:
        try:
            top = Version(facts.driver.cuda)
        except InvalidVersion:
            top = None
    why: list[str] = []
    for rel in releases:
        for flavour in _flavour_order(rel):
            cuda = flavour_cuda(flavour)
            need = _min_driver(matrix, cuda.major, facts.host.os)
            if drv is not None and need is not None and drv < need:
                why.append(f"{rel.version}+{flavour} needs driver >= {need}")
                continue
            if top is not None and cuda.major > top.major:
                why.append(f"{rel.version}+{flavour} needs CUDA {cuda.major}.x; the driver supports up to {top}")
                continue
            archs = _cuda_archs(matrix, rel, flavour, facts.host.machine)
            missing = [g for g in gpus if not _covered(g, archs)]
            if not archs or missing:
                if missing:
                    why.append(f"{rel.version}+{flavour} has no kernels for {missing[0].arch}")
                continue
            driver = f"driver {facts.driver.version}" if facts.driver else "driver unknown (not checked)"
            return TorchChoice(str(rel.version), flavour, matrix.torch_index_url.format(flavour=flavour), python,
                               f"the newest torch whose {flavour} build covers "
                               f"{', '.join(dict.fromkeys(g.arch for g in gpus))} and runs on {driver} "
                               f"with Python {facts.python.version}")
    drv_text = f"driver {facts.driver.version}" if facts.driver else "an unknown driver"
    return TorchProblem(f"no torch build known to attn-install runs on {', '.join(g.label for g in gpus)} with "
                        f"{drv_text} and Python {facts.python.version} ({'; '.join(why[:3])}); update the "
                        "NVIDIA driver (CUDA 13 builds need >= 580)")


def _rocm(facts: Facts, matrix: Matrix, releases: list[TorchRelease], gpus: list[Gpu], python: str
          ) -> Union[TorchChoice, TorchProblem]:
    for rel in releases:
        for flavour in sorted(rel.rocm, key=lambda f: Version(f[4:]), reverse=True):
            gfx = next((b.gfx for b in matrix.rocm_builds
                        if b.torch.contains(rel.version, prereleases=True) and flavour in b.flavours), ())
            if gfx and all(g.arch in gfx for g in gpus):
                archs = ", ".join(dict.fromkeys(g.arch for g in gpus))
                return TorchChoice(str(rel.version), flavour, matrix.torch_index_url.format(flavour=flavour), python,
                                   f"the newest torch whose {flavour} build carries {archs} for Python "
                                   f"{facts.python.version}")
    return TorchProblem(f"no ROCm build of torch known to attn-install carries {', '.join(g.label for g in gpus)} "
                        "(matrices/torch.toml [[rocm_build]]); AMD's own torch builds (repo.amd.com) may")
