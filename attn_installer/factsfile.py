"""Reading a facts file (``--facts``, from ``attn-install probe --json`` on another machine).

The file is data from elsewhere (a support ticket, another node): it is read bounded (a regular
file, at most 1 MB, UTF-8, no NaN / Infinity, bounded nesting), every field is checked against its
type and range, and every error names the file and the field in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

from packaging.version import InvalidVersion, Version

from attn_installer.checks import printable
from attn_installer.errors import FactsError
from attn_installer.facts import (
    _AMD_ARCH,
    _NVIDIA_ARCH,
    SCHEMA_VERSION,
    Driver,
    Facts,
    Gpu,
    Host,
    HubReach,
    PythonInfo,
    Toolkit,
    TorchInfo,
)
from attn_installer.files import ReadProblem, loads_json_strict, read_bounded

__all__ = ["MAX_BYTES", "Reader", "load_facts"]

_PACKAGE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,200}[A-Za-z0-9])?")

MAX_BYTES = 1 << 20
MAX_NUMBER = 1 << 40
MAX_STRING = 4096
MAX_ITEMS = 4096
"""GPUs, packages, sources or notes one facts file may list."""


def load_facts(path: Path) -> Facts:
    """Read a facts file written by ``attn-install probe --json``."""
    origin = str(path)
    try:
        text = read_bounded(path, limit=MAX_BYTES)
    except ReadProblem as e:
        raise FactsError(f"{origin}: {e}") from None
    if not text.strip():
        raise FactsError(f"{origin}: the file is empty; write it with `attn-install probe --json`")
    try:
        data = loads_json_strict(text)
    except ReadProblem as e:
        raise FactsError(f"{origin}: {e}") from None
    return Facts.from_dict(data, origin=origin)


class Reader:
    """Strict reader for the facts JSON; every error names the file and the field path."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, what: str) -> FactsError:
        return FactsError(f"{self.origin}: field '{where}': {what}")

    def obj(self, data: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected an object, got {_kind(data)}")
        return data

    def req(self, data: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in data:
            raise self.fail(f"{where}.{key}" if where else key, "missing")
        return data[key]

    def string(self, v: Any, where: str, *, optional: bool = False) -> Optional[str]:
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise self.fail(where, f"expected a string, got {_kind(v)}")
        if len(v) > MAX_STRING:
            raise self.fail(where, f"a string of {len(v)} characters; at most {MAX_STRING} are read")
        return printable(v)  # data from elsewhere: printed as what it is, never as terminal control

    def version(self, v: Any, where: str, *, optional: bool = False) -> Optional[str]:
        s = self.string(v, where, optional=optional)
        if s is None:
            return None
        try:
            Version(s)
        except InvalidVersion:
            raise self.fail(where, f"'{s}' is not a version") from None
        return s

    def boolean(self, v: Any, where: str, *, optional: bool = False) -> Optional[bool]:
        if v is None and optional:
            return None
        if not isinstance(v, bool):
            raise self.fail(where, f"expected true or false, got {_kind(v)}")
        return v

    def integer(self, v: Any, where: str, minimum: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(where, f"expected an integer, got {_kind(v)}")
        if v < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {v}")
        if v > MAX_NUMBER:
            raise self.fail(where, f"{v} is out of range")
        return v

    def number(self, v: Any, where: str, *, positive: bool) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(where, f"expected a number, got {_kind(v)}")
        if v < 0 or (positive and v == 0):
            raise self.fail(where, f"must be {'above' if positive else 'at least'} 0, got {v}")
        if v > MAX_NUMBER:
            raise self.fail(where, f"{v} is out of range")
        return float(v)

    def facts(self, data: Any) -> Facts:
        top = self.obj(data, "(top level)")
        sv = self.req(top, "schema_version", "")
        if isinstance(sv, bool) or not isinstance(sv, int):
            raise self.fail("schema_version", f"expected an integer, got {_kind(sv)}")
        if sv > SCHEMA_VERSION:
            raise self.fail(
                "schema_version",
                f"{sv} is newer than this attn-install understands ({SCHEMA_VERSION}); "
                "upgrade attn-install",
            )
        if sv != SCHEMA_VERSION:
            raise self.fail("schema_version", f"unsupported schema version {sv}")
        for key in ("host", "python", "gpus", "driver", "toolkit", "torch", "packages"):
            self.req(top, key, "")
        host = self.host(top["host"])
        python = self.python(top["python"])
        gpus = self.gpus(top["gpus"])
        driver = self.driver(top["driver"])
        toolkit = self.toolkit(top["toolkit"])
        torch = self.torch(top["torch"])
        packages = self.packages(top["packages"])
        sources = top.get("sources") or {}
        notes = top.get("notes") or []
        return Facts(
            host=host,
            python=python,
            gpus=gpus,
            driver=driver,
            toolkit=toolkit,
            torch=torch,
            packages=packages,
            sources={printable(str(k)): printable(str(v)) for k, v in self.items(self.obj(sources, "sources"),
                                                                                      "sources")},
            notes=tuple(printable(str(n)) for n in self.items(notes, "notes")) if isinstance(notes, list) else (),
            hub=self.hub(top.get("hub")),
            build_flags=self.build_flags(top.get("build_flags")),
        )

    def build_flags(self, data: Any) -> dict[str, dict[str, bool]]:
        if data is None:
            return {}
        out: dict[str, dict[str, bool]] = {}
        for dist, flags in self.obj(data, "build_flags").items():
            f = self.obj(flags, f"build_flags.{dist}")
            out[str(dist)] = {str(k): bool(self.boolean(v, f"build_flags.{dist}.{k}")) for k, v in f.items()}
        return out

    def hub(self, data: Any) -> Optional[HubReach]:
        if data is None:
            return None
        d = self.obj(data, "hub")
        endpoint = self.string(self.req(d, "endpoint", "hub"), "hub.endpoint")
        if not endpoint or not endpoint.startswith(("http://", "https://")):
            raise self.fail("hub.endpoint", f"'{endpoint}' is not an http(s) URL")
        reachable = self.boolean(self.req(d, "reachable", "hub"), "hub.reachable")
        detail = self.string(d.get("detail", ""), "hub.detail") or ""
        return HubReach(endpoint, bool(reachable), detail)

    def host(self, data: Any) -> Host:
        d = self.obj(data, "host")
        os_name = self.string(self.req(d, "os", "host"), "host.os")
        if os_name not in ("linux", "windows", "darwin"):
            raise self.fail("host.os", f"'{os_name}' is not one of linux, windows, darwin")
        assert os_name is not None
        flags = {}
        for key in ("colab", "kaggle", "wsl", "container"):
            flags[key] = bool(self.boolean(d.get(key, False), f"host.{key}"))
        glibc = self.version(d.get("glibc"), "host.glibc", optional=True)
        if glibc is not None and (Version(glibc).major != 2 or Version(glibc).minor > 99):
            raise self.fail("host.glibc", f"'{glibc}' is not a glibc version (2.17 ... 2.99)")
        return Host(
            os=os_name,
            machine=str(self.string(self.req(d, "machine", "host"), "host.machine")),
            cpu_count=self.integer(self.req(d, "cpu_count", "host"), "host.cpu_count", 1),
            memory_gb=self.number(self.req(d, "memory_gb", "host"), "host.memory_gb", positive=True),
            glibc=glibc,
            **flags,
        )

    def python(self, data: Any) -> PythonInfo:
        d = self.obj(data, "python")
        version = self.version(self.req(d, "version", "python"), "python.version")
        assert version is not None
        impl = self.string(d.get("implementation", "cpython"), "python.implementation")
        exe = self.string(d.get("executable"), "python.executable", optional=True)
        return PythonInfo(version=version, implementation=str(impl), executable=exe,
                          prefix=self.string(d.get("prefix"), "python.prefix", optional=True),
                          chosen=self.string(d.get("chosen"), "python.chosen", optional=True))

    def gpus(self, data: Any) -> tuple[Gpu, ...]:
        if not isinstance(data, list):
            raise self.fail("gpus", f"expected a list, got {_kind(data)}")
        out = []
        for i, item in enumerate(self.items(data, "gpus")):
            w = f"gpus[{i}]"
            d = self.obj(item, w)
            vendor = self.string(self.req(d, "vendor", w), f"{w}.vendor")
            if vendor not in ("nvidia", "amd"):
                raise self.fail(f"{w}.vendor", f"'{vendor}' is not nvidia or amd")
            arch = str(self.string(self.req(d, "arch", w), f"{w}.arch"))
            pattern = _NVIDIA_ARCH if vendor == "nvidia" else _AMD_ARCH
            if not pattern.match(arch):
                expected = "sm_XY (e.g. sm_90)" if vendor == "nvidia" else "gfxNNN (e.g. gfx942)"
                raise self.fail(f"{w}.arch", f"unknown arch '{arch}', expected {expected}")
            cc = self.version(d.get("compute_capability"), f"{w}.compute_capability", optional=True)
            out.append(
                Gpu(
                    index=self.integer(self.req(d, "index", w), f"{w}.index", 0),
                    vendor=str(vendor),
                    name=str(self.string(self.req(d, "name", w), f"{w}.name")),
                    arch=arch,
                    memory_gb=self.number(self.req(d, "memory_gb", w), f"{w}.memory_gb", positive=False),
                    compute_capability=cc,
                    uuid=self.string(d.get("uuid"), f"{w}.uuid", optional=True),
                    mig=bool(self.boolean(d.get("mig", False), f"{w}.mig")),
                )
            )
        return tuple(out)

    def driver(self, data: Any) -> Optional[Driver]:
        if data is None:
            return None
        d = self.obj(data, "driver")
        vendor = self.string(self.req(d, "vendor", "driver"), "driver.vendor")
        if vendor not in ("nvidia", "amd"):
            raise self.fail("driver.vendor", f"'{vendor}' is not nvidia or amd")
        version = self.version(self.req(d, "version", "driver"), "driver.version")
        assert vendor is not None and version is not None
        return Driver(
            vendor=vendor,
            version=version,
            cuda=self.version(d.get("cuda"), "driver.cuda", optional=True),
            rocm=self.version(d.get("rocm"), "driver.rocm", optional=True),
        )

    def toolkit(self, data: Any) -> Toolkit:
        d = self.obj(data, "toolkit")
        return Toolkit(
            nvcc=self.version(d.get("nvcc"), "toolkit.nvcc", optional=True),
            cuda_home=self.string(d.get("cuda_home"), "toolkit.cuda_home", optional=True),
            hipcc=self.string(d.get("hipcc"), "toolkit.hipcc", optional=True),
            rocm=self.version(d.get("rocm"), "toolkit.rocm", optional=True),
            gcc=self.version(d.get("gcc"), "toolkit.gcc", optional=True),
            ninja=self.string(d.get("ninja"), "toolkit.ninja", optional=True),
        )

    def torch(self, data: Any) -> Optional[TorchInfo]:
        if data is None:
            return None
        d = self.obj(data, "torch")
        for key in ("version", "cuda", "hip", "cxx11abi"):
            self.req(d, key, "torch")
        version = self.version(d["version"], "torch.version")
        assert version is not None
        arch_list = d.get("arch_list")
        if arch_list is not None:
            if not isinstance(arch_list, list) or not all(isinstance(a, str) for a in arch_list):
                raise self.fail("torch.arch_list", "expected a list of strings or null")
            arch_list = tuple(arch_list)
        hip = self.string(d["hip"], "torch.hip", optional=True)
        if hip is not None:
            try:
                Version(hip.split("-")[0])
            except InvalidVersion:
                raise self.fail("torch.hip", f"'{hip}' is not a version") from None
        return TorchInfo(
            version=version,
            cuda=self.version(d["cuda"], "torch.cuda", optional=True),
            hip=hip,
            cxx11abi=self.boolean(d["cxx11abi"], "torch.cxx11abi", optional=True),
            arch_list=arch_list,
        )

    def items(self, data: Any, where: str) -> Any:
        """A list or object of at most MAX_ITEMS entries (its items for an object)."""
        if isinstance(data, (list, dict)) and len(data) > MAX_ITEMS:
            raise self.fail(where, f"{len(data)} entries; at most {MAX_ITEMS} are read")
        return data.items() if isinstance(data, dict) else data

    def packages(self, data: Any) -> dict[str, str]:
        d = self.obj(data, "packages")
        out = {}
        for k, v in self.items(d, "packages"):
            name = printable(str(k))
            if not _PACKAGE.fullmatch(name):
                raise self.fail(f"packages.{name}", "is not a distribution name")
            out[name] = str(self.version(v, f"packages.{name}"))
        return out


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(v), type(v).__name__)
