"""The compatibility matrix: every fact about backends, wheels and builds, read from ``matrices/``.

One loader reads every file, turns rows into the frozen dataclasses of :mod:`.model` and collects
*all* problems (``file:line: [[backend]] #3 'sage': field 'torch': ...``) before raising one
MatrixError. Which fields a row must have and their defaults come from those dataclasses; each
value is checked against its field's type (plus the rules below: vendors, arch names, templates).
No version table lives in Python code; versions are compared with ``packaging``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from attn_installer import checks as c
from attn_installer.errors import MatrixError
from attn_installer.files import ReadProblem, read_bounded
from attn_installer.matrix import model as m
from attn_installer.matrix.model import ArchSpec, Backend, Matrix
from attn_installer.words import ROUTE_KINDS, WORKLOADS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9 / 3.10
    import tomli as tomllib

__all__ = ["MATRIX_FILES", "ArchSpec", "Backend", "Matrix", "default_matrix_dir", "load_matrix"]

MATRIX_FILES = ("backends.toml", "torch.toml", "flash_attn_wheels.toml", "sources.toml", "axolotl.toml",
                "ranking.toml", "hints.toml", "routes.toml", "gpus.toml", "gpu_peaks.toml")
MAX_FILE_BYTES = 1 << 20
_ARCH = re.compile(r"^sm_\d{2,3}$")
_GFX = re.compile(r"^gfx[0-9a-f]{3,4}$")
CONVENTIONS = ("sdpa", "eager", "flex", "xformers", "flash", "sage")


def default_matrix_dir() -> Path:
    """``attn_installer/matrices`` inside a wheel, else the repository's ``matrices/``."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "matrices"
    return packaged if packaged.is_dir() else here.parent / "matrices"


# --------------------------------------------------------------------------- checkers by type


def _arch_spec(v: Any) -> ArchSpec:
    if isinstance(v, list):
        archs = c.strings(v)
        bad = [a for a in archs if not _ARCH.match(a)]
        if bad:
            raise c.Bad(f"unknown arch {bad[0]!r}, expected sm_XY")
        return ArchSpec(archs=archs, text=", ".join(archs))
    if v == "":
        return ArchSpec()
    return ArchSpec(spec=c.spec(v), text=f"SM {v}")


def _gfx_list(v: Any) -> tuple[str, ...]:
    out = c.strings(v)
    bad = [g for g in out if not _GFX.match(g)]
    if bad:
        raise c.Bad(f"unknown AMD target {bad[0]!r}, expected gfxNNN")
    return out


def _compute_capability(v: Any) -> str:
    s = c.string_(v)
    if not re.fullmatch(r"\d{1,2}\.\d", s):
        raise c.Bad(f"{s!r} is not a compute capability like 8.6")
    return s


def _nonempty(v: tuple[str, ...]) -> tuple[str, ...]:
    if not v or not all(x.strip() for x in v):
        raise c.Bad("expected a non-empty list of names")
    return v


def _versions_map(v: Any) -> dict[str, Any]:
    out = {}
    for k, val in c.str_map(v).items():
        if not _ARCH.match(k):
            raise c.Bad(f"key {k!r} is not an arch like sm_90")
        out[k] = c.version(val)
    return out


_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _hub_repo(v: Any) -> str:
    out = c.string_(v)
    if not _HUB_REPO.match(out):
        raise c.Bad(f"{out!r} is not a Hub repository id like org/name")
    return out


def _sm_list(v: Any) -> tuple[str, ...]:
    out = c.strings(v)
    bad = [a for a in out if not _ARCH.match(a)]
    if bad:
        raise c.Bad(f"{bad[0]!r} is not an arch like sm_90")
    return out


def _torch_python_pairs(v: Any) -> tuple[str, ...]:
    out = c.strings(v)
    bad = [x for x in out if not re.fullmatch(r"\d+\.\d+:\d+\.\d+", x)]
    if bad:
        raise c.Bad(f"{bad[0]!r} is not a torch:python pair like 2.4:3.13")
    return out


def _spec_map(v: Any) -> dict[str, Any]:
    out = {}
    for k, val in c.str_map(v).items():
        out[_hub_repo(k)] = c.spec(val)
    return out


def _digit_keys(v: Any) -> dict[str, str]:
    out = c.str_map(v)
    if not all(k.isdigit() for k in out):
        raise c.Bad("keys must be head dims (numbers)")
    return out


def _flavours(v: Any, kind: str) -> tuple[str, ...]:
    out = c.strings(v)
    pat = re.compile(r"^cu\d{3}$" if kind == "cu" else r"^rocm\d+\.\d+(\.\d+)?$")
    bad = [x for x in out if not pat.match(x)]
    if bad:
        raise c.Bad(f"{bad[0]!r} is not a {'CUDA' if kind == 'cu' else 'ROCm'} flavour like "
                    + ("cu126" if kind == "cu" else "rocm7.2"))
    return out


def _any_map(v: Any) -> dict[str, object]:
    if not isinstance(v, dict):
        raise c.Bad("expected a table")
    return dict(v)


def _rows_of(cls: type, where_checks: Optional[Mapping[str, c.Check]] = None) -> c.Check:
    def check(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise c.Bad("expected a list of tables")
        out = []
        for i, item in enumerate(v):
            errs = c.Collector()
            row = _row(item, cls, f"#{i + 1}", errs, where_checks or {})
            if row is None:
                raise c.Bad("; ".join(errs.errors))
            out.append(row)
        return tuple(out)

    return check


def _table_of(cls: type, where_checks: Optional[Mapping[str, c.Check]] = None) -> c.Check:
    def check(v: Any) -> Any:
        errs = c.Collector()
        row = _row(v, cls, "", errs, where_checks or {})
        if row is None:
            raise c.Bad("; ".join(e.lstrip(": ") for e in errs.errors))
        return row

    return check


def _head_dim_pairs(v: Any) -> tuple[str, ...]:
    pairs = c.strings(v)
    bad = [p for p in pairs if not re.fullmatch(r"[1-9]\d*/[1-9]\d*", p)]
    if bad:
        raise c.Bad(f"{bad[0]!r} is not a Q/K / V head-dim pair like '192/128'")
    return pairs


_PREPARE_PLACEHOLDERS = ("src", "cuda_home")
_BY_TYPE: dict[str, c.Check] = {
    "str": c.string_, "bool": c.boolean, "int": c.integer, "float": c.number,
    "tuple[str, ...]": c.strings, "tuple[int, ...]": c.integers,
    "Mapping[str, str]": c.str_map, "Mapping[str, int]": c.int_map,
    "Mapping[str, Version]": _versions_map, "Mapping[str, object]": _any_map,
    "SpecifierSet": c.spec, "Version": c.version, "Optional[Version]": c.opt_version, "ArchSpec": _arch_spec,
    "str | None": c.string_,
}
_OVERRIDES: dict[tuple[str, str], c.Check] = {
    ("Backend", "vendor"): c.one_of(("nvidia", "amd", "any")),
    ("Backend", "amd_gfx"): _gfx_list,
    ("Backend", "os"): c.subset(("linux", "windows", "darwin")),
    ("Backend", "workloads"): c.subset(WORKLOADS),
    ("Backend", "routes"): c.subset(ROUTE_KINDS),
    ("Backend", "call"): lambda v: _table_of(m.CallSpec, {"convention": c.one_of(CONVENTIONS),
                                                         "layout": c.one_of(("bshd", "bhsd"))})(v),
    ("SourceBuild", "prepare"): lambda v: _rows_of(m.Prepare, {
        "argv": lambda a: tuple(c.template(_PREPARE_PLACEHOLDERS)(x) for x in c.strings(a))})(v),
    ("SourceBuild", "env_if"): lambda v: _rows_of(m.EnvIf, {"env": lambda e: {
        k: c.template(_PREPARE_PLACEHOLDERS)(x) for k, x in c.str_map(e).items()}})(v),
    ("SourceBuild", "arch_env"): lambda v: {k: c.template(("cc", "sm", "sm_family", "gfx"))(x)
                                            for k, x in c.str_map(v).items()},
    ("Fa3Trims", "hdim"): _digit_keys,
    ("Fa3Trims", "hdimdiff"): _digit_keys,
    ("Hint", "pattern"): c.regex,
    ("Explain", "pattern"): c.regex,
    ("RankRow", "vendor"): c.one_of(("nvidia", "amd", "none")),
    ("RouteKindRow", "kind"): c.one_of(ROUTE_KINDS),
    ("HubKernel", "repo"): _hub_repo,
    ("HubFallback", "repo"): _hub_repo,
    ("HubKernel", "archs"): _sm_list,
    ("FlashAttnRelease", "archs"): _sm_list,
    ("FlashAttnRelease", "exclude"): _torch_python_pairs,
    ("HubPaths", "packing"): _spec_map,
    ("ModelRule", "head_dim_pairs"): lambda v: _head_dim_pairs(v),
    ("Hint", "hint"): c.template(("max_jobs_half",)),
    ("TorchBuild", "machine"): c.subset(("x86_64", "aarch64")),
    ("TorchRelease", "cuda"): lambda v: _flavours(v, "cu"),
    ("TorchRelease", "rocm"): lambda v: _flavours(v, "rocm"),
    ("RocmBuild", "flavours"): lambda v: _flavours(v, "rocm"),
    ("RocmBuild", "gfx"): _gfx_list,
    ("IndexWheel", "flavours"): lambda v: tuple(
        _flavours([f], "cu" if f.startswith("cu") else "rocm")[0] for f in c.strings(v)),
    ("IndexWheel", "machine"): c.subset(("x86_64", "aarch64")),
    ("IndexWheel", "archs"): lambda v: _arch_spec(v).archs,
    ("FarmWheel", "machine"): c.one_of(("x86_64", "aarch64")),
    ("FarmWheel", "cuda"): lambda v: _flavours([v], "cu")[0],
    ("Backend", "min_driver"): c.opt_version,
    ("GpuCapability", "cc"): lambda v: _compute_capability(v),
    ("GpuCapability", "names"): lambda v: _nonempty(c.strings(v)),
    ("SdpaKernel", "vendor"): c.one_of(("nvidia", "amd")),
    ("SdpaKernel", "amd_gfx"): _gfx_list,
    ("GpuPeak", "name_pattern"): c.regex,
    ("GpuPeak", "confidence"): c.one_of(("high", "medium", "low")),
}
_NOT_IN_TOML = {"directory"}


def _checker(cls: type, f: dataclasses.Field[Any]) -> c.Check:
    override = _OVERRIDES.get((cls.__name__, f.name))
    if override is not None:
        return override
    check = _BY_TYPE.get(str(f.type))
    if check is None:  # pragma: no cover - a new field type needs a checker here
        raise TypeError(f"no checker for {cls.__name__}.{f.name}: {f.type}")
    return check


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _row(raw: Any, cls: type, where: str, errs: c.Collector, extra: Mapping[str, c.Check]) -> Optional[Any]:
    """One TOML table as an instance of the dataclass *cls*, or None (every problem is in *errs*)."""
    if not isinstance(raw, dict):
        errs.add(where, "expected a table")
        return None
    fields = [f for f in dataclasses.fields(cls) if f.name not in _NOT_IN_TOML]
    names = [f.name for f in fields]
    ok = True
    for key in raw:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            errs.add(where, f"unknown field '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            ok = False
    values: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            default = _default(f)
            if default is dataclasses.MISSING:
                errs.add(where, f"field '{f.name}' is missing")
                ok = False
            continue
        try:
            values[f.name] = (extra.get(f.name) or _checker(cls, f))(raw[f.name])
        except c.Bad as e:
            errs.add(where, f"field '{f.name}': {e}")
            ok = False
    return cls(**values) if ok else None


# --------------------------------------------------------------------------- files


def _table_lines(text: str, table: str) -> list[int]:
    """Line numbers of each ``[[table]]`` header, in order (TOML keeps array order)."""
    pat = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]\s*(#.*)?$")
    return [i for i, line in enumerate(text.splitlines(), 1) if pat.match(line)]


def _single_line(text: str, table: str) -> int:
    pat = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]\s*(#.*)?$")
    return next((i for i, line in enumerate(text.splitlines(), 1) if pat.match(line)), 1)


class _Files:
    """Every matrix file parsed once; typed rows out, problems into one collector."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.errs = c.Collector()
        self.data: dict[str, tuple[dict[str, Any], str]] = {}
        for name in MATRIX_FILES:
            self.data[name] = self._read(directory / name)

    def _read(self, path: Path) -> tuple[dict[str, Any], str]:
        try:
            text = read_bounded(path, limit=MAX_FILE_BYTES)
        except ReadProblem as e:
            self.errs.add(str(path), f"cannot read ({e})")
            return {}, ""
        try:
            return tomllib.loads(text), text
        except tomllib.TOMLDecodeError as e:
            self.errs.add(str(path), f"not valid TOML: {e}")
            return {}, text
        except RecursionError:
            self.errs.add(str(path), "not valid TOML: nests too deeply to read")
            return {}, ""

    def rows(self, fname: str, table: str, cls: type, key: str = "") -> list[Any]:
        data, text = self.data[fname]
        if not text:
            return []
        path = self.directory / fname
        items = data.get(table)
        if not isinstance(items, list) or not items:
            self.errs.add(f"{path}:1", f"no [[{table}]] rows")
            return []
        lines = _table_lines(text, table)
        out = []
        for i, raw in enumerate(items):
            line = lines[i] if i < len(lines) else 1
            name = str(raw.get(key, "")) if key and isinstance(raw, dict) else ""
            where = f"{path}:{line}: [[{table}]] #{i + 1}" + (f" {name!r}" if name else "")
            row = _row(raw, cls, where, self.errs, {})
            if row is not None:
                out.append(row)
        return out

    def single(self, fname: str, table: str, cls: type) -> Optional[Any]:
        data, text = self.data[fname]
        if not text:
            return None
        path = self.directory / fname
        if table not in data:
            self.errs.add(f"{path}:1", f"no [{table}] table")
            return None
        return _row(data[table], cls, f"{path}:{_single_line(text, table)}: [{table}]", self.errs, {})

    def top(self, fname: str, key: str, check: Callable[[Any], Any], default: Any = None) -> Any:
        data, text = self.data[fname]
        if not text:
            return default
        if key not in data:
            if default is not None:
                return default
            self.errs.add(f"{self.directory / fname}:1", f"top-level '{key}' is missing")
            return default
        try:
            return check(data[key])
        except c.Bad as e:
            self.errs.add(f"{self.directory / fname}:1", f"top-level '{key}': {e}")
            return default

    def raw_names(self) -> set[str]:
        """Every backend row's name, valid or not, so one bad row does not cascade into "unknown backend"."""
        raw = self.data["backends.toml"][0].get("backend")
        if not isinstance(raw, list):
            return set()
        return {r["name"] for r in raw if isinstance(r, dict) and isinstance(r.get("name"), str)}


def load_matrix(directory: Optional[Path] = None) -> Matrix:
    """Load and validate every matrix file; raise MatrixError listing every bad row."""
    return _load_cached(Path(directory) if directory else default_matrix_dir())


FA_URL_FIELDS = ("version", "cuda_major", "torch", "abi", "cp", "machine")


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> Matrix:
    f = _Files(directory)
    errs = f.errs
    backends = f.rows("backends.toml", "backend", m.Backend, "name")
    names = [b.name for b in backends]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errs.add(str(directory / "backends.toml"), f"backend name {dup!r} is used twice")
    known = f.raw_names() or set(names)
    bench_order = f.top("backends.toml", "bench", c.strings, ())
    sources = f.rows("sources.toml", "source", m.SourceBuild, "backend")
    matrix_fields: dict[str, Any] = {
        "backends": tuple(backends),
        "cuda_drivers": tuple(f.rows("torch.toml", "cuda_driver", m.CudaDriver)),
        "torch_builds": tuple(f.rows("torch.toml", "torch_build", m.TorchBuild)),
        "torch_releases": tuple(f.rows("torch.toml", "torch_release", m.TorchRelease, "version")),
        "rocm_builds": tuple(f.rows("torch.toml", "rocm_build", m.RocmBuild)),
        "gpu_capabilities": tuple(f.rows("gpus.toml", "compute_capability", m.GpuCapability, "cc")),
        "sdpa_kernels": tuple(f.rows("gpus.toml", "sdpa_kernel", m.SdpaKernel, "vendor")),
        "torch_index_url": f.top("torch.toml", "torch_index_url", c.url_template(("flavour",)), ""),
        "pinned": f.top("torch.toml", "pinned", c.strings, ()),
        "watched": f.top("torch.toml", "watched", c.strings, ()),
        "flash_attn_url": f.top("flash_attn_wheels.toml", "url", c.url_template(FA_URL_FIELDS), ""),
        "flash_attn_releases": tuple(f.rows("flash_attn_wheels.toml", "release", m.FlashAttnRelease, "version")),
        "index_wheels": tuple(f.rows("routes.toml", "index_wheel", m.IndexWheel, "backend")),
        "farm_wheels": tuple(f.rows("routes.toml", "farm_wheel", m.FarmWheel, "backend")),
        "farm_url": f.top("routes.toml", "farm_url", c.url_template(("tag", "file")), ""),
        "hub_kernels": tuple(f.rows("routes.toml", "hub_kernel", m.HubKernel, "repo")),
        "hub_fallbacks": tuple(f.rows("routes.toml", "hub_fallback", m.HubFallback, "repo")),
        "hub_runtime": f.top("routes.toml", "hub_runtime", c.string_, ""),
        "hub_runtime_source": f.top("routes.toml", "hub_runtime_source", c.string_, ""),
        "hub_paths": f.single("axolotl.toml", "hub_paths", m.HubPaths),
        "farm_files": f.top("routes.toml", "farm_files", lambda v: {
            k: c.template(("version", "cuda", "torch", "py", "machine"))(x) for k, x in c.str_map(v).items()}, {}),
        "sources": tuple(sources),
        "build": f.single("sources.toml", "build", m.BuildDefaults),
        "fa3_trims": f.single("sources.toml", "fa3_trims", m.Fa3Trims),
        "host_compilers": tuple(f.rows("sources.toml", "host_compiler", m.HostCompiler)),
        "attn_impl_values": tuple(f.rows("axolotl.toml", "attn_implementation", m.AttnImplValues)),
        "legacy_flags": tuple(f.rows("axolotl.toml", "legacy_flag", m.LegacyFlag, "flag")),
        "run_time_swaps": tuple(f.rows("axolotl.toml", "run_time_swap", m.RunTimeSwap, "runs")),
        "retired_flags": tuple(f.rows("axolotl.toml", "retired_flag", m.RetiredFlag, "flag")),
        "axolotl_keys": f.single("axolotl.toml", "keys", m.AxolotlKeys),
        "ranking": tuple(f.rows("ranking.toml", "rank", m.RankRow)),
        "hints": tuple(f.rows("hints.toml", "hint", m.Hint, "name")),
        "explains": tuple(f.rows("hints.toml", "explain", m.Explain, "name")),
        "route_kinds": tuple(f.rows("routes.toml", "kind", m.RouteKindRow, "kind")),
        "bench_order": bench_order,
        "gpu_peaks": tuple(f.rows("gpu_peaks.toml", "gpu", m.GpuPeak, "name")),
        "model_rules": tuple(f.rows("backends.toml", "model_rule", m.ModelRule, "backend")),
        "directory": directory,
    }
    _cross_checks(f, backends, sources, matrix_fields, known)
    if errs.errors:
        count = len(errs.errors)
        raise MatrixError(f"{count} problem{'s' if count > 1 else ''} in the matrix:\n  " + "\n  ".join(errs.errors))
    return Matrix(**matrix_fields)


def _cross_checks(f: _Files, backends: list[Backend], sources: list[m.SourceBuild], fields: dict[str, Any],
                  known: set[str]) -> None:
    errs, d = f.errs, f.directory
    for s in sources:
        if s.backend not in known:
            errs.add(str(d / "sources.toml"), f"[[source]] names unknown backend {s.backend!r}")
    for i, r in enumerate(fields["ranking"]):
        unknown = [n for n in r.order if n not in known]
        if unknown and known:
            errs.add(str(d / "ranking.toml"), f"[[rank]] #{i + 1} names unknown backend {unknown[0]!r}")
    for name in fields["bench_order"]:
        if known and name not in known:
            errs.add(str(d / "backends.toml"), f"top-level 'bench' names unknown backend {name!r}")
    for w in (*fields["index_wheels"], *fields["farm_wheels"], *fields["hub_kernels"]):
        if known and w.backend not in known:
            errs.add(str(d / "routes.toml"), f"a wheel row names unknown backend {w.backend!r}")
    for name in fields["farm_files"]:
        if known and name not in known:
            errs.add(str(d / "routes.toml"), f"farm_files names unknown backend {name!r}")
    kinds = {r.kind for r in fields["route_kinds"]}
    general = {r.backend for r in fields["model_rules"] if r.nvidia_sm.empty}
    for r in fields["model_rules"]:
        if known and r.backend not in known:
            errs.add(str(d / "backends.toml"), f"[[model_rule]] names unknown backend {r.backend!r}")
    for b in backends:
        if b.name not in general:
            errs.add(str(d / "backends.toml"), f"backend {b.name!r} has no general [[model_rule]] (one without "
                     "nvidia_sm): what it does with head dims, soft-capping and sliding windows must be said")
        if b.packing and not b.call.varlen:
            errs.add(str(d / "backends.toml"), f"backend {b.name!r}: packing = true needs a varlen entry point "
                     "in call (packed documents go through it)")
        if "source" in b.routes and not any(s.backend == b.name for s in sources):
            errs.add(str(d / "backends.toml"),
                     f"backend {b.name!r} lists route 'source' but sources.toml has no [[source]] for it")
        for kind in b.routes:
            if kinds and kind not in kinds:
                errs.add(str(d / "backends.toml"), f"backend {b.name!r}: route {kind!r} has no [[kind]] in routes.toml")
        if b.bench_as and b.bench_as not in known:
            errs.add(str(d / "backends.toml"), f"backend {b.name!r}: bench_as names unknown backend {b.bench_as!r}")
    seen: dict[str, str] = {}
    for row in fields["gpu_capabilities"]:
        for name in row.names:
            key = m.gpu_name_key(name)
            if key in seen:
                errs.add(str(d / "gpus.toml"), f"[[compute_capability]] name {name!r} is in the {seen[key]} and "
                         f"the {row.cc} rows")
            seen[key] = row.cc
    for row in fields["sdpa_kernels"]:
        if row.otherwise == (not row.nvidia_sm.empty or bool(row.amd_gfx)):
            errs.add(str(d / "gpus.toml"), f"[[sdpa_kernel]] {row.kernel!r}: give nvidia_sm or amd_gfx, or "
                     "otherwise = true, not both")
