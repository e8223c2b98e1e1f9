"""`attn-install bench`: measure the installed attention backends on this GPU, cache the result,
and hand measured speeds to the plan.

The measuring code is ``_bench_snippet.py``: run as ``python -I -c SNIPPET CONFIG`` in the target
interpreter (the user's torch env) from an empty temporary directory, with a timeout, through the
runner. Everything else here is pure: model-config parsing, output parsing, the cache key, the
ranking, the table; the plot imports matplotlib lazily (``pip install 'attn-install[plot]'``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer.errors import BenchError, UsageError
from attn_installer.facts import Facts
from attn_installer.resolve import MeasuredSpeed
from attn_installer.runner import Runner

__all__ = [
    "BACKENDS",
    "SNIPPET",
    "BackendResult",
    "BenchConfig",
    "BenchReport",
    "Shape",
    "cache_key",
    "cache_path",
    "find_measured",
    "load_cached",
    "measured_speeds",
    "parse_backends",
    "parse_bench_output",
    "parse_model_config",
    "ranked",
    "render_table",
    "run_bench",
    "save_cached",
    "shape_from_model_config",
    "write_plot",
]

SNIPPET = (Path(__file__).with_name("_bench_snippet.py")).read_text(encoding="utf-8")
SNIPPET_ID = hashlib.sha256(SNIPPET.encode()).hexdigest()[:12]
"""Part of the cache key: a changed measuring method never reuses old numbers."""
SCHEMA_VERSION = 1
BENCH_TIMEOUT = 600.0
SEQ_CAP = 4096
"""A model config's max_position_embeddings is capped here (131072 would take minutes and a
quadratic reference); pass --seq-len to measure longer."""
BACKENDS = ("sdpa", "flex_attention", "xformers", "flash_attention_2", "flash_attention_3",
            "flash_attention_4", "sage")
ALIASES = {"flex": "flex_attention", "fa2": "flash_attention_2", "fa3": "flash_attention_3",
           "fa4": "flash_attention_4", "sageattention": "sage"}
VERSIONED = ("torch", "triton", "flash-attn", "flash-attn-3", "flash-attn-4", "flash-attn-cute", "xformers",
             "sageattention")
"""Distributions whose versions key the cache: a new build of any of them is measured again."""


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    batch: int = 4
    seq_len: int = 4096
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    source: str = "defaults"

    @property
    def label(self) -> str:
        return f"B={self.batch} S={self.seq_len} H={self.heads} KV={self.kv_heads} D={self.head_dim}"


def _field_int(data: Mapping[str, Any], name: str, where: str) -> Optional[int]:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UsageError(f"{where}: field '{name}': {v!r} is not a positive integer")
    return v


def parse_model_config(data: Any, where: str) -> dict[str, Any]:
    """Attention shape from a Hugging Face ``config.json`` (``text_config`` for multimodal ones):
    head_dim (or hidden_size / num_attention_heads), heads, kv heads, and the sequence length
    (max_position_embeddings capped at SEQ_CAP). Raises UsageError naming the file and field."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a JSON object (expected a Hugging Face config.json)")
    if "num_attention_heads" not in data and isinstance(data.get("text_config"), dict):
        data, where = data["text_config"], f"{where}: text_config"
    heads = _field_int(data, "num_attention_heads", where)
    if heads is None:
        raise UsageError(f"{where}: field 'num_attention_heads' is missing (is this a model config.json?)")
    kv = _field_int(data, "num_key_value_heads", where) or heads
    if heads % kv:
        raise UsageError(f"{where}: field 'num_key_value_heads': {kv} does not divide num_attention_heads {heads}")
    head_dim = _field_int(data, "head_dim", where)
    if head_dim is None:
        hidden = _field_int(data, "hidden_size", where)
        if hidden is None:
            raise UsageError(f"{where}: neither 'head_dim' nor 'hidden_size' is given")
        if hidden % heads:
            raise UsageError(f"{where}: field 'hidden_size': {hidden} is not a multiple of "
                             f"num_attention_heads {heads} (and no 'head_dim' is given)")
        head_dim = hidden // heads
    out = {"heads": heads, "kv_heads": kv, "head_dim": head_dim}
    mpe = _field_int(data, "max_position_embeddings", where)
    if mpe is not None:
        out["seq_len"] = min(mpe, SEQ_CAP)
    return out


def shape_from_model_config(path: Path) -> dict[str, Any]:
    """Read and parse a config.json on disk (no network); one-line UsageError when it is bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the model config: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON: {e}") from None
    return parse_model_config(data, str(path))


def parse_backends(values: Sequence[str]) -> tuple[str, ...]:
    """``--backends sdpa,fa3 --backends flex`` -> canonical names, in order, without repeats."""
    names: list[str] = []
    for v in values:
        for part in v.split(","):
            p = part.strip()
            if not p:
                continue
            p = ALIASES.get(p, p)
            if p not in BACKENDS:
                raise UsageError(f"--backends: unknown backend {part.strip()!r}: choose from {', '.join(BACKENDS)}")
            if p not in names:
                names.append(p)
    return tuple(names) or BACKENDS


# --------------------------------------------------------------------------- config and results


@dataclass(frozen=True)
class BenchConfig:
    shape: Shape = Shape()
    dtype: str = "bf16"
    causal: bool = True
    packed: bool = False
    workload: str = "full"
    backends: tuple[str, ...] = BACKENDS
    warmup: int = 3
    repeats: int = 10

    def to_dict(self) -> dict[str, Any]:
        s = self.shape
        return {"batch": s.batch, "seq_len": s.seq_len, "heads": s.heads, "kv_heads": s.kv_heads,
                "head_dim": s.head_dim, "dtype": self.dtype, "causal": self.causal, "packed": self.packed,
                "workload": self.workload, "backends": list(self.backends), "warmup": self.warmup,
                "repeats": self.repeats}

    @property
    def metric(self) -> str:
        """What the workload is ranked by: forward only for inference, forward+backward otherwise."""
        return "fwd" if self.workload == "inference" else "fwd+bwd"


@dataclass(frozen=True)
class Timing:
    median: float
    min: Optional[float] = None
    max: Optional[float] = None

    @classmethod
    def from_obj(cls, obj: Any) -> Optional[Timing]:
        if isinstance(obj, dict) and isinstance(obj.get("median"), (int, float)):
            return cls(float(obj["median"]), _num(obj.get("min")), _num(obj.get("max")))
        return None

    def to_dict(self) -> dict[str, Optional[float]]:
        return {"median": self.median, "min": self.min, "max": self.max}


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class BackendResult:
    backend: str
    variant: Optional[str]
    """None for the backend as axolotl would call it; cudnn / flash / efficient / math for SDPA forced
    to one kernel."""
    status: str
    """ok, error, not installed, skipped."""
    detail: str = ""
    version: Optional[str] = None
    fwd: Optional[Timing] = None
    fwdbwd: Optional[Timing] = None
    fwd_tflops: Optional[float] = None
    fwdbwd_tflops: Optional[float] = None
    peak_mem_gib: Optional[float] = None
    max_abs_err: Optional[float] = None
    kernel: Optional[str] = None
    """SDPA default only: which kernel the default dispatch picked (profiler names), or unknown."""

    @property
    def label(self) -> str:
        return f"{self.backend}[{self.variant}]" if self.variant else self.backend

    def ms(self, metric: str) -> Optional[float]:
        t = self.fwd if metric == "fwd" else self.fwdbwd
        return t.median if t is not None and self.status == "ok" else None

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> BackendResult:
        variant = obj.get("variant")
        return cls(
            backend=str(obj.get("backend", "?")), variant=str(variant) if variant else None,
            status=str(obj.get("status", "error")), detail=str(obj.get("detail") or ""),
            version=str(obj["version"]) if obj.get("version") else None,
            fwd=Timing.from_obj(obj.get("fwd_ms")), fwdbwd=Timing.from_obj(obj.get("fwdbwd_ms")),
            fwd_tflops=_num(obj.get("fwd_tflops")), fwdbwd_tflops=_num(obj.get("fwdbwd_tflops")),
            peak_mem_gib=_num(obj.get("peak_mem_gib")), max_abs_err=_num(obj.get("max_abs_err")),
            kernel=str(obj["kernel"]) if obj.get("kernel") else None)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "variant": self.variant, "status": self.status, "detail": self.detail,
                "version": self.version, "fwd_ms": self.fwd.to_dict() if self.fwd else None,
                "fwdbwd_ms": self.fwdbwd.to_dict() if self.fwdbwd else None, "fwd_tflops": self.fwd_tflops,
                "fwdbwd_tflops": self.fwdbwd_tflops, "peak_mem_gib": self.peak_mem_gib,
                "max_abs_err": self.max_abs_err, "kernel": self.kernel}


@dataclass(frozen=True)
class BenchReport:
    status: str
    """ok (something was measured or tried), no_gpu, no_torch, error (set-up failed), crashed."""
    detail: str
    env: dict[str, Any]
    """What the measuring process saw: torch, torch_cuda, gpu, capability, shape, ..."""
    results: tuple[BackendResult, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    """The probe facts that key the cache: GPUs, driver, torch and backend versions."""
    complete: bool = True
    """False when the process timed out or crashed after some results."""
    created: Optional[str] = None
    key: Optional[str] = None

    @property
    def measured(self) -> bool:
        return self.status == "ok" and any(r.status == "ok" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "status": self.status, "detail": self.detail,
                "created": self.created, "key": self.key, "complete": self.complete, "env": dict(self.env),
                "config": dict(self.config), "machine": dict(self.machine),
                "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchReport:
        return cls(status=str(d["status"]), detail=str(d.get("detail") or ""), env=dict(d.get("env") or {}),
                   results=tuple(BackendResult.from_obj(r) for r in d.get("results") or () if isinstance(r, dict)),
                   config=dict(d.get("config") or {}), machine=dict(d.get("machine") or {}),
                   complete=bool(d.get("complete", True)), created=d.get("created"), key=d.get("key"))


def parse_bench_output(stdout: str, stderr: str, returncode: int, timed_out: bool,
                       timeout: float = BENCH_TIMEOUT) -> BenchReport:
    """The snippet's JSON lines (``"attn_bench": 1``) into a report; other lines are ignored.

    A timeout or crash keeps the results printed before it and says so in ``detail``."""
    env: Optional[dict[str, Any]] = None
    results: list[BackendResult] = []
    done = False
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get("attn_bench") != 1:
            continue
        kind = obj.get("kind")
        if kind == "env":
            env = {k: v for k, v in obj.items() if k not in ("attn_bench", "kind")}
        elif kind == "result":
            results.append(BackendResult.from_obj(obj))
        elif kind == "done":
            done = True
    tail = [ln for ln in (stderr or stdout).strip().splitlines() if ln.strip()]
    last = tail[-1].strip()[:300] if tail else "no output"
    if env is None:
        why = f"timed out after {timeout:g} s" if timed_out else f"exit {returncode}: {last}"
        return BenchReport("crashed", f"the measuring process printed nothing usable ({why})", {}, complete=False)
    status = str(env.pop("status", "error"))
    detail = str(env.pop("detail", "") or "")
    if not done:
        why = f"timed out after {timeout:g} s" if timed_out else f"stopped (exit {returncode}): {last}"
        measuring = _unfinished(env, results)
        detail = (detail + "; " if detail else "") + why + (
            f" while measuring {measuring[0]}" if measuring else "")
    return BenchReport(status, detail, env, tuple(results), complete=done)


def _unfinished(env: Mapping[str, Any], results: Sequence[BackendResult]) -> list[str]:
    asked = env.get("backends")
    seen = {r.backend for r in results}
    return [b for b in (asked if isinstance(asked, list) else ()) if b not in seen]


# --------------------------------------------------------------------------- cache


def machine_facts(facts: Facts) -> dict[str, Any]:
    """What a measurement depends on besides its shape: GPUs, driver, torch and backend builds."""
    return {
        "gpus": [g.name for g in facts.gpus],
        "driver": facts.driver.version if facts.driver else None,
        "torch": facts.torch.version if facts.torch else None,
        "packages": {d: facts.packages[d] for d in VERSIONED if d in facts.packages},
    }


def cache_key(facts: Facts, config: BenchConfig) -> str:
    blob = json.dumps({"machine": machine_facts(facts), "config": config.to_dict(), "snippet": SNIPPET_ID},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "bench" / f"{key}.json"


def load_cached(path: Path) -> Optional[BenchReport]:
    """A cached report, or None when absent, unreadable or of another schema (measure again)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.get("schema_version") != SCHEMA_VERSION:
            return None
        return BenchReport.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_cached(path: Path, report: BenchReport) -> None:
    from attn_installer.config import write_atomic  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report.to_dict(), indent=1, sort_keys=True) + "\n")


def find_measured(cache_dir: Path, facts: Facts, workload: str) -> Optional[BenchReport]:
    """The newest cached report measured on this machine (same GPUs, driver, torch and backend
    builds) that has numbers for the workload's metric; None when there is none."""
    metric = "fwd" if workload == "inference" else "fwd+bwd"
    want = machine_facts(facts)
    best: Optional[BenchReport] = None
    folder = Path(cache_dir) / "bench"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        rep = load_cached(path)
        if rep is None or rep.machine != want or not rep.measured:
            continue
        if not any(r.variant is None and r.ms(metric) is not None for r in rep.results):
            continue
        if best is None or (rep.created or "") > (best.created or ""):
            best = rep
    return best


# --------------------------------------------------------------------------- ranking


def ranked(report: BenchReport, metric: str) -> list[BackendResult]:
    """Backends as axolotl would call them (no forced SDPA kernels) with a time for ``metric``,
    fastest first."""
    rows = [r for r in report.results if r.variant is None and r.ms(metric) is not None]
    return sorted(rows, key=lambda r: (r.ms(metric) or 0.0, r.backend))


def _where(report: BenchReport) -> str:
    c = report.config
    shape = (f"B={c.get('batch')} S={c.get('seq_len')} H={c.get('heads')} KV={c.get('kv_heads')} "
             f"D={c.get('head_dim')}")
    mode = ("causal" if c.get("causal", True) else "non-causal") + (", packed" if c.get("packed") else "")
    return f"{report.env.get('gpu', 'this GPU')}, {c.get('dtype', '?')} {mode} {shape}"


def measured_speeds(report: BenchReport, workload: str, vendor: Optional[str] = None) -> tuple[MeasuredSpeed, ...]:
    """The plan's input: one speed per backend for the workload's metric (fwd for inference,
    fwd+bwd otherwise; SageAttention has no fwd+bwd, so it never ranks for training). On AMD the
    flash_attn measurement is the ROCm (CK) build's."""
    metric = "fwd" if workload == "inference" else "fwd+bwd"
    where = _where(report)
    out = []
    for r in ranked(report, metric):
        name = "flash_attention_2_rocm" if vendor == "amd" and r.backend == "flash_attention_2" else r.backend
        ms = r.ms(metric)
        assert ms is not None
        out.append(MeasuredSpeed(backend=name, ms=ms, metric=metric, where=where))
    return tuple(out)


# --------------------------------------------------------------------------- running


def run_bench(runner: Runner, python: str, config: BenchConfig, *, timeout: float = BENCH_TIMEOUT) -> BenchReport:
    """Measure in a fresh ``python -I`` from an empty temporary directory (a source checkout in
    the working directory cannot shadow the installed backends)."""
    arg = json.dumps(config.to_dict(), sort_keys=True)
    with tempfile.TemporaryDirectory(prefix="attn-install-bench-") as tmp:
        done = runner.run([python, "-I", "-c", SNIPPET, arg], timeout=timeout, cwd=Path(tmp))
    report = parse_bench_output(done.stdout, done.stderr, done.returncode, done.timed_out, timeout)
    return replace(report, config=config.to_dict())


def require_ok(report: BenchReport) -> None:
    """Raise BenchError when the measuring process itself failed (not for no GPU / no torch)."""
    if report.status in ("crashed", "error"):
        raise BenchError(f"bench failed: {report.detail}")


# --------------------------------------------------------------------------- output


def _ms(t: Optional[Timing]) -> str:
    if t is None:
        return "-"
    if t.min is None or t.max is None:
        return f"{t.median:.2f}"
    return f"{t.median:.2f} ({t.min:.2f}-{t.max:.2f})"


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def header(report: BenchReport) -> str:
    e, c = report.env, report.config
    gpu = e.get("gpu") or "no GPU"
    driver = report.machine.get("driver") or "?"
    return (f"{gpu}, driver {driver}, torch {e.get('torch', '?')}: {_where(report).split(', ', 1)[-1]}; "
            f"{c.get('warmup', '?')} warm-up + {c.get('repeats', '?')} timed calls, median (min-max)")


def render_table(report: BenchReport) -> str:
    """The human table; '*' marks the fastest for the workload's metric."""
    if report.status in ("no_gpu", "no_torch"):
        return f"nothing measured: {report.detail}"
    metric = "fwd" if report.config.get("workload") == "inference" else "fwd+bwd"
    order = ranked(report, metric)
    best = order[0].label if order else None
    lines = [header(report), ""]
    lines.append(f"{'backend':<26}{'version':<18}{'fwd ms':<22}{'fwd+bwd ms':<24}{'TFLOP/s':<14}"
                 f"{'peak GiB':<10}{'max err':<10}note")
    for r in report.results:
        mark = "*" if r.label == best else " "
        if r.status != "ok":
            detail = " ".join(r.detail.replace("\\n", " ").split())
            lines.append(f"{mark}{r.label:<25}{(r.version or '-')[:17]:<18}{r.status}: "
                         f"{detail[:110] + ('...' if len(detail) > 110 else '')}")
            continue
        tf = f"{_f(r.fwd_tflops, '.0f')}/{_f(r.fwdbwd_tflops, '.0f')}"
        note = f"default kernel: {r.kernel}" if r.kernel else ""
        lines.append(f"{mark}{r.label:<25}{(r.version or '-')[:17]:<18}{_ms(r.fwd):<22}{_ms(r.fwdbwd):<24}{tf:<14}"
                     f"{_f(r.peak_mem_gib, '.1f'):<10}{_f(r.max_abs_err, '.2e'):<10}{note}".rstrip())
    lines.append("")
    if best is not None:
        lines.append(f"fastest for {report.config.get('workload', 'full')} ({metric}): {best}; "
                     "`attn-install plan --measured` ranks by these numbers")
    else:
        lines.append(f"no backend has a {metric} time")
    if not report.complete:
        lines.append(f"incomplete: {report.detail}")
    return "\n".join(lines)


def write_plot(report: BenchReport, path: Path) -> None:
    """Bar chart of TFLOP/s per backend (fwd and fwd+bwd) with GPU / driver / torch in the title."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'attn-install[plot]'") from None
    rows = [r for r in report.results if r.status == "ok"]
    if not rows:
        raise BenchError("nothing was measured: no plot to draw")
    labels = [r.label for r in rows]
    xs = list(range(len(rows)))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.5))
    ax.bar([x - width / 2 for x in xs], [r.fwd_tflops or 0.0 for r in rows], width, label="fwd")
    ax.bar([x + width / 2 for x in xs], [r.fwdbwd_tflops or 0.0 for r in rows], width, label="fwd+bwd")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("TFLOP/s (causal counts half)")
    e = report.env
    ax.set_title(f"{e.get('gpu', '?')}, driver {report.machine.get('driver') or '?'}, torch {e.get('torch', '?')}\n"
                 f"{_where(report).split(', ', 1)[-1]}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
