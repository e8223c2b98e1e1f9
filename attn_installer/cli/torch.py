"""`attn-install torch`: the exact torch build for this machine, as one pip command line."""

from __future__ import annotations

import json
from typing import Optional

import click

from attn_installer.cli.app import App
from attn_installer.cli.options import python_option

__all__ = ["COMMANDS"]

INSTALL_TIMEOUT = 3600.0


@click.command("torch")
@click.option("--json", "as_json", is_flag=True, help="Print the choice (or why none fits) as JSON.")
@click.option("--yes", "-y", is_flag=True,
              help="Install it, into an environment that has no torch (an installed torch is never replaced).")
@python_option("The environment it is for (and --yes installs into).")
@click.option("--pytorch-index", "pytorch_index", default=None, metavar="URL",
              help="A mirror of download.pytorch.org/whl [env var: ATTN_INSTALL_PYTORCH_INDEX].")
@click.pass_obj
def torch_cmd(app: App, as_json: bool, yes: bool, python: Optional[str], pytorch_index: Optional[str]) -> None:
    """The torch build that fits this machine's GPUs, driver and Python, as one pip command line."""
    from attn_installer.errors import InstallError, NoViableBackendError  # noqa: PLC0415
    from attn_installer.torchpick import TorchChoice, choose_torch  # noqa: PLC0415

    if pytorch_index:
        click.get_current_context().meta["attn_install.pytorch_index"] = pytorch_index
    facts = app.probe(python)
    choice = choose_torch(facts, app.matrix(), app.torch_index_template())
    if as_json:
        doc: dict[str, object] = {"installed": facts.torch.version if facts.torch else None}
        if isinstance(choice, TorchChoice):
            doc.update(version=choice.version, flavour=choice.flavour, index_url=choice.index_url,
                       argv=list(choice.argv), reason=choice.reason)
        else:
            doc.update(problem=choice.text)
        app.out(json.dumps(doc, indent=2))
    elif isinstance(choice, TorchChoice):
        app.say(f"{choice.version}+{choice.flavour}: {choice.reason}")
        app.out(choice.command)
    if not isinstance(choice, TorchChoice):
        raise NoViableBackendError(choice.text)
    if facts.torch is not None:
        note = f"torch {facts.torch.version} is already installed for {facts.python.executable}"
        if yes:
            raise InstallError(f"{note}; attn-install never replaces a torch (use a new environment, "
                               "or --python one without torch)")
        app.say(note + ": the command above is for a new environment")
        return
    if not yes:
        return
    from attn_installer.paths import run_id  # noqa: PLC0415

    runner = app.runner(app.paths.checked().log_file(run_id(), "torch"))
    app.say(f"installing torch {choice.version}+{choice.flavour} into {facts.python.executable} ...")
    done = runner.run(choice.argv, timeout=INSTALL_TIMEOUT, on_line=lambda line: None)
    if not done.ok:
        raise InstallError(f"`{choice.command}` failed (exit {done.returncode}): {done.last_line}")
    app.forget_probe()  # the environment changed: read it again
    after = app.probe(python)
    got = after.torch.version if after.torch else None
    if got is None:
        raise InstallError(f"`{choice.command}` ran but torch is not there for {facts.python.executable}")
    app.say(f"installed torch {got} into {after.python.executable}")


COMMANDS = (torch_cmd,)
