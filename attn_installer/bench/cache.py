"""The bench cache: a report is kept per machine, torch, backend builds, configuration and
measuring method; what `plan --measured` and `config --merge` take from it (judged, for the builds
installed now that passed verification, at the training's shape)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from attn_installer.bench.report import (
    METHOD_ID,
    SCHEMA_VERSION,
    BenchConfig,
    BenchReport,
    ranked,
    where,
)
from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.request import MeasuredSpeed

__all__ = ["cache_key", "cache_path", "find_measured", "load_cached", "machine_facts", "measured_speeds", "save_cached",
           "training_shape", "untrusted", "versioned"]

# --------------------------------------------------------------------------- cache


def versioned(matrix: Matrix) -> tuple[str, ...]:
    """Distributions whose versions key the cache: a new build of any of them is measured again."""
    dists = [d for b in matrix.backends if b.name in matrix.bench_order
             for d in (b.version_from or ((b.distribution,) if b.distribution else ()))]
    return tuple(dict.fromkeys(("torch", "triton", *dists)))


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
