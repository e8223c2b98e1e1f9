"""The Colab cell: install attn-install into the notebook's own Python and run `--auto --yes`.

Pure text generation (no I/O): :func:`colab_cell` gives the cell's Python source and
:func:`notebook_json` a minimal nbformat v4 notebook holding it, written without nbformat.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["DEFAULT_SPEC", "colab_cell", "notebook_json"]

DEFAULT_SPEC: Final = "attn-install"
"""What the cell asks pip for: a PyPI name, ``git+https://...`` or a wheel path."""

_CELL: Final = '''\
# attn-install: probe this runtime, pick the attention backend that fits its GPU and torch, and
# write the axolotl config. It installs into Colab's own Python (no venv) and never installs,
# upgrades or downgrades torch (attn-install does not depend on it). Running it again reuses
# the installed attn-install and rewrites the same config.
import subprocess
import sys

SPEC = {spec}
CONFIG = {config}


def attn_install_run(*args):
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="")
    if proc.wait() != 0:
        raise RuntimeError(f"`python {{' '.join(args)}}` failed with exit code {{proc.returncode}}")


have = subprocess.run([sys.executable, "-m", "attn_installer", "--version"],
                      capture_output=True, text=True)
if have.returncode == 0:
    print(have.stdout.strip(), "is already installed")
else:
    attn_install_run("-m", "pip", "install", "--quiet", "--disable-pip-version-check", SPEC)
attn_install_run("-m", "attn_installer", "--auto", "--yes", "--output", CONFIG)
print(f"\\n{{CONFIG}}:")
with open(CONFIG) as fh:
    print(fh.read(), end="")
'''


def colab_cell(spec: str = DEFAULT_SPEC, config: str = "attn-install-config.yaml") -> str:
    """The cell's Python source; *spec* is what pip installs when attn-install is missing."""
    return _CELL.format(spec=repr(spec), config=repr(config))


def notebook_json(cell: str) -> str:
    """A one-cell nbformat 4.5 notebook (GPU runtime requested) holding *cell*."""
    nb: dict[str, Any] = {
        "cells": [{
            "cell_type": "code",
            "execution_count": None,
            "id": "attn-install",
            "metadata": {},
            "outputs": [],
            "source": cell.splitlines(keepends=True),
        }],
        "metadata": {
            "accelerator": "GPU",
            "colab": {"provenance": []},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1) + "\n"
