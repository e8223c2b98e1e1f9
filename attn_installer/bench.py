"""`attn-install bench`: measure the installed attention backends on this GPU, cache the result,
and hand measured speeds to the plan.

The measuring code is target/attn_bench.py, run in the target interpreter (the user's torch env)
as ``python -I`` from an empty temporary directory, with a timeout, through the runner; how each
backend is called comes from matrices/backends.toml (``call``). Everything else here is pure:
model-config parsing, output parsing, the cache key, the ranking. The table is in console.py, the
plot in plot.py.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from attn_installer import target
from attn_installer.errors import BenchError, UsageError
from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.modelconfig import Shape
from attn_installer.request import MeasuredSpeed
from attn_installer.runner import Runner

__all__ = [
    "BackendResult",
    "BenchConfig",
    "BenchReport",
    "bench_shape",
    "cache_key",
    "cache_path",
    "find_measured",
    "training_shape",
    "load_cached",
    "measured_speeds",
    "parse_backends",
    "parse_bench_output",
    "ranked",
    "run_bench",
    "save_cached",
    "untrusted",
]

METHOD_ID = hashlib.sha256(b"".join((target.DIR / f).read_bytes() for f in ("attn_bench.py", "attn_calls.py"))
                           ).hexdigest()[:12]
"""Part of the cache key: a changed measuring method never reuses old numbers."""
SCHEMA_VERSION = 1
BENCH_TIMEOUT = 600.0


def parse_backends(values: Sequence[str], matrix: Matrix) -> tuple[str, ...]:
    """``--backends sdpa,fa3 --backends flex`` -> canonical names, in order, without repeats."""
    known = matrix.bench_order
    aliases = matrix.bench_aliases()
    names: list[str] = []
    for v in values:
        for part in v.split(","):
            p = part.strip()
            if not p:
                continue
            p = aliases.get(p, p)
            if p not in known:
                raise UsageError(f"--backends: unknown backend {part.strip()!r}: choose from {', '.join(known)}")
            if p not in names:
                names.append(p)
    return tuple(names) or known


def bench_shape(model_config: Optional[Path], *, head_dim: Optional[int] = None, heads: Optional[int] = None,
                kv_heads: Optional[int] = None, seq_len: Optional[int] = None, batch: Optional[int] = None) -> Shape:
    """The shape to measure: defaults, then a model's config.json, then the options given. --heads
    alone that the default 8 KV heads do not divide means MHA."""
    from attn_installer.modelconfig import shape_from_model_config  # noqa: PLC0415

    shape = Shape()
    if model_config is not None:
        shape = replace(shape, source=str(model_config), **shape_from_model_config(model_config))
    given: dict[str, Any] = {"head_dim": head_dim, "heads": heads, "kv_heads": kv_heads, "seq_len": seq_len,
                             "batch": batch}
    shape = replace(shape, **{k: v for k, v in given.items() if v is not None})
    if model_config is None and heads is not None and kv_heads is None and heads % shape.kv_heads:
        shape = replace(shape, kv_heads=heads)
    if shape.heads % shape.kv_heads:
        raise UsageError(f"--kv-heads: {shape.kv_heads} does not divide --heads {shape.heads}")
    return shape


def versioned(matrix: Matrix) -> tuple[str, ...]:
    """Distributions whose versions key the cache: a new build of any of them is measured again."""
    dists = [d for b in matrix.backends if b.name in matrix.bench_order
             for d in (b.version_from or ((b.distribution,) if b.distribution else ()))]
    return tuple(dict.fromkeys(("torch", "triton", *dists)))


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


# --------------------------------------------------------------------------- cache


def machine_facts(facts: Facts, matrix: Matrix, builds: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """What a measurement depends on besides its shape: GPUs, driver, torch and backend versions,
    and (when known) the digest of each backend's installed build (target/attn_builds.py)."""
    out: dict[str, Any] = {
        "gpus": [g.name for g in facts.gpus],
        "driver": facts.driver.version if facts.driver else None,
        "torch": facts.torch.version if facts.torch else None,
        "packages": {d: facts.packages[d] for d in versioned(matrix) if d in facts.packages},
    }
    if builds is not None:
        out["builds"] = dict(sorted(builds.items()))
    return out


def cache_key(facts: Facts, matrix: Matrix, config: BenchConfig, builds: Optional[Mapping[str, str]] = None) -> str:
    """The cache entry of a measurement: a reinstall or rebuild of any backend (a new build digest)
    is measured again, not read back."""
    blob = json.dumps({"machine": machine_facts(facts, matrix, builds), "config": config.to_dict(),
                       "snippet": METHOD_ID}, sort_keys=True)
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
    from attn_installer.files import write_atomic  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report.to_dict(), indent=1, sort_keys=True) + "\n")


def find_measured(cache_dir: Path, facts: Facts, matrix: Matrix, workload: str,
                  shape: Optional[Mapping[str, Any]] = None) -> Optional[BenchReport]:
    """The newest cached report measured on this machine (same GPUs, driver, torch and backend
    versions) with an accepted number for the workload's metric, judged; None when there is none.
    *shape*: only a report measured at these config values (head_dim, heads, kv_heads, seq_len,
    dtype, packed: a model's shape, :func:`training_shape`). Whether each backend's build is still
    the one measured is :func:`untrusted`'s question."""
    from attn_installer.judge import judge  # noqa: PLC0415

    metric = "fwd" if workload == "inference" else "fwd+bwd"
    want = machine_facts(facts, matrix)
    best: Optional[BenchReport] = None
    folder = Path(cache_dir) / "bench"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        rep = load_cached(path)
        if rep is None:
            continue
        rep = judge(rep, matrix)
        if {k: v for k, v in rep.machine.items() if k != "builds"} != want or not rep.measured:
            continue
        if shape is not None and any(rep.config.get(k) != v for k, v in shape.items()):
            continue
        if not any(r.variant is None and r.ms(metric) is not None for r in rep.results):
            continue
        if best is None or (rep.created or "") > (best.created or ""):
            best = rep
    return best


def training_shape(model: Any, seq_len: Optional[int], dtype: Optional[str], packed: bool) -> dict[str, Any]:
    """The bench config values a measurement must have to judge this model's training: its head
    dim (Q/K), heads and KV heads, the training's sequence_len (else the model's positions capped
    at SEQ_CAP, as `bench --model-config` measures), the dtype and packing when known."""
    from attn_installer.modelconfig import SEQ_CAP  # noqa: PLC0415

    seq = seq_len or min(model.max_positions or SEQ_CAP, SEQ_CAP)
    out: dict[str, Any] = {"head_dim": model.head_dim, "heads": model.heads, "kv_heads": model.kv_heads,
                           "seq_len": seq}
    if dtype:
        out["dtype"] = dtype
    if packed:
        out["packed"] = True
    return out


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


def untrusted(report: BenchReport, builds_now: Mapping[str, str], verified: Mapping[tuple[str, str], str]
              ) -> dict[str, str]:
    """backend -> why its measurement must not rank (`plan --measured`): it was measured without a
    build digest, the build installed now is another one (reinstalled, rebuilt), or that build has
    no passed verification on the GPU measured. *verified*: (backend, build) -> the status of its
    verification record on that GPU ("passed", "failed: ...")."""
    gpu = report.env.get("gpu") or "this GPU"
    out: dict[str, str] = {}
    for r in report.results:
        if r.variant is not None or r.status != "ok":
            continue
        now = builds_now.get(r.backend)
        if r.build is None:
            out[r.backend] = "measured without a build digest (an older bench): `attn-install bench --rerun`"
        elif now is None:
            out[r.backend] = "which build is installed now could not be read"
        elif now != r.build:
            out[r.backend] = (f"the installed build changed since it was measured (build {r.build} measured, "
                              f"{now} installed): `attn-install bench` again")
        else:
            status = verified.get((r.backend, r.build))
            if status != "passed":
                out[r.backend] = (f"build {r.build} has no passed verification on {gpu}"
                                  + (f" ({status})" if status else "") + f": `attn-install verify {r.backend}`")
    return out


def measured_speeds(report: BenchReport, workload: str, matrix: Matrix, vendor: Optional[str] = None,
                    exclude: Optional[Mapping[str, str]] = None) -> tuple[MeasuredSpeed, ...]:
    """The plan's input: one speed per backend for the workload's metric (fwd for inference,
    fwd+bwd otherwise; SageAttention has no fwd+bwd, so it never ranks for training), from the
    report judged (a rejected result never ranks) less the backends in *exclude* (:func:`untrusted`).
    On AMD a measurement counts for the backend measured under its name (bench_as: the ROCm
    flash_attn builds are measured as flash_attention_2)."""
    from attn_installer.judge import judge  # noqa: PLC0415

    report = judge(report, matrix)
    metric = "fwd" if workload == "inference" else "fwd+bwd"
    at = where(report)
    on_amd: dict[str, str] = {}
    for bk in matrix.backends:  # the first ROCm backend measured under a name takes its measurement
        if bk.bench_as and bk.vendor == "amd":
            on_amd.setdefault(bk.bench_as, bk.name)
    out = []
    for r in ranked(report, metric):
        if exclude and r.backend in exclude:
            continue
        name = on_amd.get(r.backend, r.backend) if vendor == "amd" else r.backend
        ms = r.ms(metric)
        assert ms is not None
        out.append(MeasuredSpeed(backend=name, ms=ms, metric=metric, where=at))
    return tuple(out)


# --------------------------------------------------------------------------- running


def run_bench(runner: Runner, python: str, config: BenchConfig, matrix: Matrix, *,
              timeout: float = BENCH_TIMEOUT) -> BenchReport:
    """Measure in a fresh ``python -I`` from an empty temporary directory (a source checkout in
    the working directory cannot shadow the installed backends)."""
    from attn_installer.builds import builds_table  # noqa: PLC0415
    from attn_installer.judge import judge  # noqa: PLC0415
    from attn_installer.verify import call_table  # noqa: PLC0415

    by_name = {b.name: b for b in matrix.backends}
    asked = [by_name[n] for n in config.backends if n in by_name]
    program = {**config.to_dict(), "calls": {b.name: call_table(b) for b in asked},
               "distributions": {b.name: list(b.version_from or ((b.distribution,) if b.distribution else ()))
                                 for b in asked},
               "builds": builds_table(matrix, (b.name for b in asked))}
    arg = json.dumps(program, sort_keys=True)
    with tempfile.TemporaryDirectory(prefix="attn-install-bench-") as tmp:
        done = runner.run(target.argv(python, "attn_bench", arg), timeout=timeout, cwd=Path(tmp))
    report = parse_bench_output(done.stdout, done.stderr, done.returncode, done.timed_out, timeout)
    return judge(replace(report, config=config.to_dict()), matrix)


def require_ok(report: BenchReport) -> None:
    """Raise BenchError when the measuring process itself failed (not for no GPU / no torch)."""
    if report.status in ("crashed", "error"):
        raise BenchError(f"bench failed: {report.detail}")
