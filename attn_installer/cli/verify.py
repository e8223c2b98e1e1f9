"""`attn-install verify`: real kernel calls of installed backends against fp32 attention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import python_option
from attn_installer.errors import NoViableBackendError, UsageError, VerifyError

if TYPE_CHECKING:
    from attn_installer.modelconfig import ModelAttention

__all__ = ["COMMANDS", "model_for_verify"]


def model_for_verify(app: App, model_config: Optional[Path], axolotl_config: Optional[Path]
                     ) -> tuple[Optional[ModelAttention], Optional[str]]:
    """The model whose head dims verification checks, and the dtype it trains in, from
    --model-config (a config.json) or --axolotl-config (the model it names; its bf16 / fp16)."""
    from attn_installer.modelconfig import axolotl_model, read_model_attention  # noqa: PLC0415

    if model_config is not None and axolotl_config is not None:
        raise UsageError("--model-config and --axolotl-config both name the model: give one")
    if model_config is not None:
        m = read_model_attention(model_config)
        return m, m.dtype
    if axolotl_config is not None:
        named, dtype, note = axolotl_model(axolotl_config, app.env)
        if note:
            app.say(f"{note}: verifying head dims 64 and 128")
        return named, dtype or (named.dtype if named else None)
    return None, None


@click.command()
@click.argument("backends", nargs=-1)
@python_option("Verify in this interpreter.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Default: the model's (--model-config / --axolotl-config), else the plan's (bf16; fp16 "
                   "before Ampere).")
@click.option("--head-dim", "head_dims", type=click.IntRange(min=8), multiple=True,
              help="Head dims to check (repeatable) [default: the model's, else 64 and 128].")
@click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check the head dims, head counts and dtype of this Hugging Face config.json.")
@click.option("--axolotl-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check the model this axolotl config trains (its base_model's config.json, found locally "
                   "or in the Hugging Face cache) in its dtype.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def verify(app: App, backends: tuple[str, ...], python: Optional[str], dtype: Optional[str],
           head_dims: tuple[int, ...], model_config: Optional[Path], axolotl_config: Optional[Path],
           as_json: bool) -> None:
    """Run real forwards + backwards of BACKENDS (default: the recommended one) against fp32 attention:
    GQA, MQA, causal and not, packed (varlen) documents, the model's head dims; one line per case."""
    from datetime import datetime, timezone  # noqa: PLC0415

    from attn_installer.cli.inspect import make_plan  # noqa: PLC0415
    from attn_installer.request import Request  # noqa: PLC0415
    from attn_installer.verify import (  # noqa: PLC0415
        DEFAULT_HEAD_DIMS,
        case_lines,
        math_only,
        save_record,
        verify_backend,
    )

    model, model_dtype = model_for_verify(app, model_config, axolotl_config)
    facts = app.probe(python)
    p = make_plan(app, facts, Request())
    names = backends or ((p.recommended,) if p.recommended else ())
    if not names:
        raise NoViableBackendError("nothing to verify: " + "; ".join(p.blockers or ["no backend fits"]))
    unknown = [n for n in names if n not in {b.name for b in p.backends}]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}: choose from " + ", ".join(b.name for b in p.backends))
    exe = facts.python.executable or "python"
    matrix = app.matrix()
    runner = app.runner()
    dt = dtype or model_dtype or p.dtype or "bf16"
    if head_dims:
        model = None
    dims = head_dims or DEFAULT_HEAD_DIMS
    what = model.label if model is not None else "head dims " + ", ".join(str(d) for d in dims)
    results = []
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name in names:
        app.say(f"verifying {name} ({dt}, {what}) ...")
        res = verify_backend(runner, exe, matrix.backend(name), dtype=dt, head_dims=dims, model=model,
                             math_only=math_only(facts.gpus, matrix))
        save_record(app.paths.checked().cache, res, created)
        results.append(res)
        if not as_json:
            app.out(f"{name}: {res.status}: {res.detail}")
            for line in case_lines(res):
                app.out(line)
            kernels = res.data.get("sdpa_kernels")
            if isinstance(kernels, dict):
                for k, v in kernels.items():
                    app.out(f"  sdpa {k}: {v}")
    if as_json:
        app.out(json.dumps([r.to_dict() for r in results], indent=2))
    failed = [r.backend for r in results if not r.ok]
    if failed:
        raise VerifyError(f"verification failed for {', '.join(failed)}")


COMMANDS = (verify,)
