"""The compatibility matrix: every fact about backends, wheels and builds, read from ``matrices/``.

One loader reads every file, turns rows into frozen dataclasses and collects *all* problems
(``file:line: [[backend]] 'sage': field 'torch': ...``) before raising one MatrixError.
No version table lives in Python code; versions are compared with ``packaging``.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from attn_installer.errors import MatrixError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9 / 3.10
    import tomli as tomllib

__all__ = [
    "MATRIX_FILES",
    "ArchSpec",
    "Backend",
    "Matrix",
    "default_matrix_dir",
    "load_matrix",
]

MATRIX_FILES = ("backends.toml", "torch.toml", "flash_attn_wheels.toml", "xformers.toml",
                "sources.toml", "axolotl.toml", "ranking.toml", "hints.toml")
METHODS = ("builtin", "installed", "wheel", "pypi", "source")
WORKLOADS = ("full", "lora", "inference")
_ARCH = re.compile(r"^sm_\d{2,3}$")
_GFX = re.compile(r"^gfx[0-9a-f]{3,4}$")


def default_matrix_dir() -> Path:
    """``attn_installer/matrices`` inside a wheel, else the repository's ``matrices/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "matrices"
    return packaged if packaged.is_dir() else here.parent / "matrices"


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
class Backend:
    name: str
    attn_implementation: str
    title: str
    vendor: str
    nvidia_sm: ArchSpec
    training_nvidia_sm: ArchSpec
    amd_gfx: tuple[str, ...]
    needs_gpu: bool
    os: tuple[str, ...]
    python: SpecifierSet
    torch: SpecifierSet
    min_torch_cuda: Optional[Version]
    workloads: tuple[str, ...]
    packing: bool
    distribution: str
    import_name: str
    methods: tuple[str, ...]
    runtime_env: Mapping[str, str]
    notes: str
    source: str
    kernels: Mapping[str, str] = field(default_factory=dict)
    """The kernel the backend's default entry point (the one axolotl calls) runs per arch."""
    verify_rel_tol: float = 0.02
    """Largest relative L2 error of the output against fp32 math SDPA that still passes: bf16 / fp16
    kernels land between 1e-3 and 1e-2; quantised ones (SageAttention's INT8 QK / FP8 PV) near 3e-2."""
    verify_min_cosine: float = 0.999


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
    archs: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class FlashAttnRelease:
    version: str
    torch: tuple[str, ...]
    cxx11abi_true: tuple[str, ...]
    cxx11abi_false: tuple[str, ...]
    python: tuple[str, ...]
    cuda_major: tuple[str, ...]
    machine: tuple[str, ...]
    glibc: Version
    built_with_cuda: str
    source: str
    sha256: Mapping[str, str]


@dataclass(frozen=True)
class XformersRelease:
    version: str
    torch: SpecifierSet
    flavours: tuple[str, ...]
    min_sm: int
    source: str


@dataclass(frozen=True)
class SourceBuild:
    backend: str
    repo: str
    ref: str
    subdir: str
    submodules: tuple[str, ...]
    min_nvcc: Mapping[str, Version]
    recommended_nvcc: Optional[Version]
    nvcc_must_match_torch_major: bool
    nvcc_threads: int
    env: Mapping[str, str]
    arch_env: Mapping[str, str]
    compile_units: int
    compile_units_trimmed: int
    compile_units_no_sm80: int
    unit_minutes: float
    source: str
    units_by_arch: Mapping[str, int] = field(default_factory=dict)
    """Compile units when they depend on the arch (extensions built only for some archs)."""
    extensions_by_arch: Mapping[str, int] = field(default_factory=dict)
    parallel_env: str = ""
    """Env var that builds that many extensions at once (SageAttention's EXT_PARALLEL)."""
    disk_gb: float = 0.0
    """Free disk the build needs where its source tree and the wheel cache live."""
    nvcc_threads_fixed: int = 0
    """The build passes --threads=N to nvcc itself (NVCC_THREADS is not read): each compile job then
    runs min(N, archs) threads, which the memory plan must count."""


@dataclass(frozen=True)
class BuildDefaults:
    gb_per_nvcc_thread: float
    memory_margin: float
    source: str


@dataclass(frozen=True)
class HostCompiler:
    """The GCC majors an nvcc release accepts as its host compiler."""
    nvcc: SpecifierSet
    max_gcc: int
    min_gcc: int
    source: str


@dataclass(frozen=True)
class Fa3Trims:
    hdim: Mapping[int, str]
    dtype: Mapping[str, str]
    when_trimmed: tuple[str, ...]
    no_sm80: str
    inference: str
    source: str


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
class RetiredFlag:
    """An attention switch that selects no backend of its own; a config merge deletes it."""

    flag: str
    axolotl: SpecifierSet
    source: str


@dataclass(frozen=True)
class RankRow:
    vendor: str
    nvidia_sm: ArchSpec
    order: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Hint:
    name: str
    pattern: re.Pattern[str]
    hint: str
    source: str


@dataclass(frozen=True)
class Matrix:
    backends: tuple[Backend, ...]
    cuda_drivers: tuple[CudaDriver, ...]
    torch_builds: tuple[TorchBuild, ...]
    flash_attn_url: str
    flash_attn_releases: tuple[FlashAttnRelease, ...]
    xformers_index_url: str
    xformers_releases: tuple[XformersRelease, ...]
    sources: tuple[SourceBuild, ...]
    build: BuildDefaults
    fa3_trims: Fa3Trims
    attn_impl_values: tuple[AttnImplValues, ...]
    legacy_flags: tuple[LegacyFlag, ...]
    retired_flags: tuple[RetiredFlag, ...]
    ranking: tuple[RankRow, ...]
    directory: Path
    hints: tuple[Hint, ...] = ()
    host_compilers: tuple[HostCompiler, ...] = ()

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def source_for(self, backend: str) -> Optional[SourceBuild]:
        return next((s for s in self.sources if s.backend == backend), None)

    def host_compiler_for(self, nvcc: Version) -> Optional[HostCompiler]:
        return next((h for h in self.host_compilers if h.nvcc.contains(nvcc)), None)

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    @property
    def attention_keys(self) -> tuple[str, ...]:
        """Every axolotl key that selects attention: attn_implementation and each boolean."""
        flags = [f.flag for f in self.legacy_flags] + [f.flag for f in self.retired_flags]
        return ("attn_implementation", *dict.fromkeys(flags))


# --------------------------------------------------------------------------- field checkers

Check = Callable[[Any], Any]


class _Bad(Exception):
    """A field value is wrong; the message says how."""


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"expected an integer, got {type(v).__name__}")
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"expected a number, got {type(v).__name__}")
    return float(v)


def _strs(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad("expected a list of strings")
    return tuple(v)


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise _Bad("expected a table of strings")
    return dict(v)


def _int_map(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                          for x in v.values()):
        raise _Bad("expected a table of positive integers")
    return dict(v)


def _regex(v: Any) -> re.Pattern[str]:
    try:
        return re.compile(_str(v), re.IGNORECASE)
    except re.error as e:
        raise _Bad(f"not a regular expression: {e}") from None


def _spec(v: Any) -> SpecifierSet:
    try:
        return SpecifierSet(_str(v))
    except InvalidSpecifier:
        raise _Bad(f"'{v}' is not a version specifier (like '>=2.4,<2.9')") from None


def _version(v: Any) -> Version:
    try:
        return Version(_str(v))
    except InvalidVersion:
        raise _Bad(f"'{v}' is not a version") from None


def _opt_version(v: Any) -> Optional[Version]:
    return None if v == "" else _version(v)


def _arch_spec(v: Any) -> ArchSpec:
    if isinstance(v, list):
        archs = _strs(v)
        bad = [a for a in archs if not _ARCH.match(a)]
        if bad:
            raise _Bad(f"unknown arch {bad[0]!r}, expected sm_XY")
        return ArchSpec(archs=archs, text=", ".join(archs))
    if v == "":
        return ArchSpec()
    return ArchSpec(spec=_spec(v), text=f"SM {v}")


def _gfx_list(v: Any) -> tuple[str, ...]:
    out = _strs(v)
    bad = [g for g in out if not _GFX.match(g)]
    if bad:
        raise _Bad(f"unknown AMD target {bad[0]!r}, expected gfxNNN")
    return out


def _subset(allowed: tuple[str, ...]) -> Check:
    def check(v: Any) -> tuple[str, ...]:
        out = _strs(v)
        bad = [x for x in out if x not in allowed]
        if bad:
            raise _Bad(f"{bad[0]!r} is not one of {', '.join(allowed)}")
        return out

    return check


def _one_of(allowed: tuple[str, ...]) -> Check:
    def check(v: Any) -> str:
        s = _str(v)
        if s not in allowed:
            raise _Bad(f"{s!r} is not one of {', '.join(allowed)}")
        return s

    return check


def _versions_map(v: Any) -> dict[str, Version]:
    out = {}
    for k, val in _str_map(v).items():
        if not _ARCH.match(k):
            raise _Bad(f"key {k!r} is not an arch like sm_90")
        out[k] = _version(val)
    return out


def _int_key_map(v: Any) -> dict[int, str]:
    m = _str_map(v)
    if not all(k.isdigit() for k in m):
        raise _Bad("keys must be head dims (numbers)")
    return {int(k): val for k, val in m.items()}


Field = tuple[Check, bool, Any]  # checker, required, default
_BACKEND: dict[str, Field] = {
    "name": (_str, True, None),
    "attn_implementation": (_str, True, None),
    "title": (_str, True, None),
    "vendor": (_one_of(("nvidia", "amd", "any")), True, None),
    "nvidia_sm": (_arch_spec, True, None),
    "training_nvidia_sm": (_arch_spec, False, ""),
    "amd_gfx": (_gfx_list, True, None),
    "needs_gpu": (_bool, True, None),
    "os": (_subset(("linux", "windows", "darwin")), True, None),
    "python": (_spec, True, None),
    "torch": (_spec, True, None),
    "min_torch_cuda": (_opt_version, True, None),
    "workloads": (_subset(WORKLOADS), True, None),
    "packing": (_bool, True, None),
    "distribution": (_str, True, None),
    "import_name": (_str, True, None),
    "methods": (_subset(METHODS), True, None),
    "runtime_env": (_str_map, False, {}),
    "notes": (_str, False, ""),
    "kernels": (_str_map, False, {}),
    "verify_rel_tol": (_float, False, 0.02), "verify_min_cosine": (_float, False, 0.999),
    "source": (_str, True, None),
}
_CUDA_DRIVER: dict[str, Field] = {
    "cuda_major": (_int, True, None), "linux": (_version, True, None),
    "windows": (_version, True, None), "source": (_str, True, None),
}
_TORCH_BUILD: dict[str, Field] = {
    "torch": (_spec, True, None), "cuda": (_spec, True, None),
    "archs": (_arch_spec, True, None), "source": (_str, True, None),
}
_FA_RELEASE: dict[str, Field] = {
    "version": (_version, True, None), "torch": (_strs, True, None),
    "cxx11abi_true": (_strs, True, None), "cxx11abi_false": (_strs, True, None),
    "python": (_strs, True, None), "cuda_major": (_strs, True, None),
    "machine": (_strs, True, None), "glibc": (_version, True, None),
    "built_with_cuda": (_str, True, None), "source": (_str, True, None),
    "sha256": (_str_map, False, {}),
}
_XF_RELEASE: dict[str, Field] = {
    "version": (_version, True, None), "torch": (_spec, True, None),
    "flavours": (_strs, True, None), "min_sm": (_int, True, None), "source": (_str, True, None),
}
_SOURCE: dict[str, Field] = {
    "backend": (_str, True, None), "repo": (_str, True, None), "ref": (_str, True, None),
    "subdir": (_str, True, None), "submodules": (_strs, True, None),
    "min_nvcc": (_versions_map, True, None), "recommended_nvcc": (_opt_version, True, None),
    "nvcc_must_match_torch_major": (_bool, True, None), "nvcc_threads": (_int, True, None),
    "env": (_str_map, True, None), "arch_env": (_str_map, True, None),
    "compile_units": (_int, True, None), "compile_units_trimmed": (_int, True, None),
    "compile_units_no_sm80": (_int, False, 0),
    "units_by_arch": (_int_map, False, {}), "extensions_by_arch": (_int_map, False, {}),
    "parallel_env": (_str, False, ""), "disk_gb": (_float, False, 0.0),
    "nvcc_threads_fixed": (_int, False, 0),
    "unit_minutes": (_float, True, None), "source": (_str, True, None),
}
_BUILD: dict[str, Field] = {
    "gb_per_nvcc_thread": (_float, True, None), "memory_margin": (_float, True, None),
    "source": (_str, True, None),
}
_HOST_COMPILER: dict[str, Field] = {
    "nvcc": (_spec, True, None), "max_gcc": (_int, True, None), "min_gcc": (_int, True, None),
    "source": (_str, True, None),
}
_TRIMS: dict[str, Field] = {
    "hdim": (_int_key_map, True, None), "dtype": (_str_map, True, None),
    "when_trimmed": (_strs, True, None), "no_sm80": (_str, True, None),
    "inference": (_str, True, None), "source": (_str, True, None),
}
_ATTN_VALUES: dict[str, Field] = {
    "axolotl": (_spec, True, None), "values": (_strs, True, None), "source": (_str, True, None),
}
_LEGACY: dict[str, Field] = {
    "attn_implementation": (_str, True, None), "flag": (_str, True, None),
    "axolotl": (_spec, True, None), "source": (_str, True, None),
}
_HINT: dict[str, Field] = {
    "name": (_str, True, None), "pattern": (_regex, True, None), "hint": (_str, True, None),
    "source": (_str, True, None),
}
_RETIRED: dict[str, Field] = {
    "flag": (_str, True, None), "axolotl": (_spec, True, None), "source": (_str, True, None),
}
_RANK: dict[str, Field] = {
    "vendor": (_one_of(("nvidia", "amd", "none")), True, None),
    "nvidia_sm": (_arch_spec, True, None), "order": (_strs, True, None), "source": (_str, True, None),
}


class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")


def _table_lines(text: str, table: str) -> list[int]:
    """Line numbers of each ``[[table]]`` header, in order (TOML keeps array order)."""
    pat = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]\s*(#.*)?$")
    return [i for i, line in enumerate(text.splitlines(), 1) if pat.match(line)]


def _single_line(text: str, table: str) -> int:
    pat = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]\s*(#.*)?$")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pat.match(line)), 1)


def _row(raw: Any, schema: Mapping[str, Field], where: str, errs: _Collector) -> Optional[dict[str, Any]]:
    if not isinstance(raw, dict):
        errs.add(where, "expected a table")
        return None
    out: dict[str, Any] = {}
    ok = True
    for key in raw:
        if key not in schema:
            hint = difflib.get_close_matches(key, list(schema), n=1)
            errs.add(where, f"unknown field '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            ok = False
    for key, (check, required, default) in schema.items():
        if key not in raw:
            if required:
                errs.add(where, f"field '{key}' is missing")
                ok = False
            else:
                out[key] = check(default) if default is not None else None
            continue
        try:
            out[key] = check(raw[key])
        except _Bad as e:
            errs.add(where, f"field '{key}': {e}")
            ok = False
    return out if ok else None


def _rows(data: Mapping[str, Any], table: str, schema: Mapping[str, Field], path: Path, text: str,
          errs: _Collector, label: Callable[[Mapping[str, Any]], str] = lambda r: "") -> list[dict[str, Any]]:
    items = data.get(table)
    if not isinstance(items, list) or not items:
        errs.add(f"{path}:1", f"no [[{table}]] rows")
        return []
    lines = _table_lines(text, table)
    out = []
    for i, raw in enumerate(items):
        line = lines[i] if i < len(lines) else 1
        name = label(raw) if isinstance(raw, dict) else ""
        where = f"{path}:{line}: [[{table}]] #{i + 1}" + (f" {name!r}" if name else "")
        row = _row(raw, schema, where, errs)
        if row is not None:
            out.append(row)
    return out


def _read(path: Path, errs: _Collector) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        errs.add(str(path), f"cannot read ({e.strerror})")
        return {}, ""
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        errs.add(str(path), f"not valid TOML: {e}")
        return {}, text


def load_matrix(directory: Optional[Path] = None) -> Matrix:
    """Load and validate every matrix file; raise MatrixError listing every bad row."""
    return _load_cached(Path(directory) if directory else default_matrix_dir())


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> Matrix:
    errs = _Collector()
    files = {name: _read(directory / name, errs) for name in MATRIX_FILES}

    def rows(fname: str, table: str, schema: Mapping[str, Field], key: str = "") -> list[dict[str, Any]]:
        data, text = files[fname]
        if not text:
            return []
        return _rows(data, table, schema, directory / fname, text, errs,
                     (lambda r: str(r.get(key, ""))) if key else (lambda r: ""))

    def single(fname: str, table: str, schema: Mapping[str, Field]) -> Optional[dict[str, Any]]:
        data, text = files[fname]
        if not text:
            return None
        line = _single_line(text, table)
        if table not in data:
            errs.add(f"{directory / fname}:1", f"no [{table}] table")
            return None
        return _row(data[table], schema, f"{directory / fname}:{line}: [{table}]", errs)

    def top_str(fname: str, key: str) -> str:
        data, text = files[fname]
        v = data.get(key)
        if text and not isinstance(v, str):
            errs.add(f"{directory / fname}:1", f"top-level '{key}' (a string) is missing")
        return v if isinstance(v, str) else ""

    backends = [Backend(**r) for r in rows("backends.toml", "backend", _BACKEND, "name")]
    names = [b.name for b in backends]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errs.add(str(directory / "backends.toml"), f"backend name {dup!r} is used twice")
    raw_backends = files["backends.toml"][0].get("backend")
    # names of every row, valid or not, so one bad row does not cascade into "unknown backend"
    known = {r["name"] for r in raw_backends if isinstance(r, dict) and isinstance(r.get("name"), str)} \
        if isinstance(raw_backends, list) else set(names)

    drivers = [CudaDriver(**r) for r in rows("torch.toml", "cuda_driver", _CUDA_DRIVER)]
    torch_builds = [TorchBuild(**{**r, "archs": r["archs"].archs})
                    for r in rows("torch.toml", "torch_build", _TORCH_BUILD)]
    fa_url = top_str("flash_attn_wheels.toml", "url")
    fa = [FlashAttnRelease(**{**r, "version": str(r["version"])})
          for r in rows("flash_attn_wheels.toml", "release", _FA_RELEASE, "version")]
    xf_url = top_str("xformers.toml", "index_url")
    xf = [XformersRelease(**{**r, "version": str(r["version"])})
          for r in rows("xformers.toml", "release", _XF_RELEASE, "version")]
    sources = []
    for r in rows("sources.toml", "source", _SOURCE, "backend"):
        if r["backend"] not in known:
            errs.add(str(directory / "sources.toml"), f"[[source]] names unknown backend {r['backend']!r}")
        sources.append(SourceBuild(**r))
    build = single("sources.toml", "build", _BUILD)
    trims = single("sources.toml", "fa3_trims", _TRIMS)
    host_compilers = [HostCompiler(**r) for r in rows("sources.toml", "host_compiler", _HOST_COMPILER)]
    attn_values = [AttnImplValues(**r) for r in rows("axolotl.toml", "attn_implementation", _ATTN_VALUES)]
    legacy = [LegacyFlag(**r) for r in rows("axolotl.toml", "legacy_flag", _LEGACY, "flag")]
    retired = [RetiredFlag(**r) for r in rows("axolotl.toml", "retired_flag", _RETIRED, "flag")]
    ranking = []
    for i, r in enumerate(rows("ranking.toml", "rank", _RANK)):
        unknown = [n for n in r["order"] if n not in known]
        if unknown and known:
            errs.add(str(directory / "ranking.toml"), f"[[rank]] #{i + 1} names unknown backend {unknown[0]!r}")
        ranking.append(RankRow(**r))
    hints = [Hint(**r) for r in rows("hints.toml", "hint", _HINT, "name")]
    for b in backends:
        if "source" in b.methods and not any(s.backend == b.name for s in sources):
            errs.add(str(directory / "backends.toml"),
                     f"backend {b.name!r} lists method 'source' but sources.toml has no [[source]] for it")
    if errs.errors:
        count = len(errs.errors)
        raise MatrixError(f"{count} problem{'s' if count > 1 else ''} in the matrix:\n  "
                          + "\n  ".join(errs.errors))
    assert build is not None and trims is not None
    return Matrix(
        backends=tuple(backends), cuda_drivers=tuple(drivers), torch_builds=tuple(torch_builds),
        flash_attn_url=fa_url, flash_attn_releases=tuple(fa), xformers_index_url=xf_url,
        xformers_releases=tuple(xf), sources=tuple(sources), build=BuildDefaults(**build),
        fa3_trims=Fa3Trims(**trims), attn_impl_values=tuple(attn_values),
        legacy_flags=tuple(legacy), retired_flags=tuple(retired), ranking=tuple(ranking), directory=directory,
        hints=tuple(hints), host_compilers=tuple(host_compilers),
    )


