"""Shared fixtures. Unit tests cannot spawn processes by accident: the autouse guard makes
subprocess.Popen raise unless the test asks for `allow_subprocess`.

Layout: ``unit/`` pure tests (no processes), ``cli/`` the command line in real processes against
fake nvidia-smi / rocm-smi and a stand-in torch, ``integration/`` real pip, venvs, git and loopback
servers (marked ``slow``), ``gpu/`` real kernels (marked ``gpu``, skipped without a GPU).
``pytest -m "not slow"`` is the fast inner loop; ``--update-goldens`` rewrites tests/fixtures/golden/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from attn_installer.runner import Completed

pytest_plugins = ("tests.installworld",)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
"""The JSON contracts, shipped in the repository (and the wheel); equal to ../shared/contracts."""


def _contract(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/fixtures/golden/ from the current code instead of comparing")


@pytest.fixture
def update_goldens(request) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(autouse=True)
def no_subprocess(request, monkeypatch):
    if "allow_subprocess" in request.fixturenames:
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"unit test tried to spawn a process: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def allow_subprocess():
    """Request this fixture to let a test spawn real processes."""
    return True


@pytest.fixture(autouse=True)
def _clear_matrix_cache():
    from attn_installer.matrix import _load_cached

    _load_cached.cache_clear()
    yield


class FakeRunner:
    """Replays canned output per argv prefix; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]] | None = None):
        self.answers = answers or {}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, timeout, env=None, cwd=None, on_line=None, on_idle=None, idle_seconds=600.0):
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, (rc, out) in self.answers.items():
            if argv[: len(prefix)] == prefix:
                return Completed(argv, rc, out, "", 0.01, timed_out=rc == 124)
        return Completed(argv, 127, "", f"{argv[0]}: command not found\n", 0.0, not_found=True)


@pytest.fixture
def fixture_text():
    def read(rel: str) -> str:
        return (FIXTURES / rel).read_text()

    return read


def validate(instance: dict, contract: str) -> None:
    import jsonschema

    jsonschema.validate(instance, _contract(contract))


def load_target(name: str):
    """A program of attn_installer/target (they run in the user's Python) as a module, with that
    folder on sys.path as its boot line puts it there, so it imports its sibling attn_calls."""
    import importlib
    import sys

    from attn_installer import target

    sys.path.insert(0, str(target.DIR))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(target.DIR))
