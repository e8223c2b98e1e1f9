"""Golden snapshots of what each command prints, as a user runs it, on a simulated Colab T4
(recorded nvidia-smi output, a stand-in torch 2.8.0+cu126): the plan table, `install --dry-run`,
`--auto --dry-run`, `config`. The host line of the facts (CPUs, memory, glibc of the machine
running the test), the packages line (what the test environment has) and temporary paths are
normalised. Rewrite with ``pytest --update-goldens``."""

from __future__ import annotations

import platform
import re
import sys

import pytest

from tests.cli.conftest import cli
from tests.conftest import FIXTURES

GOLDEN = FIXTURES / "golden" / "cli"

COMMANDS = {
    "plan": ("plan",),
    "plan-verbose-lora": ("plan", "-v", "--workload", "lora"),
    "install-dry-run": ("install", "--dry-run"),
    "install-fa2-dry-run": ("install", "flash_attention_2", "--dry-run"),
    "auto-dry-run": ("--auto", "--dry-run"),
    "config": ("config", "-o", "out.yaml"),
}


def normalise(text: str, tmp: str) -> str:
    text = text.replace(tmp, "<TMP>").replace(sys.executable, "<PYTHON>")
    text = text.replace(platform.python_version(), "<PYVER>")
    text = re.sub(r"^packages .*$", "packages <normalised>", text, flags=re.M)  # the test env's own
    return re.sub(r"^host .*$", "host     <normalised>", text, flags=re.M)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_output_golden(name, colab_t4, tmp_path, update_goldens):
    r = cli(colab_t4, *COMMANDS[name], cwd=tmp_path)
    got = f"exit {r.returncode}\n--- stdout\n{normalise(r.stdout, str(tmp_path))}--- stderr\n" \
          f"{normalise(r.stderr, str(tmp_path))}"
    path = GOLDEN / f"{name}.txt"
    if update_goldens:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
        return
    assert path.is_file(), f"no golden {path.name}: run pytest --update-goldens"
    assert got == path.read_text(), f"{path.name} changed: run `pytest --update-goldens` and read the diff"
