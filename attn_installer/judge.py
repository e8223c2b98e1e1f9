"""Judge bench results before anything ranks them. Pure.

A measured result is *rejected*, with its reasons, when

- its output differs from fp32 attention by more than the backend's verify tolerance (its row of
  matrices/backends.toml: relative L2 error below ``verify_rel_tol`` and cosine above
  ``verify_min_cosine``; NaN / inf is never within it),
- its forward + backward time comes without gradients that match the fp32 reference's (dq, dk, dv:
  relative error below twice the tolerance and the same cosine, as `attn-install verify` judges them),
- or its throughput is above the dense peak of the GPU for the dtype measured
  (matrices/gpu_peaks.toml): no kernel does the work faster than the tensor cores can; a zeros
  stand-in or a kernel that skipped its work does. A GPU no row matches gets no ceiling, and the
  report says so.

Results recorded before bench kept relative errors and gradients (they carry only ``max_abs_err``)
are judged on that number against :data:`LEGACY_MAX_ABS_ERR`; they carry no build digest either, so
`plan --measured` never ranks them (bench.untrusted). Judging twice changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

from attn_installer.matrix import Matrix

if TYPE_CHECKING:
    from attn_installer.bench import BackendResult, BenchReport

__all__ = ["LEGACY_MAX_ABS_ERR", "judge", "judge_result", "tolerance"]

LEGACY_MAX_ABS_ERR = 0.5
"""For results with only a max abs error (no relative error): bench inputs are standard normal and
attention's output is a convex combination of V rows, so an output that is zeros, garbage or
wrongly masked is off by O(1) (3.61 for the zeros stand-in on the H200), while bf16 / fp16 kernels
land near 0.01 and 8-bit SageAttention near 0.1 (tests/fixtures/bench/h200-device-bench*.json)."""


def tolerance(matrix: Matrix, backend: str) -> tuple[float, float]:
    """(relative error below which, cosine above which) a backend's output passes."""
    try:
        b = matrix.backend(backend)
    except KeyError:
        from dataclasses import fields  # noqa: PLC0415

        from attn_installer.matrix.model import Backend  # noqa: PLC0415

        defaults = {f.name: f.default for f in fields(Backend)}
        return float(defaults["verify_rel_tol"]), float(defaults["verify_min_cosine"])  # type: ignore[arg-type]
    return b.verify_rel_tol, b.verify_min_cosine


def _finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)


def _error_reasons(r: BackendResult, tol: float, min_cos: float) -> list[str]:
    if r.rel_err is None and r.cosine is None:
        if r.max_abs_err is None:
            return ["no error against the fp32 reference was measured"]
        if not _finite(r.max_abs_err) or r.max_abs_err > LEGACY_MAX_ABS_ERR:
            return [f"output differs from fp32 attention: max abs error {r.max_abs_err:.3g} "
                    f"(more than {LEGACY_MAX_ABS_ERR:g})"]
        return []
    rel, cos = r.rel_err, r.cosine
    if not (_finite(rel) and _finite(cos)) or rel >= tol or cos <= min_cos:  # type: ignore[operator]
        return [f"output differs from fp32 attention: rel err {_g(rel)} (tolerance {tol:g}), cosine {_g(cos)} "
                f"(at least {min_cos:g})"]
    return []


def _grad_reasons(r: BackendResult, tol: float, min_cos: float) -> list[str]:
    if r.fwdbwd is None:
        return []
    g = r.grads
    if g is None:
        legacy = r.rel_err is None and r.cosine is None
        return [] if legacy else ["forward + backward time without a gradient check"]
    if g.status != "ok":
        return [f"gradient check failed: {g.detail or g.status}"]
    bad = []
    for name in ("dq", "dk", "dv"):
        rel, cos = g.rel_err.get(name), g.cosine.get(name)
        if not (_finite(rel) and _finite(cos)) or rel >= 2 * tol or cos <= min_cos:  # type: ignore[operator]
            bad.append(f"{name} rel err {_g(rel)} cosine {_g(cos)}")
    if not bad:
        return []
    return [f"gradients differ from fp32 attention's: {', '.join(bad)} (tolerance rel err {2 * tol:g}, "
            f"cosine {min_cos:g})"]


def _speed_reasons(r: BackendResult, ceiling: Optional[float], why: str) -> list[str]:
    out = []
    for metric, t, tf in (("fwd", r.fwd, r.fwd_tflops), ("fwd+bwd", r.fwdbwd, r.fwdbwd_tflops)):
        if t is None:
            continue
        if not _finite(t.median) or t.median <= 0:
            out.append(f"{metric} time {t.median} ms is not a time")
            continue
        if ceiling is not None and tf is not None and (not _finite(tf) or tf > ceiling):
            out.append(f"{metric} {tf:.0f} TFLOP/s is above the {why} ({ceiling:g} TFLOP/s, matrices/gpu_peaks.toml): "
                       "the kernel cannot have done the work")
    return out


def _g(x: Optional[float]) -> str:
    return "none" if x is None else f"{x:.3g}"


def judge_result(r: BackendResult, matrix: Matrix, ceiling: Optional[float], why: str = "GPU's peak"
                 ) -> BackendResult:
    """The result, rejected with its reasons when a check fails; others unchanged."""
    if r.status != "ok":
        return r
    tol, min_cos = tolerance(matrix, r.backend)
    reasons = _error_reasons(r, tol, min_cos) + _grad_reasons(r, tol, min_cos) + _speed_reasons(r, ceiling, why)
    if not reasons:
        return r
    return replace(r, status="rejected", detail="; ".join(reasons), rejected=tuple(reasons))


def ceiling_for(report: BenchReport, matrix: Matrix) -> dict[str, Any]:
    """The throughput ceiling of the GPU the report was measured on, for its dtype."""
    gpu = str(report.env.get("gpu") or "")
    dtype = str(report.config.get("dtype") or report.env.get("dtype") or "bf16")
    peak = matrix.peak_for(gpu) if gpu else None
    if peak is None:
        return {"gpu": gpu or None, "dtype": dtype, "ceiling_tflops": None, "peak": None,
                "note": f"no peak known for {gpu or 'this GPU'} (matrices/gpu_peaks.toml): throughput not judged"}
    value, why = peak.ceiling(dtype)
    return {"gpu": gpu, "dtype": dtype, "ceiling_tflops": value, "peak": peak.name, "why": why,
            "confidence": peak.confidence, "source": peak.source}


def judge(report: BenchReport, matrix: Matrix) -> BenchReport:
    """Every result judged; the report carries the ceiling it used (or the note that there is none)."""
    j = ceiling_for(report, matrix)
    ceiling = j["ceiling_tflops"]
    why = str(j.get("why") or "GPU's peak")
    results = tuple(judge_result(r, matrix, ceiling, why) for r in report.results)
    rejected = [r.label for r in results if r.status == "rejected"]
    if rejected:
        j["rejected"] = rejected
    return replace(report, results=results, judgment=j)
