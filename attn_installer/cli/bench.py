"""`attn-install bench`: measure the installed backends on this GPU, judge the numbers, cache them per
installed build; `plan --measured` ranks by the accepted ones of verified builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import WORKLOAD, python_option
from attn_installer.errors import UsageError

__all__ = ["COMMANDS"]


@click.command()
@click.option("--backends", "backends", multiple=True, metavar="NAMES",
              help="Comma-separated backends to measure (default: all): sdpa, flex_attention, xformers, "
                   "flash_attention_2/3/4, sage.")
@click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Take the shape from a Hugging Face config.json on disk.")
@click.option("--axolotl-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Measure what this axolotl config trains: its model's shape (base_model's config.json, local "
                   "or in the Hugging Face cache), sequence_len, sample_packing, precision and adapter; the shape "
                   "`config --merge` compares the config's choice at.")
@click.option("--head-dim", type=click.IntRange(min=1), default=None, help="[default: 128]")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="[default: 32]")
@click.option("--kv-heads", type=click.IntRange(min=1), default=None, help="[default: 8]")
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="[default: 4096]")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="[default: 4]")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Default: bf16 (fp16 before Ampere).")
@click.option("--causal/--no-causal", default=True, show_default=True)
@click.option("--packed", is_flag=True, help="Packed (varlen) documents where the backend supports it.")
@click.option("--workload", type=WORKLOAD, default="full", show_default=True,
              help="inference measures the forward only.")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds for the measuring process.")
@click.option("--no-cache", "--rerun", "rerun", is_flag=True, help="Measure again even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a TFLOP/s bar chart (PNG; needs attn-install[plot]).")
@python_option("Measure in this interpreter.")
@click.pass_obj
def bench(app: App, backends: tuple[str, ...], model_config: Optional[Path], axolotl_config: Optional[Path],
          head_dim: Optional[int],
          heads: Optional[int], kv_heads: Optional[int], seq_len: Optional[int], batch: Optional[int],
          dtype: Optional[str], causal: bool, packed: bool, workload: str, repeats: int, warmup: int,
          timeout: float, rerun: bool, as_json: bool, plot: Optional[Path], python: Optional[str]) -> None:
    """Measure the installed attention backends on GPU 0 (cached per GPU, driver, versions, shape)."""
    from dataclasses import replace  # noqa: PLC0415
    from datetime import datetime, timezone  # noqa: PLC0415

    from attn_installer import bench as b  # noqa: PLC0415
    from attn_installer.axolotl import bf16  # noqa: PLC0415
    from attn_installer.console import render_bench  # noqa: PLC0415

    matrix = app.matrix()
    names = b.parse_backends(backends, matrix)
    ctx = click.get_current_context()
    if axolotl_config is not None:
        from attn_installer.trainconfig import find_model, read_training_config  # noqa: PLC0415

        tc = read_training_config(axolotl_config, matrix)
        model, note = find_model(tc, app.env, model_config)
        if model is None:
            raise UsageError(f"{note}: the shape to measure is the model's")
        want = b.training_shape(model, tc.sequence_len, None, False)
        head_dim, heads, kv_heads = head_dim or want["head_dim"], heads or want["heads"], kv_heads or want["kv_heads"]
        seq_len = seq_len or want["seq_len"]
        model_config = None
        packed = packed or tc.packing
        dtype = dtype or tc.dtype
        if ctx.get_parameter_source("workload") == click.core.ParameterSource.DEFAULT:
            workload = tc.workload
        if model.head_dim != model.head_dim_v:
            app.say(f"note: {model.name} has Q/K head dim {model.head_dim} and V {model.head_dim_v}; bench measures "
                    f"head dim {head_dim} for Q, K and V")
    shape = b.bench_shape(model_config, head_dim=head_dim, heads=heads, kv_heads=kv_heads, seq_len=seq_len,
                          batch=batch)
    facts = app.probe(python)
    if dtype is None:
        dtype = "fp16" if bf16(facts) is False else "bf16"
    from attn_installer.builds import current_builds  # noqa: PLC0415
    from attn_installer.judge import judge  # noqa: PLC0415

    config = b.BenchConfig(shape=shape, dtype=dtype, causal=causal, packed=packed, workload=workload,
                           backends=names, warmup=warmup, repeats=repeats)
    exe = facts.python.executable or "python"
    builds = current_builds(app.runner(), exe, matrix, names)
    key = b.cache_key(facts, matrix, config, builds)
    path = b.cache_path(app.paths.checked().cache, key)
    report = None if rerun else b.load_cached(path)
    if report is not None:
        report = judge(report, matrix)
        app.say(f"cached result of {report.created} ({path}); --rerun measures again")
    else:
        app.say(f"measuring {', '.join(names)} at {shape.label} {dtype} (one process, timeout {timeout:g} s) ...")
        report = b.run_bench(app.runner(), exe, config, matrix, timeout=timeout)
        report = replace(report, machine=b.machine_facts(facts, matrix, builds), key=key,
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if report.measured and report.complete:
            b.save_cached(path, report)
    app.out(json.dumps(report.to_dict(), indent=2) if as_json else render_bench(report))
    b.require_ok(report)
    if plot is not None:
        if not report.measured:
            app.say(f"no plot written: nothing was measured ({report.detail})")
        else:
            from attn_installer.plot import write_plot  # noqa: PLC0415

            write_plot(report, plot)
            app.say(f"wrote {plot}")


COMMANDS = (bench,)
