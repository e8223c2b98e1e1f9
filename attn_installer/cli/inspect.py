"""`attn-install probe`, `plan` and `config`: what the machine has, what fits, the config keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import DEFAULT_CONFIG, plan_options, python_option
from attn_installer.cli.training import TrainingOptions, training_options, training_request
from attn_installer.errors import NoViableBackendError, UsageError

if TYPE_CHECKING:
    from attn_installer.facts import Facts
    from attn_installer.plan.model import Plan
    from attn_installer.request import Request
    from attn_installer.trainconfig import TrainingConfig

__all__ = ["COMMANDS", "choice_lines", "make_plan", "merge_into"]


def make_plan(app: App, facts: Facts, request: Request, measured: bool = False) -> Plan:
    """The plan for *facts* (ranked by the cached bench when *measured*: at the training's model
    shape when the request has one); its steps run with the probed interpreter."""
    from dataclasses import replace  # noqa: PLC0415

    from attn_installer.plan import plan_for  # noqa: PLC0415
    from attn_installer.request import Target  # noqa: PLC0415

    speeds = app.measured(facts, request.workload, quiet=False, training=request.training) if measured else ()
    return plan_for(facts, app.matrix(), replace(request, measured=speeds or request.measured),
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
@training_options
@click.pass_obj
def plan(app: App, facts_file: Optional[Path], as_json: bool, python: Optional[str], verbose: bool,
         request: Request, measured: bool, training: TrainingOptions) -> None:
    """Which backends fit, why or why not, and the exact steps for each."""
    facts = app.facts(facts_file, python)
    request, _ = training_request(app, request, training, facts=facts if facts_file is None else None)
    p = make_plan(app, facts, request, measured)
    if as_json:
        app.out(json.dumps(p.to_dict(), indent=2))
    else:
        from attn_installer.console import render_plan  # noqa: PLC0415

        app.out(render_plan(p, verbose=verbose))
    if request.backend is not None and p.recommended is None:
        reasons = "; ".join(p.backend(request.backend).reason_texts)
        raise NoViableBackendError(f"{request.backend} does not fit this machine: {reasons}")
    if p.choice is not None and p.choice.packing == "blocked":
        raise NoViableBackendError(p.choice.packing_reason)


@click.command()
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True,
              help="Write attn-install's own fragment here (an existing file it did not write is refused: --merge "
                   "edits that, --force replaces it keeping a backup).")
@click.option("--merge", "merge", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="EXISTING.yaml",
              help="Update this axolotl config in place, planned from it (backup FILE.bak, diff printed) "
                   "instead of -o.")
@click.option("--force", is_flag=True, help="-o: replace a file attn-install did not write (a backup is kept).")
@python_option()
@plan_options
@training_options
@click.pass_context
def config(ctx: click.Context, facts_file: Optional[Path], output: Path, merge: Optional[Path], force: bool,
           python: Optional[str], request: Request, measured: bool, training: TrainingOptions) -> None:
    """Write the recommended axolotl attention keys to a YAML file, or merge them into the user's
    config, planned from it (--measured: the measured winner)."""
    app: App = ctx.obj
    if merge is not None and ctx.get_parameter_source("output") != click.core.ParameterSource.DEFAULT:
        raise UsageError("--merge updates its file in place; drop --output")
    facts = app.facts(facts_file, python)
    request, tc = training_request(app, request, training, merge=merge,
                                   facts=facts if facts_file is None else None)
    p = make_plan(app, facts, request, measured)
    if p.choice is not None and p.choice.packing == "blocked":
        raise NoViableBackendError(p.choice.packing_reason + "; the file was not changed")
    if p.recommended is None and not (p.choice is not None and not p.choice.judged and p.choice.kept):
        raise NoViableBackendError("no backend fits: " + "; ".join(p.blockers or ["see `attn-install plan`"]))
    if merge is not None:
        merge_into(app, p, merge, facts, tc=tc, axolotl_version=request.axolotl_version)
        return
    if p.recommended is None:
        raise NoViableBackendError("no backend fits: " + "; ".join(p.blockers or ["see `attn-install plan`"]))
    from attn_installer import __version__  # noqa: PLC0415
    from attn_installer.install.run import write_config  # noqa: PLC0415

    for line in choice_lines(p):
        app.say(line)
    backup = write_config(app, p, output, __version__, force=force)
    app.out(f"wrote {output} ({p.recommended})" + (f"; the file it replaced is in {backup}" if backup else ""))


def choice_lines(p: Plan) -> list[str]:
    """What the plan did with the config's own choice, one line each."""
    c = p.choice
    if c is None:
        return []
    lines = [f"{'kept' if c.kept else 'changed'}: {r}" if i == 0 else f"  {r}" for i, r in enumerate(c.reasons)]
    if c.packing == "off":
        lines.append(f"packing: {c.packing_reason}")
    return lines


def _show(v: object) -> str:
    if v is None:
        return "(unset)"
    return str(v).lower() if isinstance(v, bool) else str(v)


def merge_into(app: App, p: Plan, path: Path, facts: Facts, *, tc: Optional[TrainingConfig] = None,
               axolotl_version: Optional[str] = None, dry_run: bool = False, notes: bool = True) -> None:
    """Merge the plan's choice into the user's config *path* (read again when *tc* is not given) and
    say every key changed and why; *dry_run*: the diff only, nothing written; *notes*: also say what
    was decided without a change (--auto has said it with the plan)."""
    from attn_installer.axolotl import merge_edits  # noqa: PLC0415
    from attn_installer.configfile import merge_file, preview_merge  # noqa: PLC0415
    from attn_installer.trainconfig import read_training_config  # noqa: PLC0415

    if tc is None:
        tc = read_training_config(path, app.matrix())
    edits = merge_edits(p, tc, facts, app.matrix(), axolotl_version)
    said = set(edits.why.values())
    for i, n in enumerate(edits.notes if notes else ()):
        if n in said:
            continue  # the key it changed says it, below
        if i == 0 and p.choice is not None:
            app.out(f"{'kept' if p.choice.kept else 'changed'}: {n}")
        else:
            app.out(f"  {n}")
    if dry_run:
        out = preview_merge(path, edits.set, edits.remove, edits.comments)
    else:
        out = merge_file(path, edits.set, edits.remove, edits.comments)
    if not out.diff:
        app.out(f"{path}: nothing to change")
        return
    click.echo(out.diff, nl=False)
    app.out(f"{'would change' if dry_run else 'changed'} in {path}:")
    for k in (*out.result.changed, *out.result.removed):
        after = "removed" if k in out.result.removed else _show(edits.set.get(k))
        before = _show(tc.data[k]) if k in tc.data and tc.data[k] is not None else \
            "null" if k in tc.data else "(unset)"
        app.out(f"  {k}: {before} -> {after}: {edits.why.get(k, '')}")
    if dry_run:
        app.out(f"dry run: {path} was not changed")
    else:
        app.out(f"updated {path}; the original is in {out.backup}")
    if p.runtime_env:
        app.out("the backend needs at run time: " + " ".join(f"{k}={v}" for k, v in p.runtime_env.items()))


COMMANDS = (probe, plan, config)
