"""How each field of a matrix row is checked: a checker per field type of the :mod:`.model`
dataclasses, plus the rules a type cannot say (arch names, vendors, hub repos, templates); and the
builder of one row from its TOML table, collecting every problem with where it is."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Mapping, Optional

from attn_installer import checks as c
from attn_installer.matrix import model as m
from attn_installer.matrix.model import ArchSpec
from attn_installer.words import ROUTE_KINDS, WORKLOADS

__all__ = ["CONVENTIONS", "row"]

_ARCH = re.compile(r"^sm_\d{2,3}$")
_GFX = re.compile(r"^gfx[0-9a-f]{3,4}$")
CONVENTIONS = ("sdpa", "eager", "flex", "xformers", "flash", "sage")

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


def _strings_like(pattern: str, what: str) -> c.Check:
    """A list of strings, each matching *pattern* whole; else "'x' is not <what>"."""
    rx = re.compile(pattern)

    def check(v: Any) -> tuple[str, ...]:
        out = c.strings(v)
        bad = [x for x in out if not rx.fullmatch(x)]
        if bad:
            raise c.Bad(f"{bad[0]!r} is not {what}")
        return out

    return check


_sm_list = _strings_like(_ARCH.pattern, "an arch like sm_90")
_torch_python_pairs = _strings_like(r"\d+\.\d+:\d+\.\d+", "a torch:python pair like 2.4:3.13")
_head_dim_pairs = _strings_like(r"[1-9]\d*/[1-9]\d*", "a Q/K / V head-dim pair like '192/128'")


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
            got = row(item, cls, f"#{i + 1}", errs, where_checks or {})
            if got is None:
                raise c.Bad("; ".join(errs.errors))
            out.append(got)
        return tuple(out)

    return check


def _table_of(cls: type, where_checks: Optional[Mapping[str, c.Check]] = None) -> c.Check:
    def check(v: Any) -> Any:
        errs = c.Collector()
        got = row(v, cls, "", errs, where_checks or {})
        if got is None:
            raise c.Bad("; ".join(e.lstrip(": ") for e in errs.errors))
        return got

    return check


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
    ("ModelRule", "head_dim_pairs"): _head_dim_pairs,
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


def row(raw: Any, cls: type, where: str, errs: c.Collector, extra: Mapping[str, c.Check]) -> Optional[Any]:
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
