"""What a bench run measured: its configuration, each backend's timings and checks, the report,
the parser of the measuring program's output, and the ranking of accepted results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from attn_installer import target
from attn_installer.modelconfig import Shape

__all__ = ["BENCH_TIMEOUT", "METHOD_ID", "SCHEMA_VERSION", "BackendResult", "BenchConfig", "BenchReport", "GradCheck",
           "Timing", "parse_bench_output", "ranked", "where"]

METHOD_ID = hashlib.sha256(b"".join((target.DIR / f).read_bytes() for f in ("attn_bench.py", "attn_calls.py"))
                           ).hexdigest()[:12]
"""Part of the cache key: a changed measuring method never reuses old numbers."""
SCHEMA_VERSION = 1
BENCH_TIMEOUT = 600.0


# --------------------------------------------------------------------------- config and results


@dataclass(frozen=True)
class BenchConfig:
    shape: Shape = Shape()
    dtype: str = "bf16"
    causal: bool = True
    packed: bool = False
    workload: str = "full"
    backends: tuple[str, ...] = ()
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


GRADS = ("dq", "dk", "dv")


@dataclass(frozen=True)
class GradCheck:
    """The gradients of one forward + backward against the fp32 reference's (a smaller run: the
    first row at ``seq_len`` tokens), or why they could not be checked."""

    status: str
    """ok (compared, see the numbers), error (the backward or the comparison raised)."""
    detail: str = ""
    seq_len: Optional[int] = None
    rel_err: Mapping[str, float] = field(default_factory=dict)
    cosine: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_obj(cls, obj: Any) -> Optional[GradCheck]:
        if not isinstance(obj, dict):
            return None
        return cls(status=str(obj.get("status", "error")), detail=str(obj.get("detail") or ""),
                   seq_len=obj.get("seq_len") if isinstance(obj.get("seq_len"), int) else None,
                   rel_err={g: float(v) for g in GRADS if (v := _num(obj.get(f"{g}_rel_err"))) is not None},
                   cosine={g: float(v) for g in GRADS if (v := _num(obj.get(f"{g}_cosine"))) is not None})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "detail": self.detail, "seq_len": self.seq_len}
        for g in GRADS:
            out[f"{g}_rel_err"] = self.rel_err.get(g)
            out[f"{g}_cosine"] = self.cosine.get(g)
        return out


@dataclass(frozen=True)
class BackendResult:
    backend: str
    variant: Optional[str]
    """None for the backend as axolotl would call it; cudnn / flash / efficient / math for SDPA forced
    to one kernel."""
    status: str
    """ok, rejected (measured, but the numbers failed a check: see ``rejected``), error, not installed,
    skipped."""
    detail: str = ""
    version: Optional[str] = None
    fwd: Optional[Timing] = None
    fwdbwd: Optional[Timing] = None
    fwd_tflops: Optional[float] = None
    fwdbwd_tflops: Optional[float] = None
    peak_mem_gib: Optional[float] = None
    max_abs_err: Optional[float] = None
    rel_err: Optional[float] = None
    """Relative L2 error of the output (first row) against fp32 attention."""
    cosine: Optional[float] = None
    grads: Optional[GradCheck] = None
    """The forward + backward measurement's gradients against the fp32 reference."""
    kernel: Optional[str] = None
    """SDPA default only: which kernel the default dispatch picked (profiler names), or unknown."""
    build: Optional[str] = None
    """Digest of the installed build measured (target/attn_builds.py)."""
    rejected: tuple[str, ...] = ()
    """Why the numbers cannot be trusted (error beyond tolerance, faster than the GPU's peak, ...)."""

    @property
    def label(self) -> str:
        return f"{self.backend}[{self.variant}]" if self.variant else self.backend

    def ms(self, metric: str) -> Optional[float]:
        t = self.fwd if metric == "fwd" else self.fwdbwd
        return t.median if t is not None and self.status == "ok" else None

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> BackendResult:
        variant = obj.get("variant")
        rejected = obj.get("rejected")
        return cls(
            backend=str(obj.get("backend", "?")), variant=str(variant) if variant else None,
            status=str(obj.get("status", "error")), detail=str(obj.get("detail") or ""),
            version=str(obj["version"]) if obj.get("version") else None,
            fwd=Timing.from_obj(obj.get("fwd_ms")), fwdbwd=Timing.from_obj(obj.get("fwdbwd_ms")),
            fwd_tflops=_num(obj.get("fwd_tflops")), fwdbwd_tflops=_num(obj.get("fwdbwd_tflops")),
            peak_mem_gib=_num(obj.get("peak_mem_gib")), max_abs_err=_num(obj.get("max_abs_err")),
            rel_err=_num(obj.get("rel_err")), cosine=_num(obj.get("cosine")),
            grads=GradCheck.from_obj(obj.get("grads")),
            kernel=str(obj["kernel"]) if obj.get("kernel") else None,
            build=str(obj["build"]) if obj.get("build") else None,
            rejected=tuple(str(x) for x in rejected) if isinstance(rejected, list) else ())

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "variant": self.variant, "status": self.status, "detail": self.detail,
                "version": self.version, "fwd_ms": self.fwd.to_dict() if self.fwd else None,
                "fwdbwd_ms": self.fwdbwd.to_dict() if self.fwdbwd else None, "fwd_tflops": self.fwd_tflops,
                "fwdbwd_tflops": self.fwdbwd_tflops, "peak_mem_gib": self.peak_mem_gib,
                "max_abs_err": self.max_abs_err, "rel_err": self.rel_err, "cosine": self.cosine,
                "grads": self.grads.to_dict() if self.grads else None, "kernel": self.kernel,
                "build": self.build, "rejected": list(self.rejected)}


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
    judgment: dict[str, Any] = field(default_factory=dict)
    """How the results were judged (attn_installer/judge.py): the GPU's throughput ceiling and its
    source, or a note that none is known; empty until judged."""

    @property
    def measured(self) -> bool:
        return self.status == "ok" and any(r.status == "ok" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "status": self.status, "detail": self.detail,
                "created": self.created, "key": self.key, "complete": self.complete, "env": dict(self.env),
                "config": dict(self.config), "machine": dict(self.machine), "judgment": dict(self.judgment),
                "results": [r.to_dict() for r in self.results]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchReport:
        return cls(status=str(d["status"]), detail=str(d.get("detail") or ""), env=dict(d.get("env") or {}),
                   results=tuple(BackendResult.from_obj(r) for r in d.get("results") or () if isinstance(r, dict)),
                   config=dict(d.get("config") or {}), machine=dict(d.get("machine") or {}),
                   complete=bool(d.get("complete", True)), created=d.get("created"), key=d.get("key"),
                   judgment=dict(d.get("judgment") or {}))


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


# --------------------------------------------------------------------------- ranking


def ranked(report: BenchReport, metric: str) -> list[BackendResult]:
    """Backends as axolotl would call them (no forced SDPA kernels) with a time for ``metric``,
    fastest first."""
    rows = [r for r in report.results if r.variant is None and r.ms(metric) is not None]
    return sorted(rows, key=lambda r: (r.ms(metric) or 0.0, r.backend))


def where(report: BenchReport) -> str:
    c = report.config
    shape = (f"B={c.get('batch')} S={c.get('seq_len')} H={c.get('heads')} KV={c.get('kv_heads')} "
             f"D={c.get('head_dim')}")
    mode = ("causal" if c.get("causal", True) else "non-causal") + (", packed" if c.get("packed") else "")
    return f"{report.env.get('gpu', 'this GPU')}, {c.get('dtype', '?')} {mode} {shape}"
