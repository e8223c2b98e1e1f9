"""`attn-install probe`, `plan` and `config`: what the machine has, what fits, the config keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import DEFAULT_CONFIG, plan_options, python_option
from attn_installer.errors import NoViableBackendError, UsageError

if TYPE_CHECKING:
    from attn_installer.facts import Facts
    from attn_installer.plan.model import Plan
    from attn_installer.request import Request

__all__ = ["COMMANDS", "make_plan"]


def make_plan(app: App, facts: Facts, request: Request, measured: bool = False) -> Plan:
    """The plan for *facts* (ranked by the cached bench when *measured*); its steps run with the
    probed interpreter."""
    from dataclasses import replace  # noqa: PLC0415

    from attn_installer.plan import plan_for  # noqa: PLC0415
    from attn_installer.request import Target  # noqa: PLC0415

    speeds = app.measured(facts, request.workload, quiet=False) if measured else ()
    return plan_for(facts, app.matrix(), replace(request, measured=speeds),
                    Target(cache_dir=str(app.paths.cache), torch_index=app.torch_index_template()))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print facts.schema.json (schema_version 1).")
@python_option("Probe this interpreter.")
@click.option("--torch-arch-list", is_flag=True,
              help="Also read torch.cuda.get_arch_list() (imports torch in a subprocess).")
@click.pass_obj
def probe(app: App, as_json: bool, python: Optional[str], torch_arch_list: bool) -> None:
    """Print the facts about this machine."""
    facts = app.probe(python, torch_arch_list)
    if as_json:
        app.out(facts.to_json())
    else:
        from attn_installer.console import render_facts  # noqa: PLC0415

        app.out(render_facts(facts))


@click.command()
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), default=None,
              help="Plan for the machine this facts file describes (from `probe --json`).")
@click.option("--json", "as_json", is_flag=True, help="Print plan.schema.json (schema_version 1).")
@python_option()
@click.option("--verbose", "-v", is_flag=True, help="Every reason for every backend.")
@plan_options
@click.pass_obj
def plan(app: App, facts_file: Optional[Path], as_json: bool, python: Optional[str], verbose: bool,
         request: Request, measured: bool) -> None:
    """Which backends fit, why or why not, and the exact steps for each."""
    facts = app.facts(facts_file, python)
    p = make_plan(app, facts, request, measured)
    if as_json:
        app.out(json.dumps(p.to_dict(), indent=2))
    else:
        from attn_installer.console import render_plan  # noqa: PLC0415

        app.out(render_plan(p, verbose=verbose))
    if request.backend is not None and p.recommended is None:
        reasons = "; ".join(p.backend(request.backend).reason_texts)
        raise NoViableBackendError(f"{request.backend} does not fit this machine: {reasons}")


@click.command()
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
@click.option("--merge", "merge", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="EXISTING.yaml",
              help="Update this axolotl config in place (backup FILE.bak, diff printed) instead of -o.")
@python_option()
@plan_options
@click.pass_context
def config(ctx: click.Context, facts_file: Optional[Path], output: Path, merge: Optional[Path],
           python: Optional[str], request: Request, measured: bool) -> None:
    """Write the recommended axolotl attention keys to a YAML file, or merge them into one
    (--measured: the measured winner)."""
    app: App = ctx.obj
    if merge is not None and ctx.get_parameter_source("output") != click.core.ParameterSource.DEFAULT:
        raise UsageError("--merge updates its file in place; drop --output")
    facts = app.facts(facts_file, python)
    p = make_plan(app, facts, request, measured)
    if p.recommended is None:
        raise NoViableBackendError("no backend fits: " + "; ".join(p.blockers or ["see `attn-install plan`"]))
    if merge is not None:
        _merge(app, p, merge)
        return
    from attn_installer import __version__  # noqa: PLC0415
    from attn_installer.install.run import write_config  # noqa: PLC0415

    write_config(app, p, output, __version__)
    app.out(f"wrote {output} ({p.recommended})")


def _merge(app: App, p: Plan, path: Path) -> None:
    from attn_installer.config import conflicting_keys, merge_file  # noqa: PLC0415

    remove = conflicting_keys(p.config, app.matrix().attention_keys)
    out = merge_file(path, p.config, remove, p.config_comments)
    if out.backup is None:
        app.out(f"{path} already holds the recommended keys for {p.recommended}: nothing changed")
        return
    click.echo(out.diff, nl=False)
    done = [f"set {', '.join(out.result.changed)}"] if out.result.changed else []
    done += [f"removed {', '.join(out.result.removed)}"] if out.result.removed else []
    app.out(f"updated {path} for {p.recommended} ({'; '.join(done)}); the original is in {out.backup}")
    if p.runtime_env:
        app.out("the backend needs at run time: " + " ".join(f"{k}={v}" for k, v in p.runtime_env.items()))


COMMANDS = (probe, plan, config)
