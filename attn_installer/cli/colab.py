"""`attn-install colab`: a ready Colab cell, or a one-cell notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from attn_installer.cli.app import App

__all__ = ["COMMANDS"]


@click.command()
@click.option("--notebook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.ipynb", help="Write a one-cell notebook (nbformat v4) instead of printing.")
@click.option("--spec", default=None, metavar="SPEC",
              help="What the cell pip-installs when attn-install is missing (default: attn-install; "
                   "a git+https:// URL or a wheel path work too).")
@click.pass_obj
def colab(app: App, notebook: Optional[Path], spec: Optional[str]) -> None:
    """Print a Colab cell that installs attn-install into the notebook's Python and runs --auto --yes."""
    from attn_installer.colab import DEFAULT_SPEC, colab_cell, notebook_json  # noqa: PLC0415

    cell = colab_cell(spec or DEFAULT_SPEC)
    if notebook is None:
        click.echo(cell, nl=False)
        return
    from attn_installer.files import write_atomic  # noqa: PLC0415

    write_atomic(notebook, notebook_json(cell))
    app.out(f"wrote {notebook}: one cell; open it in Colab (File > Upload notebook) and run it")


COMMANDS = (colab,)
