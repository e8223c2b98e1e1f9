"""The benchmark script that checks the source-build speed targets, on the recorded H200 run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.slow  # real pip, venvs, git and loopback servers

H200 = FIXTURES / "nvidia/h200-device"


def test_build_targets_on_the_recorded_h200_run(allow_subprocess):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/check_build_targets.py"),
                        "--report", str(H200 / "fa3-report-2.json"), "--log", str(H200 / "gpu-install-2.log")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "met   trimmed build < 5 min on a 16-CPU host: 2.82 min" in r.stdout
    assert "5 vs 133 (26.6x)" in r.stdout and "reinstall from the wheel cache < 30 s: 7.3 s" in r.stdout


def test_a_missed_target_fails(tmp_path, allow_subprocess):
    report = json.loads((H200 / "fa3-report-2.json").read_text())
    for step in report["results"][0]["steps"]:
        if step["kind"] == "build":
            step["seconds"] = 1200.0
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(report))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks/check_build_targets.py"), "--report", str(slow),
                        "--log", str(H200 / "gpu-install-2.log")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "MISSED  trimmed build < 5 min on a 16-CPU host: 20.00 min" in r.stdout
