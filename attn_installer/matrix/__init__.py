"""The compatibility matrix: every fact about backends, wheels and builds, read from ``matrices/``.

One loader reads every file, turns rows into the frozen dataclasses of :mod:`.model` and collects
*all* problems (``file:line: [[backend]] #3 'sage': field 'torch': ...``) before raising one
MatrixError. Which fields a row must have and their defaults come from those dataclasses; each
value is checked against its field's type (plus the rules below: vendors, arch names, templates).
No version table lives in Python code; versions are compared with ``packaging``.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from attn_installer import checks as c
from attn_installer.errors import MatrixError
from attn_installer.files import ReadProblem, read_bounded
from attn_installer.matrix import model as m
from attn_installer.matrix.fields import row as _row
from attn_installer.matrix.model import ArchSpec, Backend, Matrix

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9 / 3.10
    import tomli as tomllib

__all__ = ["MATRIX_FILES", "ArchSpec", "Backend", "Matrix", "default_matrix_dir", "load_matrix"]

MATRIX_FILES = ("backends.toml", "torch.toml", "flash_attn_wheels.toml", "sources.toml", "axolotl.toml",
                "ranking.toml", "hints.toml", "routes.toml", "gpus.toml", "gpu_peaks.toml")
MAX_FILE_BYTES = 1 << 20


def default_matrix_dir() -> Path:
    """``attn_installer/matrices`` inside a wheel, else the repository's ``matrices/``."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "matrices"
    return packaged if packaged.is_dir() else here.parent / "matrices"


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
