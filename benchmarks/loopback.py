"""The loopback world the benchmark scripts measure in, as the tests build it: a package index and
GitHub-release mimic on loopback (tests/pkgindex.py), a copy of matrices/ whose GitHub URLs point at
it, a fake nvidia-smi printing the recorded H200 output, no CUDA toolkit, and a venv holding a
stand-in torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pkgindex import PackageIndex, stand_in_torch  # noqa: E402

FIX = REPO / "tests/fixtures/nvidia/h200-device"

__all__ = ["REPO", "World", "world"]


class World:
    def __init__(self, tmp: Path, idx: PackageIndex, env: dict[str, str], py: str) -> None:
        self.tmp, self.idx, self.env, self.py = tmp, idx, env, py


def world(tmp: Path, torch_version: str = "2.8.0+cu126", cuda: str = "12.6",
          github_in: tuple[str, ...] = ("flash_attn_wheels.toml", "routes.toml")) -> World:
    idx = PackageIndex(tmp / "index")
    torch_wheel = stand_in_torch(tmp / "built", torch_version, cuda)
    matrices = tmp / "matrices"
    shutil.copytree(REPO / "matrices", matrices)
    for name in github_in:
        f = matrices / name
        f.write_text(f.read_text().replace("https://github.com/", idx.url + "/"))
    bindir = tmp / "bin"
    bindir.mkdir()
    (bindir / "nvidia-smi").write_text(f"#!/bin/sh\ncase \"$1\" in --query-gpu=*) cat {FIX}/nvidia-smi-query.csv ;; "
                                       f"-q) exit 9 ;; *) cat {FIX}/nvidia-smi.txt ;; esac\n")
    (bindir / "nvidia-smi").chmod(0o755)
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    py = str(tmp / "venv/bin/python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CUDA", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin", PIP_INDEX_URL=idx.url + "/simple",
               PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", ATTN_INSTALL_MATRIX_DIR=str(matrices),
               ATTN_INSTALL_CACHE=str(tmp / "cache"), ATTN_INSTALL_NO_NVML="1", HOME=str(tmp), PYTHONPATH=str(REPO),
               CUDA_HOME=str(tmp / "no-cuda-toolkit"))
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(torch_wheel)], env=env, check=True)
    return World(tmp, idx, env, py)
