"""`attn-install colab`: the cell installs into the notebook's own Python, once, and runs --auto --yes."""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
from click.testing import CliRunner

from attn_installer.cli import cli
from attn_installer.colab import DEFAULT_SPEC, colab_cell, notebook_json
from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib


def assigned(cell: str, name: str) -> object:
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(name)


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, "git+https://example.org/a/attn-install.git@v0.1.0",
                                  "/content/attn_install-0.1.0-py3-none-any.whl", "it's \"quoted\"\n"])
def test_cell_is_python_and_carries_the_spec(spec):
    cell = colab_cell(spec)
    compile(cell, "<colab cell>", "exec")
    assert assigned(cell, "SPEC") == spec
    assert "venv" not in cell.replace("(no venv)", "")
    assert "sys.executable" in cell and '"--auto", "--yes"' in cell


def test_attn_install_does_not_depend_on_torch():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.split()[0].lower().startswith(("torch", "triton"))]


class FakeProc:
    def __init__(self, argv, log, on_run):
        log.append(argv[1:])
        self.stdout = iter([f"ran {' '.join(argv[1:])}\n"])
        self.returncode = on_run(argv[1:])

    def wait(self):
        return self.returncode


def exec_cell(monkeypatch, tmp_path, installed: bool):
    """Run the cell's source in this process with subprocess faked; return (argv log, printed)."""
    log: list[list[str]] = []

    def on_run(args):
        if "--auto" in args:
            (tmp_path / args[args.index("--output") + 1]).write_text("attn_implementation: sdpa\n")
        return 0

    def fake_run(argv, **kw):
        log.append(argv[1:])
        return subprocess.CompletedProcess(argv, 0 if installed else 1, "attn-install, version 0.1.0\n", "")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: FakeProc(argv, log, on_run))
    exec(compile(colab_cell(), "<colab cell>", "exec"), {"__name__": "__main__"})  # noqa: S102
    return log


def test_cell_installs_once_then_reuses(monkeypatch, tmp_path, capsys):
    first = exec_cell(monkeypatch, tmp_path, installed=False)
    assert first == [["-m", "attn_installer", "--version"],
                     ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "attn-install"],
                     ["-m", "attn_installer", "--auto", "--yes", "--output", "attn-install-config.yaml"]]
    assert capsys.readouterr().out.endswith("\nattn-install-config.yaml:\nattn_implementation: sdpa\n")
    again = exec_cell(monkeypatch, tmp_path, installed=True)
    assert [a for a in again if "pip" in a] == []
    assert "attn-install, version 0.1.0 is already installed\n" in capsys.readouterr().out


def test_cli_prints_the_cell_and_writes_a_valid_notebook(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    r = CliRunner().invoke(cli, ["colab"])
    assert r.exit_code == 0 and r.output == colab_cell()
    nb_path = tmp_path / "attn.ipynb"
    r = CliRunner().invoke(cli, ["colab", "--notebook", str(nb_path), "--spec", "git+https://x/y.git"])
    assert r.exit_code == 0 and f"wrote {nb_path}" in r.output
    nb = nbformat.reads(nb_path.read_text(), as_version=4)
    nbformat.validate(nb)
    assert "".join(json.loads(nb_path.read_text())["cells"][0]["source"]) == colab_cell("git+https://x/y.git")
    assert notebook_json(colab_cell()) == notebook_json(colab_cell())


def test_readme_shows_the_cell_as_printed():
    assert f"```python\n{colab_cell()}```\n" in (REPO / "README.md").read_text()
