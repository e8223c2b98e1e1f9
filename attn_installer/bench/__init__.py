"""`attn-install bench`: measure the installed attention backends on this GPU, cache the result,
and hand measured speeds to the plan.

The measuring code is target/attn_bench.py, run in the target interpreter (the user's torch env)
as ``python -I`` from an empty temporary directory, with a timeout, through the runner; how each
backend is called comes from matrices/backends.toml (``call``). Everything else here is pure:
model-config parsing, output parsing, the cache key, the ranking. The table is in console.py, the
plot in plot.py.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

from attn_installer import target
from attn_installer.bench.cache import (
    cache_key,
    cache_path,
    find_measured,
    load_cached,
    machine_facts,
    measured_speeds,
    save_cached,
    training_shape,
    untrusted,
    versioned,
)
from attn_installer.bench.report import (
    BENCH_TIMEOUT,
    METHOD_ID,
    SCHEMA_VERSION,
    BackendResult,
    BenchConfig,
    BenchReport,
    GradCheck,
    Timing,
    parse_bench_output,
    ranked,
    where,
)
from attn_installer.errors import BenchError, UsageError
from attn_installer.matrix import Matrix
from attn_installer.modelconfig import Shape
from attn_installer.runner import Runner

__all__ = [
    "BENCH_TIMEOUT",
    "METHOD_ID",
    "SCHEMA_VERSION",
    "BackendResult",
    "BenchConfig",
    "BenchReport",
    "GradCheck",
    "Timing",
    "bench_shape",
    "cache_key",
    "cache_path",
    "find_measured",
    "load_cached",
    "machine_facts",
    "measured_speeds",
    "parse_backends",
    "parse_bench_output",
    "ranked",
    "require_ok",
    "run_bench",
    "save_cached",
    "training_shape",
    "untrusted",
    "versioned",
    "where",
]


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
