"""attn-install in an environment of its own works on the Python where torch is: two venvs made
from one base interpreter (so their executables resolve to the same binary), one holding a
stand-in torch; every command reports that one's torch and path."""

from __future__ import annotations

import json
import os
import sys
import venv
from pathlib import Path

import pytest

from tests.cli.conftest import T4_BANNER, T4_CSV, cli, fake_bin
from tests.conftest import validate

TORCH = "2.8.0+cu126"


def make_venv(path: Path, torch: bool) -> str:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    if torch:
        site = next((path / "lib").glob("python3.*")) / "site-packages"
        (site / "torch/share/cmake/Torch").mkdir(parents=True)
        (site / "torch/__init__.py").write_text(
            f"from . import version\n__version__ = {TORCH!r}\n"
            "class cuda:\n    @staticmethod\n    def is_available():\n        return False\n")
        (site / "torch/version.py").write_text(f"__version__ = {TORCH!r}\ncuda = '12.6'\nhip = None\n")
        (site / "torch/share/cmake/Torch/TorchConfig.cmake").write_text(
            'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")\n')
        info = site / f"torch-{TORCH}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {TORCH}\n\n")
    return str(path / "bin" / "python")


@pytest.fixture
def two_venvs(tmp_path, allow_subprocess):
    """(env, with_torch python, without_torch python) on a simulated T4; the venvs share one base."""
    with_torch = make_venv(tmp_path / "with-torch", torch=True)
    without = make_venv(tmp_path / "no-torch", torch=False)
    assert Path(with_torch).resolve() == Path(without).resolve()  # the case the old probe got wrong
    (tmp_path / "t4.csv").write_text(T4_CSV)
    (tmp_path / "banner.txt").write_text(T4_BANNER)
    bindir = fake_bin(tmp_path, "nvidia-smi", f"""
case "$1" in
  --query-gpu=*) cat {tmp_path}/t4.csv ;;
  -q) exit 9 ;;
  *) cat {tmp_path}/banner.txt ;;
esac
""")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    env.update({"PATH": f"{bindir}:/usr/bin:/bin", "ATTN_INSTALL_NO_NVML": "1", "HOME": str(tmp_path)})
    return env, with_torch, without


def test_every_command_honours_python(two_venvs, tmp_path):
    env, with_torch, _without = two_venvs
    probe = cli(env, "probe", "--json", "--python", with_torch)
    assert probe.returncode == 0, probe.stderr
    facts = json.loads(probe.stdout)
    validate(facts, "facts.schema.json")
    assert facts["python"]["executable"] == with_torch and facts["torch"]["version"] == TORCH
    assert facts["python"]["prefix"] == str(tmp_path / "with-torch") and facts["python"]["chosen"] == "--python"
    plan = json.loads(cli(env, "plan", "--json", "--python", with_torch).stdout)
    assert plan["recommended"] == "xformers"
    (step,) = next(b for b in plan["backends"] if b["name"] == "xformers")["steps"]
    assert step["argv"][0] == with_torch
    auto = cli(env, "--auto", "--dry-run", "--python", with_torch, cwd=tmp_path)
    assert auto.returncode == 0 and "python   3." in auto.stdout and with_torch in auto.stdout
    verify = cli(env, "verify", "sdpa", "--python", with_torch)
    assert verify.returncode == 0 and verify.stdout.strip() == "sdpa: skipped: no GPU", verify.stderr
    bench = cli(env, "bench", "--python", with_torch, "--json")
    doc = json.loads(bench.stdout)
    assert bench.returncode == 0 and doc["status"] == "no_gpu" and doc["env"]["python"] == with_torch


def test_discovery_finds_torch_on_path_and_in_the_active_env(two_venvs):
    env, with_torch, without = two_venvs
    on_path = dict(env, PATH=f"{Path(with_torch).parent}:{env['PATH']}")
    facts = json.loads(cli(on_path, "probe", "--json").stdout)
    # found as python3 on PATH: the executable is that name in the venv's bin
    assert Path(facts["python"]["executable"]).parent == Path(with_torch).parent
    assert facts["torch"]["version"] == TORCH
    assert facts["python"]["chosen"].startswith("python3 on PATH") and facts["sources"]["python"].endswith("has torch")
    active = dict(env, VIRTUAL_ENV=str(Path(with_torch).parent.parent))
    facts = json.loads(cli(active, "probe", "--json").stdout)
    assert facts["python"]["executable"] == with_torch and facts["python"]["chosen"].startswith("$VIRTUAL_ENV")
    # an active environment without torch is the target when no Python has torch (its plan then says so)
    bare = dict(env, VIRTUAL_ENV=str(Path(without).parent.parent))
    facts = json.loads(cli(bare, "probe", "--json").stdout)
    assert facts["python"]["executable"] == without and facts["torch"] is None
    assert facts["python"]["chosen"].startswith("the active environment (no Python with torch found")


def test_the_running_interpreter_wins_when_it_has_torch(two_venvs, tmp_path):
    env, with_torch, _without = two_venvs
    from tests.cli.conftest import fake_torch

    here = dict(env, PYTHONPATH=str(fake_torch(tmp_path / "own")), PATH=f"{Path(with_torch).parent}:{env['PATH']}")
    facts = json.loads(cli(here, "probe", "--json").stdout)
    assert facts["python"]["executable"] == sys.executable
    assert facts["python"]["chosen"] == "the interpreter running attn-install has torch"


def test_a_python_that_cannot_run_is_one_line(two_venvs):
    env, _with_torch, _without = two_venvs
    r = cli(env, "probe", "--python", "/no/such/python3")
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    assert "--python /no/such/python3: cannot run it" in r.stderr
