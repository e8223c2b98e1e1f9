"""The `attn-install` command line: options in, output out; the only place that exits.

One module per group of commands (inspect: probe / plan / config; install: install / build /
download / --auto; verify; bench; colab); each builds a typed request and hands it to the package
that does the work. Errors raised as AttnInstallError print one line and exit with their code;
anything else is a bug and shows a traceback only with --debug (or ATTN_INSTALL_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

from attn_installer import __version__
from attn_installer.cli.app import App
from attn_installer.cli.options import DEFAULT_CONFIG, plan_options
from attn_installer.cli.training import training_options
from attn_installer.errors import INTERNAL_ERROR, AttnInstallError
from attn_installer.stops import Stopped, describe, install_handlers, restore_handlers

__all__ = ["cli", "main"]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attn-install")
@click.option("--auto", is_flag=True,
              help="Probe, plan, install the recommended backend, verify it, write the axolotl config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing anything.")
@click.option("--dry-run", is_flag=True, help="With --auto: print every step, change nothing.")
@click.option("--debug", is_flag=True, envvar="ATTN_INSTALL_DEBUG", help="Show tracebacks.")
@click.option("--python", "python", default=None, metavar="PATH",
              help="Target this interpreter's environment (default: the one running attn-install).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="Where --auto writes the config.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --auto: install only from this folder of wheels.")
@click.option("--offline", is_flag=True, help="With --auto: never touch the network (wheelhouse or cache only).")
@click.option("--installer", type=click.Choice(["pip", "uv"]), default="pip", show_default=True)
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --auto: write a JSON report of facts, plan, steps, verification.")
@click.option("--merge", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="EXISTING.yaml",
              help="With --auto: plan from this axolotl config and merge the installed backend's keys into it "
                   "(instead of -o).")
@click.option("--force", is_flag=True, help="With --auto: -o may replace a file attn-install did not write "
                                            "(a backup is kept).")
@plan_options
@training_options
@click.pass_context
def cli(ctx: click.Context, auto: bool, yes: bool, dry_run: bool, debug: bool, python: Optional[str],
        output: Path, wheelhouse: Optional[Path], offline: bool, installer: str, report_file: Optional[Path],
        merge: Optional[Path], force: bool, request: Any, measured: bool, training: Any) -> None:
    """Install the attention backend that fits this machine, verified, without touching torch.

    \b
    attn-install --auto            probe, plan, install, verify, write the axolotl config
    attn-install probe [--json]    what this machine has
    attn-install plan [--json]     which backends fit, why, and how each would be installed
    attn-install install [NAME]    install a backend (default: the recommended one), verified
    attn-install torch [--yes]     the torch build that fits this machine (where none is installed)
    attn-install colab             a ready Colab cell
    """
    if not isinstance(ctx.obj, App):
        ctx.obj = App(os.environ)
    if ctx.invoked_subcommand is not None:
        return
    if not auto:
        click.echo(ctx.get_help())
        return
    from attn_installer.cli.install import auto_run  # noqa: PLC0415

    if merge is not None and ctx.get_parameter_source("output") != click.core.ParameterSource.DEFAULT:
        from attn_installer.errors import UsageError  # noqa: PLC0415

        raise UsageError("--merge updates its file in place; drop --output")
    auto_run(ctx.obj, request, measured=measured, python=python, yes=yes, dry_run=dry_run, output=output,
             wheelhouse=wheelhouse, offline=offline, installer=installer, report_file=report_file,
             training=training, merge=merge, force=force)


def _register() -> None:
    from attn_installer.cli import bench, colab, inspect, install, torch, verify  # noqa: PLC0415

    for module in (inspect, torch, install, verify, bench, colab):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def _tell(text: str) -> None:
    """The last line, on stderr; a terminal that is gone (SIGHUP, a closed pipe) cannot make it fail."""
    try:
        click.echo(text, err=True)
    except (OSError, ValueError):
        pass


def main(argv: Optional[list[str]] = None, obj: Any = None) -> None:
    debug = os.environ.get("ATTN_INSTALL_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    handlers = install_handlers()
    try:
        _main(argv, obj, debug)
    finally:
        restore_handlers(handlers)


def _main(argv: Optional[list[str]], obj: Any, debug: bool) -> None:
    try:
        cli.main(args=argv, prog_name="attn-install", standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        _tell("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AttnInstallError as e:
        _tell(f"attn-install: error: {e}")
        if debug:
            raise
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _tell("interrupted")
        sys.exit(130)
    except Stopped as e:
        _tell(f"attn-install: stopped by {describe(e.signum)}")
        sys.exit(128 + e.signum)
    except Exception as e:  # noqa: BLE001 - the last resort for bugs
        if debug:
            raise
        _tell(f"attn-install: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(INTERNAL_ERROR)
    sys.exit(0)
