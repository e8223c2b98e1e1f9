"""A short soak (benchmarks/soak.py): 20 plan / probe runs, 4 at a time, on one simulated H200
share a TMPDIR and a cache, give one output per command and leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # 21 fresh attn-install processes


def test_a_short_soak_leaves_nothing_behind(tmp_path, allow_subprocess):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/soak.py"), "--runs", "20", "--parallel", "4",
                        "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "machine: NVIDIA H200" in r.stdout and "distinct outputs: plan 1, probe 1" in r.stdout
    data = json.loads(out.read_text())
    assert data["runs"] == {"plan": 10, "probe": 10} and data["findings"] == []
