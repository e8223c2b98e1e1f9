"""install.sh without a network or a real install: a fake interpreter and --dry-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import fake_bin
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # real pip, venvs, git and loopback servers

SCRIPT = (REPO / "install.sh").read_text()


def fake_python(tmp_path, version=(3, 11), pip=True, installed=None):
    """A `python` that answers install.sh's questions: version check, pip, attn-install --version."""
    ok = "0" if version >= (3, 9) else "1"
    have = f'echo "attn-install, version {installed}"; exit 0' if installed else "exit 1"
    return fake_bin(tmp_path, "fakepy", f"""
case "$1 $2 $3" in
  "-V  ") echo "Python {version[0]}.{version[1]}.0" ;;
  "-c "*) exit {ok} ;;
  "-m pip --version") {"exit 0" if pip else "exit 1"} ;;
  "-I -m attn_installer") {have} ;;
  *) echo "fakepy $*"; exit 0 ;;
esac
""") / "fakepy"


def piped(tmp_path, *args, **env):
    """`curl ... | bash -s -- ARGS` from a directory that is not a checkout."""
    return subprocess.run(["bash", "-s", "--", *args], input=SCRIPT, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, check=False, env={"PATH": "/usr/bin:/bin", **env})


def test_piped_system_installs_the_spec_then_runs_auto(tmp_path, allow_subprocess):
    py = fake_python(tmp_path)
    r = piped(tmp_path, "--system", "--dry-run", PYTHON=str(py))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"+ {py} -m pip install --quiet --disable-pip-version-check attn-install",
                                     f"+ {py} -m attn_installer --auto"]
    r = piped(tmp_path, "--system", "--dry-run", "--yes", "--python", "/opt/env/bin/python", "--", "--allow-source",
              PYTHON=str(py))
    assert r.stdout.splitlines()[-1] == (f"+ {py} -m attn_installer --auto --python /opt/env/bin/python --yes "
                                         "--allow-source")
    r = piped(tmp_path, "--system", "--dry-run", PYTHON=str(py), ATTN_INSTALL_SPEC="git+https://x/a.git")
    assert "--disable-pip-version-check git+https://x/a.git" in r.stdout


def test_piped_system_twice_skips_pip(tmp_path, allow_subprocess):
    py = fake_python(tmp_path, installed="0.1.0")
    r = piped(tmp_path, "--system", "--dry-run", PYTHON=str(py))
    assert r.returncode == 0 and "pip install" not in r.stdout
    assert r.stdout.startswith(f"attn-install 0.1.0 already installed for {py}\n")


def test_piped_venv_mode_needs_a_checkout(tmp_path, allow_subprocess):
    r = piped(tmp_path, PYTHON=str(fake_python(tmp_path)))
    assert r.returncode == 2 and "piped or on its own, use --system" in r.stderr


@pytest.mark.parametrize(("kw", "code", "needle"), [
    ({"version": (3, 8)}, 1, "Python 3.8.0"),
    ({"pip": False}, 1, "pip is missing"),
])
def test_python_and_pip_are_checked_first(tmp_path, allow_subprocess, kw, code, needle):
    r = piped(tmp_path, "--system", PYTHON=str(fake_python(tmp_path, **kw)))
    assert r.returncode == code and needle in r.stderr and r.stdout == ""


def test_missing_python_and_bad_option(tmp_path, allow_subprocess):
    r = piped(tmp_path, "--system", PYTHON="no-such-python")
    assert r.returncode == 1 and "'no-such-python' not found" in r.stderr
    r = piped(tmp_path, "--bogus")
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr


# --------------------------------------------------------------------------- for real, from a fresh clone

TOOLS = ("bash", "sh", "sed", "head", "cat", "dirname", "env", "ls", "mkdir", "rm", "cp", "mv", "ln", "grep",
         "tr", "cut", "uname", "sort", "readlink", "basename", "chmod", "touch", "id", "tail")


def tools_dir(tmp_path):
    """A PATH holding the shell tools install.sh and pip use, and no Python: what is found is
    what the test puts there."""
    import shutil

    d = tmp_path / "tools"
    d.mkdir()
    for name in TOOLS:
        found = shutil.which(name, path="/usr/bin:/bin")
        if found:
            (d / name).symlink_to(found)
    return d


def fresh_clone(tmp_path):
    """The checkout as a clone of it has it: tracked and untracked-not-ignored files only."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    dest = tmp_path / "clone"
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_install_sh_from_a_fresh_clone_in_each_case(world, deps_house, tmp_path):
    """No GPU and no torch (exit 0, an SDPA config); a torch environment found as python3 on PATH
    (the backend goes there); a GPU and no torch anywhere (the torch build that fits goes into
    .venv, then the backend); all three with one clone and one .venv, as a user re-running it."""
    import sys

    from tests.installworld import freeze, good_xformers
    from tests.pkgindex import build_wheel, stand_in_torch

    world.idx.add(good_xformers(world.wheels))
    world.idx.add(stand_in_torch(world.wheels, "2.14.1+cu126", "12.6"))
    xf35 = build_wheel(world.wheels, "xformers", "0.0.35", {"xformers/__init__.py": "__version__ = '0.0.35'\n",
                                                            "xformers/ops.py": ""}, ("torch>=2.10",))
    world.idx.add(xf35)
    clone = fresh_clone(tmp_path)
    tools = tools_dir(tmp_path)
    smi = world.tmp / "bin"
    work = tmp_path / "work"
    work.mkdir()
    base = {k: v for k, v in world.env.items() if k not in ("PYTHONPATH", "PATH")}
    base.update(PYTHON=sys.executable, PIP_FIND_LINKS=str(deps_house))

    def install_sh(path, *args):
        return subprocess.run(["bash", str(clone / "install.sh"), *args], cwd=work, capture_output=True, text=True,
                              timeout=400, check=False, env=dict(base, PATH=path))

    # 1. no GPU, no torch: nothing to install, the config says sdpa, exit 0
    r = install_sh(str(tools), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GPU and no torch here: nothing needs installing" in r.stdout
    assert "attn_implementation: sdpa" in (work / "attn-install-config.yaml").read_text()
    # 2. a torch environment on PATH (python3 there): the backend is installed into it, torch stays
    r = install_sh(f"{tools}:{smi}:{Path(world.py).parent}", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"torch found for {Path(world.py).parent}/python3" in r.stdout
    assert "xformers==0.0.32.post2" in freeze(world) and "torch==2.8.0+cu126" in freeze(world)
    assert "attn_implementation: xformers" in (work / "attn-install-config.yaml").read_text()
    assert "using " in r.stdout and "already installed in" in r.stdout  # the .venv of the first run
    # 3. a GPU (the recorded T4, whose driver reports CUDA 12.2) and no torch anywhere: the newest torch
    #    for it (2.14.1+cu126) goes into .venv, then the backend (xformers 0.0.35 for torch >= 2.10)
    r = install_sh(f"{tools}:{smi}", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no Python here has torch and a GPU is present" in r.stdout
    venv_py = str(clone / ".venv" / "bin" / "python")
    own = subprocess.run([venv_py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    assert "torch==2.14.1+cu126" in own and "xformers==0.0.35" in own
    assert "installed torch 2.14.1+cu126" in r.stderr
    cfg = (work / "attn-install-config.yaml").read_text()
    assert "attn_implementation: xformers" in cfg and "fp16: true" in cfg


def test_install_sh_system_from_inside_the_checkout(world, deps_house, tmp_path):
    """--system run inside the checkout, into a Python that already has click: the checkout on the
    working directory must not pass for an installed attn-install."""
    clone = fresh_clone(tmp_path)
    tools = tools_dir(tmp_path)
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(deps_house), "click"],
                   env=world.env, check=True, capture_output=True)
    env = {k: v for k, v in world.env.items() if k not in ("PYTHONPATH",)}
    env.update(PATH=str(tools), PYTHON=world.py, PIP_FIND_LINKS=str(deps_house))
    r = subprocess.run(["bash", "install.sh", "--system", "--yes"], cwd=clone, capture_output=True, text=True,
                       timeout=300, check=False, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "already installed" not in r.stdout and "internal error" not in r.stderr
    assert "attn-install @ file://" in subprocess.run([world.py, "-m", "pip", "freeze"], env=world.env,
                                                      capture_output=True, text=True, check=True).stdout
    again = subprocess.run(["bash", "install.sh", "--system", "--yes"], cwd=clone, capture_output=True, text=True,
                           timeout=300, check=False, env=env)
    assert again.returncode == 0 and f"attn-install 0.1.0 already installed for {world.py}" in again.stdout
