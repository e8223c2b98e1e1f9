"""`attn-install verify`: real kernel calls of installed backends against fp32 attention."""

from __future__ import annotations

import json
from typing import Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import python_option
from attn_installer.errors import NoViableBackendError, UsageError, VerifyError

__all__ = ["COMMANDS"]


@click.command()
@click.argument("backends", nargs=-1)
@python_option("Verify in this interpreter.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Default: the dtype the plan's config uses (bf16; fp16 before Ampere).")
@click.option("--head-dim", type=int, default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def verify(app: App, backends: tuple[str, ...], python: Optional[str], dtype: Optional[str], head_dim: int,
           as_json: bool) -> None:
    """Run a real forward + backward of BACKENDS (default: the recommended one) against fp32 attention."""
    from attn_installer.cli.inspect import make_plan  # noqa: PLC0415
    from attn_installer.request import Request  # noqa: PLC0415
    from attn_installer.verify import verify_backend  # noqa: PLC0415

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
    results = []
    for name in names:
        app.say(f"verifying {name} ...")
        res = verify_backend(runner, exe, matrix.backend(name), dtype=dtype or p.dtype or "bf16", head_dim=head_dim)
        results.append(res)
        if not as_json:
            app.out(f"{name}: {res.status}: {res.detail}")
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
