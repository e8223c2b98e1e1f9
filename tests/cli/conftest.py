"""Black-box CLI helpers: fake nvidia-smi on PATH printing recorded output, a stand-in torch on
PYTHONPATH (read from its files, never imported), and a runner for `python -m attn_installer`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO

T4_CSV = (FIXTURES / "nvidia/other/nvidia_smi_query_csv_t4.txt").read_text()
T4_BANNER = (FIXTURES / "nvidia/other/nvidia-smi_banner_tesla-t4_colab_cuda12.2.txt").read_text()


def fake_bin(tmp_path: Path, name: str, script: str) -> Path:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    exe = d / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return d


def fake_torch(tmp_path: Path, version="2.8.0+cu126", cuda="'12.6'") -> Path:
    site = tmp_path / "site"
    (site / "torch/share/cmake/Torch").mkdir(parents=True)
    (site / "torch/version.py").write_text(
        f"__version__ = '{version}'\ndebug = False\ncuda: Optional[str] = {cuda}\nhip: Optional[str] = None\n")
    (site / "torch/share/cmake/Torch/TorchConfig.cmake").write_text(
        'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")\n')
    dist = site / f"torch-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n\n")
    return site


@pytest.fixture
def colab_t4(tmp_path, allow_subprocess):
    (tmp_path / "t4.csv").write_text(T4_CSV)
    (tmp_path / "banner.txt").write_text(T4_BANNER)
    bindir = fake_bin(tmp_path, "nvidia-smi", f"""
case "$1" in
  --query-gpu=*) cat {tmp_path}/t4.csv ;;
  -q) exit 9 ;;
  *) cat {tmp_path}/banner.txt ;;
esac
""")
    # the toolkit is the simulated machine's too: no CUDA toolkit (Colab's is not on the default
    # path), gcc 11.4 and ninja, whatever the machine running the test has
    fake_bin(tmp_path, "gcc", 'echo 11.4.0\n')
    fake_bin(tmp_path, "ninja", "exit 0\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_PATH", "CC", "XDG_CACHE_HOME", "ATTN_INSTALL_CACHE",
                        "NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update({
        "PATH": f"{bindir}{os.pathsep}/usr/bin:/bin",
        "PYTHONPATH": str(fake_torch(tmp_path)),
        "ATTN_INSTALL_NO_NVML": "1",
        "COLAB_RELEASE_TAG": "release-colab-20261101",
        "CUDA_HOME": str(tmp_path / "no-cuda-toolkit"),
        "HOME": str(tmp_path),
    })
    return env


def cli(env, *args, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "attn_installer", *args], env=env, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
