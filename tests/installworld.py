"""Shared fixtures for the real-install tests: a loopback package index, a matrix pointing at it,
a fake nvidia-smi printing recorded output, and a virtual environment holding a stand-in torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO
from tests.pkgindex import PackageIndex, build_wheel, stand_in_torch

T4_CSV = (FIXTURES / "nvidia/other/nvidia_smi_query_csv_t4.txt").read_text()
T4_BANNER = (FIXTURES / "nvidia/other/nvidia-smi_banner_tesla-t4_colab_cuda12.2.txt").read_text()
H200_CSV = (FIXTURES / "nvidia/h200-device/nvidia-smi-query.csv").read_text()
H200_BANNER = (FIXTURES / "nvidia/h200-device/nvidia-smi.txt").read_text()
XF = "0.0.32.post2"  # what the plan picks for torch 2.8.0+cu126 (matrices/routes.toml [[index_wheel]])


def good_xformers(out: Path, requires=("torch==2.8.0", "numpy")) -> Path:
    return build_wheel(out, "xformers", XF, {
        "xformers/__init__.py": f"__version__ = {XF!r}\n",
        "xformers/ops.py": "def memory_efficient_attention(q, k, v, attn_bias=None):\n    raise RuntimeError\n",
    }, requires)


def broken_xformers(out: Path) -> Path:
    """Imports fail the way a wheel built for another torch does."""
    return build_wheel(out, "xformers", XF, {
        "xformers/__init__.py": "",
        "xformers/ops.py": "raise ImportError('/venv/xformers/_C.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n",
    }, ("torch==2.8.0", "numpy>=2"))


@pytest.fixture(scope="session")
def template_venv(tmp_path_factory):
    """A venv holding the stand-in torch 2.8.0+cu126 and numpy 1.0, made once; tests get copies
    (a copied venv is its own environment: sys.prefix follows the interpreter's folder)."""
    root = tmp_path_factory.mktemp("template")
    wheels = root / "wheels"
    stand_in_torch(wheels)
    build_wheel(wheels, "numpy", "1.0", {"numpy/__init__.py": "__version__ = '1.0'\n"})
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, symlinks=True).create(env_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(wheels), "torch==2.8.0+cu126", "numpy==1.0"], env=env, check=True, capture_output=True)
    return env_dir


def copy_venv(template: Path, dest: Path) -> str:
    shutil.copytree(template, dest, symlinks=True)
    return str(dest / "bin" / "python")


@pytest.fixture
def world(tmp_path, allow_subprocess, template_venv):
    """A loopback index, a matrix pointing at it, a fake T4, and a venv holding torch + numpy 1.0."""
    idx = PackageIndex(tmp_path / "index")
    wheels = tmp_path / "built"
    for w in (stand_in_torch(wheels), stand_in_torch(wheels, "2.9.0", "12.6"),
              build_wheel(wheels, "numpy", "1.0", {"numpy/__init__.py": "__version__ = '1.0'\n"}),
              build_wheel(wheels, "numpy", "2.0", {"numpy/__init__.py": "__version__ = '2.0'\n"})):
        idx.add(w)
    matrices = tmp_path / "matrices"
    shutil.copytree(REPO / "matrices", matrices)
    for name in ("flash_attn_wheels.toml", "routes.toml"):  # GitHub release assets, the wheel farm
        f = matrices / name
        f.write_text(f.read_text().replace("https://github.com/", idx.url + "/"))
    tt = matrices / "torch.toml"
    tt.write_text(tt.read_text().replace("https://download.pytorch.org/whl/{flavour}", idx.url + "/whl/{flavour}"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("t4.csv", T4_CSV), ("t4.txt", T4_BANNER), ("h200.csv", H200_CSV), ("h200.txt", H200_BANNER)):
        (tmp_path / name).write_text(text)
    smi = bindir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
gpu=${{FAKE_GPU:-t4}}
case "$1" in
  --query-gpu=*) cat {tmp_path}/$gpu.csv ;;
  -q) exit 9 ;;
  *) cat {tmp_path}/$gpu.txt ;;
esac
""")
    smi.chmod(0o755)
    py = copy_venv(template_venv, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CUDA", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "PATH": f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "PIP_INDEX_URL": idx.url + "/simple", "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CACHE_DIR": str(tmp_path / "pipcache"),
        "ATTN_INSTALL_MATRIX_DIR": str(matrices), "ATTN_INSTALL_CACHE": str(tmp_path / "cache"),
        "ATTN_INSTALL_NO_NVML": "1", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
    })

    class World:
        pass

    w = World()
    w.idx, w.env, w.py, w.tmp, w.wheels, w.matrices = idx, env, py, tmp_path, wheels, matrices
    yield w
    idx.close()


def run(w, *args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "attn_installer", *args], env=env or w.env, cwd=w.tmp,
                          capture_output=True, text=True, timeout=timeout, check=False)


def freeze(w) -> str:
    return subprocess.run([w.py, "-m", "pip", "freeze", "--all"], env=w.env, capture_output=True, text=True,
                          check=True).stdout


def repack_closure(roots: list[str], house: Path, skip: tuple[str, ...] = ()) -> Path:
    """*roots* and every distribution they need (markers of this interpreter), repacked as wheels
    from this environment into *house*, so a venv installs them from loopback (no network)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    from attn_installer.install.backup import repack
    from attn_installer.runner import SubprocessRunner

    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    seen: set[tuple[str, str]] = {(s, "") for s in skip}
    packed: set[str] = set(skip)
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        wanted = {e for e in (extras | {""}) if (key, e) not in seen}
        if not wanted:
            continue
        seen.update((key, e) for e in wanted)
        for raw in md.requires(name) or ():
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((req.name, frozenset(req.extras)))
        if key != "attn-install" and key not in packed:
            packed.add(key)
            repack(SubprocessRunner(), sys.executable, name, house)
    return house


@pytest.fixture(scope="session")
def deps_house(tmp_path_factory):
    """attn-install's own dependencies, and what building it needs (hatchling, editables), as wheels
    repacked from this environment (no network)."""
    return repack_closure(["attn-install", "hatchling", "editables"], tmp_path_factory.mktemp("deps"))


@pytest.fixture(scope="session")
def hub_house(tmp_path_factory):
    """The `kernels` package and what it needs, repacked from this environment."""
    pytest.importorskip("kernels")
    return repack_closure(["kernels"], tmp_path_factory.mktemp("hubdeps"))
