"""`attn-install install`, `build`, `download` and `--auto`: options in, an install request out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from attn_installer import __version__
from attn_installer.cli.app import App
from attn_installer.cli.options import DEFAULT_CONFIG, install_options, plan_options
from attn_installer.cli.training import TrainingOptions, training_options, training_request
from attn_installer.errors import NoViableBackendError, UsageError
from attn_installer.request import Request

__all__ = ["COMMANDS", "auto_run"]


def with_training(app: App, request: Request, training: Optional[TrainingOptions], python: Optional[str],
                  merge: Optional[Path]) -> Request:
    """The request planned from the user's training config (--axolotl-config / --merge), with this
    machine's checks of its choice; the facts are probed once (the install run reuses them)."""
    if training is None or (training.axolotl_config is None and training.model_config is None and merge is None):
        return training_request(app, request, training or TrainingOptions())[0]
    facts = app.probe(python)
    request, tc = training_request(app, request, training, merge=merge, facts=facts)
    if merge is not None:
        app.merge_options = {"tc": tc if training.axolotl_config in (None, merge) else None,
                             "axolotl_version": request.axolotl_version}
    return request


def auto_run(app: App, request: Request, *, measured: bool, python: Optional[str], yes: bool, dry_run: bool,
             output: Path, wheelhouse: Optional[Path], offline: bool, installer: str,
             report_file: Optional[Path], training: Optional[TrainingOptions] = None, merge: Optional[Path] = None,
             force: bool = False) -> None:
    """`attn-install --auto`: probe, plan (measured when a bench is cached), install, verify, config
    (-o, or merged into the user's --merge FILE)."""
    from attn_installer.install.run import InstallRequest, run_install  # noqa: PLC0415

    request = with_training(app, request, training, python, merge)
    names = (request.backend,) if request.backend else ()
    req = InstallRequest(names=names, request=request, python=python, installer=installer, wheelhouse=wheelhouse,
                         offline=offline, yes=yes, dry_run=dry_run, report_file=report_file, auto=True, output=output,
                         measured=measured, merge=merge, force=force)
    run_install(req, app, __version__)


@click.command()
@click.argument("backends", nargs=-1)
@install_options
@click.option("--auto", is_flag=True, help="Also write the recommended axolotl config (as `attn-install --auto`).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help="Where --auto writes the config.")
@click.option("--merge", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="EXISTING.yaml",
              help="With --auto: plan from this axolotl config and merge the installed backend's keys into it.")
@click.option("--force", is_flag=True, help="-o: replace a file attn-install did not write (a backup is kept).")
@plan_options
@training_options
@click.pass_obj
def install(app: App, backends: tuple[str, ...], dry_run: bool, python: Optional[str], installer: str,
            wheelhouse: Optional[Path], offline: bool, yes: bool, report_file: Optional[Path],
            source_dir: Optional[Path], no_verify: bool, lock_wait: float, auto: bool, output: Path,
            merge: Optional[Path], force: bool, request: Request, measured: bool, training: TrainingOptions) -> None:
    """Install BACKENDS (default: the recommended one, or the one the --axolotl-config selects when it
    fits), verify each, roll back on failure."""
    from attn_installer.install.run import InstallRequest, run_install  # noqa: PLC0415

    if merge is not None and not auto:
        raise UsageError("--merge writes the config after the install: give --auto too")
    request = with_training(app, request, training, python, merge)
    names = backends or ((request.backend,) if request.backend else ())
    req = InstallRequest(names=names, request=request, python=python, installer=installer,
                         wheelhouse=wheelhouse, offline=offline, source_dir=source_dir, dry_run=dry_run, yes=yes,
                         verify=not no_verify, lock_wait=lock_wait, report_file=report_file, auto=auto,
                         output=output if auto and merge is None else None, measured=measured, merge=merge,
                         force=force)
    run_install(req, app, __version__)


@click.command()
@click.argument("backends", nargs=-1)
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Leave the built wheel (and its build key) here for other nodes.")
@click.option("--python", "python", default=None, metavar="PATH")
@click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build from this checkout instead of cloning.")
@click.option("--lock-wait", type=float, default=600.0, show_default=True, metavar="SECONDS")
@click.option("--yes", "-y", is_flag=True)
@click.option("--dry-run", is_flag=True)
@plan_options
@click.pass_obj
def build(app: App, backends: tuple[str, ...], wheelhouse: Path, python: Optional[str], source_dir: Optional[Path],
          lock_wait: float, yes: bool, dry_run: bool, request: Request, measured: bool) -> None:
    """Build source backends into wheels in --wheelhouse (no install): build once, install everywhere."""
    from dataclasses import replace  # noqa: PLC0415

    from attn_installer.install.run import InstallRequest, run_install  # noqa: PLC0415

    names = backends or ((request.backend,) if request.backend else ())
    if not names:
        raise UsageError("name the backend to build, e.g. `attn-install build flash_attention_3 --wheelhouse DIR`")
    req = InstallRequest(names=names, request=replace(request, allow_source=True), python=python, source_dir=source_dir,
                         dry_run=dry_run, yes=True, verify=False, lock_wait=lock_wait, build_only=True,
                         export=wheelhouse)
    run_install(req, app, __version__)


@click.command()
@click.argument("backends", nargs=-1)
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), required=True,
              help="The facts (`attn-install probe --json`) of the machine that will install.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), required=True)
@plan_options
@click.pass_obj
def download(app: App, backends: tuple[str, ...], facts_file: Path, wheelhouse: Path, request: Request,
             measured: bool) -> None:
    """Fetch every wheel the plan for another (air-gapped) machine needs into --wheelhouse."""
    from dataclasses import replace  # noqa: PLC0415

    from attn_installer.airgap import download_for_plan  # noqa: PLC0415
    from attn_installer.cli.inspect import make_plan  # noqa: PLC0415

    facts = app.facts(facts_file, None)
    names = backends or ((request.backend,) if request.backend else ())
    p = make_plan(app, facts, replace(request, backend=names[0] if len(names) == 1 else None))
    chosen = names or ((p.recommended,) if p.recommended else ())
    if not chosen:
        raise NoViableBackendError("nothing to download: " + "; ".join(p.blockers or ["no backend fits"]))
    wheelhouse.mkdir(parents=True, exist_ok=True)
    from attn_installer.paths import run_id  # noqa: PLC0415

    runner = app.runner(app.paths.checked().log_file(run_id(), "download"))
    pinned = app.matrix().pinned
    for name in chosen:
        bp = p.backend(name)
        if not bp.viable:
            raise NoViableBackendError(f"{name} does not fit that machine: " + "; ".join(bp.reason_texts))
        for line in download_for_plan(bp, facts, wheelhouse, runner, app.say, pinned):
            app.out(line)
    app.out(f"wheelhouse ready: {wheelhouse} (install there with "
            f"`attn-install install --wheelhouse {wheelhouse} --auto`)")


@click.command()
@click.option("--python", "python", default=None, metavar="PATH",
              help="Recover this interpreter's environment (default: every unfinished journal the cache points to).")
@click.option("--forget", is_flag=True,
              help="Remove the journal and keep the environment as it is now (after you checked it).")
@click.option("--lock-wait", type=float, default=600.0, show_default=True, metavar="SECONDS")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: each journal, what happened, the result.")
@click.pass_obj
def recover(app: App, python: Optional[str], forget: bool, lock_wait: float, as_json: bool) -> None:
    """Finish what an interrupted install left: restore the environment from its journal."""
    from attn_installer.errors import InstallError  # noqa: PLC0415
    from attn_installer.install.envstate import read_state  # noqa: PLC0415
    from attn_installer.install.recover import as_json as dump  # noqa: PLC0415
    from attn_installer.install.recover import recover as run_recover  # noqa: PLC0415
    from attn_installer.paths import run_id  # noqa: PLC0415

    paths = app.paths.checked()
    runner = app.runner(paths.log_file(run_id(), "recover"))
    prefix = read_state(runner, python).prefix if python else None
    done = run_recover(paths.journal, paths.locks, runner, app.say, prefix=prefix, forget=forget,
                       lock_wait=lock_wait)
    if as_json:
        app.out(dump(done))
    elif not done:
        where = f"the environment of {python}" if python else f"the cache {paths.cache}"
        app.out(f"nothing to recover: no unfinished install journal for {where}")
    for d in done if not as_json else ():
        app.out(f"{d.journal}: {d.what}")
        app.out(f"  {d.state}")
    bad = [d for d in done if not d.exact and not d.result.get("forgotten")]
    if bad:
        raise InstallError(f"{len(bad)} environment(s) could not be restored exactly: "
                           + "; ".join(f"{d.journal}: {d.state}" for d in bad))


COMMANDS = (install, build, download, recover)
