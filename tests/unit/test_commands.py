"""Every pip / uv command line comes from attn_installer/commands.py: exact argv, for pip and uv."""

from __future__ import annotations

from attn_installer import commands
from attn_installer.commands import Pins, PipInstall, PipWheel

PINS = Pins("/c/constraints/pins-1.txt", "torch==2.8.0+cu126\n")
PY = "/env/bin/python"
QUIET = ("--no-input", "--disable-pip-version-check")


def test_index_install_with_pins_pip_and_uv():
    p = PipInstall(python=PY, requirements=("xformers==0.0.32.post2",), index_url="https://x/whl/cu126", pins=PINS)
    assert commands.render(p) == (PY, "-m", "pip", "install", *QUIET, "--constraint", PINS.path,
                                  "xformers==0.0.32.post2", "--index-url", "https://x/whl/cu126")
    uv = PipInstall(python=PY, requirements=("xformers==0.0.32.post2",), installer="uv", pins=PINS)
    assert commands.render(uv) == ("uv", "pip", "install", "--python", PY, "--constraint", PINS.path,
                                   "xformers==0.0.32.post2")


def test_a_wheelhouse_is_the_only_source_and_drops_the_index():
    p = PipInstall(python=PY, requirements=("xformers==0.0.32.post2",), index_url="https://x/whl/cu126",
                   wheelhouse="/wh", pins=PINS)
    assert commands.render(p) == (PY, "-m", "pip", "install", *QUIET, "--no-index", "--find-links", "/wh",
                                  "--constraint", PINS.path, "xformers==0.0.32.post2")


def test_a_built_wheel_reinstalls_from_its_folder_only():
    p = PipInstall(python=PY, requirements=("sageattention",), local_wheels="/c/wheels/sage-1", no_deps=True,
                   force_reinstall=True, pins=PINS)
    assert commands.render(p)[6:] == ("--no-deps", "--constraint", PINS.path, "sageattention", "--no-index",
                                      "--find-links", "/c/wheels/sage-1", "--force-reinstall")
    assert commands.pip_preview(p, "/tmp/r.json") == (PY, "-m", "pip", "install", "--dry-run", "--report",
                                                      "/tmp/r.json", *commands.render(p)[6:])


def test_pypi_prerelease_and_wheel_build():
    p = PipInstall(python=PY, requirements=("flash-attn-4[cu13]",), pre=True)
    assert commands.render(p) == (PY, "-m", "pip", "install", *QUIET, "--pre", "flash-attn-4[cu13]")
    w = PipWheel(python=PY, source="/c/src/fa3/hopper", wheel_dir="/c/wheels/fa3-1")
    assert commands.render(w) == (PY, "-m", "pip", "wheel", "--verbose", "--no-build-isolation", "--no-deps",
                                  *QUIET, "--wheel-dir", "/c/wheels/fa3-1", "/c/src/fa3/hopper")


def test_rollback_commands_for_pip_and_for_uv():
    assert commands.pip_uninstall(PY, "uv", ("sageattention",)) == (
        "uv", "pip", "uninstall", "--python", PY, "sageattention")
    assert commands.pip_uninstall(PY, "pip", ("sageattention",)) == (
        PY, "-m", "pip", "uninstall", "-y", *QUIET, "sageattention")
    assert commands.pip_restore(PY, "pip", "numpy==1.0", find_links=("/b", "/wh")) == (
        PY, "-m", "pip", "install", *QUIET, "--no-deps", "--no-index", "--find-links", "/b", "--find-links", "/wh",
        "numpy==1.0")
    assert commands.pip_restore(PY, "pip", "numpy==1.0") == (PY, "-m", "pip", "install", *QUIET, "--no-deps",
                                                               "numpy==1.0")
