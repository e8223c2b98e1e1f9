"""install.sh without a network or a real install: a fake interpreter and --dry-run."""

from __future__ import annotations

import subprocess

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
  "-m attn_installer --version") {have} ;;
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
                                     f"+ {py} -m attn_installer --auto --yes"]
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
