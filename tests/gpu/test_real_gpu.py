"""Real kernels on a real NVIDIA GPU (marked ``gpu``; skipped where no Python with a CUDA torch
and a visible GPU is found). The Python under test: ``$ATTN_INSTALL_GPU_PYTHON``, else the one
running pytest. attn-install runs as the user runs it, ``python -m attn_installer`` in a fresh
process, against that Python's environment; nothing here is mocked.

On the GPU machine: ``python3 -m pytest -q -m gpu tests/gpu`` (benchmarks/gpu_tests.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, validate

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

STANDIN = REPO / "benchmarks" / "standin_flash_attn.py"


def _torch_gpus(py: str, env: dict[str, str]) -> list[str] | None:
    code = ("import json, torch\n"
            "print(json.dumps([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]"
            " if torch.cuda.is_available() else []))")
    try:
        done = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gpu_python() -> str:
    py = os.environ.get("ATTN_INSTALL_GPU_PYTHON") or sys.executable
    names = _torch_gpus(py, dict(os.environ))
    if not names:
        pytest.skip(f"no CUDA torch with a visible GPU for {py} (set ATTN_INSTALL_GPU_PYTHON)")
    return py


def ai(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600
       ) -> subprocess.CompletedProcess[str]:
    """attn-install in a fresh process, as a user runs it."""
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "attn_installer", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=cwd or REPO, check=False)


@pytest.fixture
def cache(tmp_path) -> dict[str, str]:
    return {"ATTN_INSTALL_CACHE": str(tmp_path / "cache")}


def test_the_probe_sees_the_gpus_torch_sees(gpu_python, allow_subprocess, cache):
    """With no CUDA_VISIBLE_DEVICES, with index 0, with the GPU's UUID, and with an empty list."""
    r = ai("probe", "--json", "--python", gpu_python, env=cache)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    validate(facts, "facts.schema.json")
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    names = _torch_gpus(gpu_python, base)
    assert [g["name"] for g in facts["gpus"]] == names
    assert facts["torch"]["version"] and facts["driver"]["version"]
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60, check=False).stdout.split()
    except OSError:
        smi = []
    for visible in ["0", *smi[:1], ""]:
        env = dict(cache, CUDA_VISIBLE_DEVICES=visible)
        r = ai("probe", "--json", "--python", gpu_python, env=env)
        assert r.returncode == 0, r.stderr
        got = [g["name"] for g in json.loads(r.stdout)["gpus"]]
        assert got == _torch_gpus(gpu_python, dict(base, CUDA_VISIBLE_DEVICES=visible)), visible


def test_verify_runs_sdpa_and_flex_against_fp32_and_names_the_kernels(gpu_python, allow_subprocess, cache):
    r = ai("verify", "sdpa", "flex_attention", "--python", gpu_python, "--json", env=cache)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    results = {x["backend"]: x for x in doc}
    for name in ("sdpa", "flex_attention"):
        res = results[name]
        assert res["status"] == "passed", res
        cases = {c["name"]: c for c in res["cases"]}
        assert any(n.startswith("gqa") for n in cases) and any(n.startswith("mqa") for n in cases)
        for c in cases.values():
            assert c["status"] == "passed" and c["out_rel_err"] < 0.02 and c["out_cosine"] > 0.999
            assert c["dq_rel_err"] < 0.04 and c["dk_rel_err"] < 0.04 and c["dv_rel_err"] < 0.04
            assert c["kernels"], c  # the profiler saw the GPU kernel that ran
    assert any(n.startswith("varlen") for n in (c["name"] for c in results["flex_attention"]["cases"]))


@pytest.fixture
def hollow_env(tmp_path, gpu_python, allow_subprocess) -> str:
    """A venv over the GPU Python's torch (a .pth to its site-packages) holding a flash-attn 2.8.3
    whose flash_attn_func returns zeros: what a hollow or mis-built wheel looks like."""
    subprocess.run([gpu_python, str(STANDIN), "zeros", str(tmp_path / "wheels")], check=True, timeout=120,
                   capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([gpu_python, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy = str(venv / "bin" / "python")
    purelib = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    torch_site = subprocess.run([gpu_python, "-c", "import os, torch; print(os.path.dirname(os.path.dirname("
                                 "torch.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "torch-env.pth").write_text(torch_site + "\n")
    (wheel,) = (tmp_path / "wheels").rglob("*.whl")
    subprocess.run([vpy, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)], check=True,
                   timeout=300)
    return vpy


def test_a_hollow_flash_attn_fails_verify_and_is_never_ranked(hollow_env, cache):
    r = ai("verify", "flash_attention_2", "--python", hollow_env, env=cache)
    assert r.returncode == 7, r.stdout + r.stderr
    assert "flash_attention_2" in r.stdout + r.stderr
    r = ai("bench", "--python", hollow_env, "--backends", "sdpa,flash_attention_2", "--seq-len", "1024",
           "--repeats", "3", "--json", env=cache)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    by = {x["backend"]: x for x in doc["results"] if x.get("variant") is None}
    assert by["flash_attention_2"]["status"] == "rejected", by["flash_attention_2"]
    assert by["sdpa"]["status"] == "ok"
    ceiling = doc["judgment"]["ceiling_tflops"]
    if ceiling:
        assert 0 < by["sdpa"]["fwdbwd_tflops"] < ceiling
    r = ai("plan", "--measured", "--python", hollow_env, "--json", env=cache)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recommended"] != "flash_attention_2"
