"""Machine facts: frozen dataclasses and their JSON form (``facts.schema.json``, schema_version 1).

Unknown is ``None``, never guessed. ``from_dict`` validates strictly and raises
:class:`FactsError` naming the field, so a bad ``--facts`` file gets one clear line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from packaging.version import Version

__all__ = [
    "SCHEMA_VERSION",
    "Driver",
    "Facts",
    "Gpu",
    "Host",
    "PythonInfo",
    "Toolkit",
    "TorchInfo",
    "load_facts",
]

SCHEMA_VERSION = 1

_NVIDIA_ARCH = re.compile(r"^sm_(\d{2,3})[af]?$")
_AMD_ARCH = re.compile(r"^gfx[0-9a-f]{3,4}$")


@dataclass(frozen=True)
class Host:
    os: str
    """linux, windows or darwin."""
    machine: str
    """platform.machine(): x86_64, aarch64, AMD64, arm64."""
    cpu_count: int
    """CPUs this process may use (affinity and cgroup quota)."""
    memory_gb: float
    """GiB this process may use: min(physical, cgroup limit)."""
    glibc: Optional[str] = None
    colab: bool = False
    kaggle: bool = False
    wsl: bool = False
    container: bool = False


@dataclass(frozen=True)
class PythonInfo:
    version: str
    implementation: str = "cpython"
    executable: Optional[str] = None
    """The interpreter whose environment is probed and would be installed into."""
    prefix: Optional[str] = None
    """Its sys.prefix: two interpreters are one environment only when their prefixes are equal."""
    chosen: Optional[str] = None
    """Why this interpreter (--python, the active environment, python3 on PATH with torch, ...)."""

    @property
    def cp_tag(self) -> str:
        v = Version(self.version)
        return f"cp{v.major}{v.minor}"


@dataclass(frozen=True)
class Gpu:
    index: int
    vendor: str
    name: str
    arch: str
    memory_gb: float
    compute_capability: Optional[str] = None
    uuid: Optional[str] = None
    mig: bool = False

    @property
    def sm(self) -> Optional[int]:
        """The NVIDIA SM number (90 for sm_90); None for AMD."""
        m = _NVIDIA_ARCH.match(self.arch)
        return int(m.group(1)) if m else None

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name}, {self.arch})"


@dataclass(frozen=True)
class Driver:
    vendor: str
    version: str
    cuda: Optional[str] = None
    rocm: Optional[str] = None


@dataclass(frozen=True)
class Toolkit:
    nvcc: Optional[str] = None
    cuda_home: Optional[str] = None
    hipcc: Optional[str] = None
    rocm: Optional[str] = None
    gcc: Optional[str] = None
    ninja: Optional[str] = None


@dataclass(frozen=True)
class TorchInfo:
    version: str
    cuda: Optional[str]
    hip: Optional[str]
    cxx11abi: Optional[bool]
    arch_list: Optional[tuple[str, ...]] = None

    @property
    def release(self) -> Version:
        """The public version without its local tag (2.8.0 for 2.8.0+cu128)."""
        return Version(Version(self.version).public)

    @property
    def major_minor(self) -> str:
        r = self.release
        return f"{r.major}.{r.minor}"

    @property
    def flavour(self) -> str:
        """cu128, rocm6.3 or cpu: which build of torch this is."""
        if self.cuda:
            return "cu" + self.cuda.replace(".", "")
        if self.hip:
            hv = Version(self.hip.split("-")[0])
            return f"rocm{hv.major}.{hv.minor}"
        return "cpu"


@dataclass(frozen=True)
class HubReach:
    """Whether the Hugging Face Hub answered (probe/hub.py), where transformers could fetch from it."""

    endpoint: str
    reachable: bool
    detail: str


@dataclass(frozen=True)
class Facts:
    host: Host
    python: PythonInfo
    gpus: tuple[Gpu, ...] = ()
    driver: Optional[Driver] = None
    toolkit: Toolkit = field(default_factory=Toolkit)
    torch: Optional[TorchInfo] = None
    packages: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    """Which source gave each fact (``gpus`` -> ``nvml``), for support tickets."""
    notes: tuple[str, ...] = ()
    """What the probe could not read, and why."""
    hub: Optional[HubReach] = None
    """Asked only where transformers >= 5 and kernels are installed (see probe/hub.py)."""
    build_flags: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    """distribution -> the flags its installed build was made with, read from the module the build
    leaves (FA3's flash_attn_config.py: {"FLASHATTENTION_DISABLE_HDIM256": true, ...})."""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        h = self.host
        return {
            "schema_version": self.schema_version,
            "host": {
                "os": h.os,
                "machine": h.machine,
                "glibc": h.glibc,
                "cpu_count": h.cpu_count,
                "memory_gb": h.memory_gb,
                "colab": h.colab,
                "kaggle": h.kaggle,
                "wsl": h.wsl,
                "container": h.container,
            },
            "python": {
                "version": self.python.version,
                "implementation": self.python.implementation,
                "executable": self.python.executable,
                "prefix": self.python.prefix,
                "chosen": self.python.chosen,
            },
            "gpus": [
                {
                    "index": g.index,
                    "vendor": g.vendor,
                    "name": g.name,
                    "arch": g.arch,
                    "compute_capability": g.compute_capability,
                    "memory_gb": g.memory_gb,
                    "uuid": g.uuid,
                    "mig": g.mig,
                }
                for g in self.gpus
            ],
            "driver": None
            if self.driver is None
            else {
                "vendor": self.driver.vendor,
                "version": self.driver.version,
                "cuda": self.driver.cuda,
                "rocm": self.driver.rocm,
            },
            "toolkit": {
                "nvcc": self.toolkit.nvcc,
                "cuda_home": self.toolkit.cuda_home,
                "hipcc": self.toolkit.hipcc,
                "rocm": self.toolkit.rocm,
                "gcc": self.toolkit.gcc,
                "ninja": self.toolkit.ninja,
            },
            "torch": None
            if self.torch is None
            else {
                "version": self.torch.version,
                "cuda": self.torch.cuda,
                "hip": self.torch.hip,
                "cxx11abi": self.torch.cxx11abi,
                "arch_list": None
                if self.torch.arch_list is None
                else list(self.torch.arch_list),
            },
            "packages": dict(sorted(self.packages.items())),
            "sources": dict(sorted(self.sources.items())),
            "notes": list(self.notes),
            **({"hub": {"endpoint": self.hub.endpoint, "reachable": self.hub.reachable, "detail": self.hub.detail}}
               if self.hub is not None else {}),
            **({"build_flags": {d: dict(sorted(f.items())) for d, f in sorted(self.build_flags.items())}}
               if self.build_flags else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "facts") -> Facts:
        """Build facts from their JSON form; raise FactsError naming ``origin`` and the field."""
        from attn_installer.factsfile import Reader  # noqa: PLC0415

        return Reader(origin).facts(data)


def load_facts(path: Path) -> Facts:
    """Read a facts file written by ``attn-install probe --json``."""
    from attn_installer.factsfile import load_facts as load  # noqa: PLC0415

    return load(path)
