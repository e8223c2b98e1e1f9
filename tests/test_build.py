"""Source builds for real: a small C extension in a git repo made by the test, cloned at its tag
and built with `pip wheel --no-build-isolation` by attn-install's own steps (as SageAttention would
be), on a fake H200 with a fake nvcc 12.6 (the compile is real gcc). Asserts the plan's MAX_JOBS and
arch list reach the build, progress is shown, the wheel cache is reused by key, the wheelhouse
round trip works, and a build killed for memory gets the MAX_JOBS hint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.installworld import freeze, run

SETUP = '''
import os, sys
from setuptools import Extension, setup
if os.environ.get("FAKE_OOM"):
    print("gcc: fatal error: Killed signal terminated program cc1plus", flush=True)
    sys.exit(137)
print("[1/2] compiling _C.c", flush=True)
with open("sageattention/build_env.py", "w") as fh:
    fh.write(f"MAX_JOBS = {os.environ.get('MAX_JOBS')!r}\\nARCHS = {os.environ.get('TORCH_CUDA_ARCH_LIST')!r}\\n")
print("[2/2] linking", flush=True)
setup(name="sageattention", version="2.2.0", packages=["sageattention"],
      ext_modules=[Extension("sageattention._C", ["csrc/_C.c"])])
'''


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def sage_repo(world):
    src = world.tmp / "sage-src"
    (src / "sageattention").mkdir(parents=True)
    (src / "csrc").mkdir()
    (src / "setup.py").write_text(SETUP)
    (src / "sageattention/__init__.py").write_text(
        "from ._C import ok\ndef sageattn(*a, **k):\n    raise RuntimeError\n")
    (src / "csrc/_C.c").write_text(
        '#include <Python.h>\nstatic PyObject* ok(PyObject* s, PyObject* a) { Py_RETURN_TRUE; }\n'
        'static PyMethodDef m[] = {{"ok", ok, METH_NOARGS, ""}, {0}};\n'
        'static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "_C", 0, -1, m};\n'
        'PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&d); }\n')
    git("init", "-q", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-qm", "v2.2.0", cwd=src)
    git("tag", "v2.2.0", cwd=src)
    sources = world.matrices / "sources.toml"
    sources.write_text(sources.read_text().replace("https://github.com/thu-ml/SageAttention.git", f"file://{src}"))
    import sys

    from attn_installer.envstate import repack
    from attn_installer.runner import SubprocessRunner

    tools = world.tmp / "tools"
    repack(SubprocessRunner(), sys.executable, "setuptools", tools)  # >= 70.1 builds wheels by itself
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--upgrade", "--no-index", "--find-links", str(tools),
                    "setuptools"], env=world.env, check=True)
    bindir = world.tmp / "bin"
    (bindir / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.6, V12.6.85'\n")
    (bindir / "ninja").write_text("#!/bin/sh\necho 1.11.1\n")
    for exe in ("nvcc", "ninja"):
        (bindir / exe).chmod(0o755)
    world.env.update(FAKE_GPU="h200")
    return src


def test_source_build_env_progress_cache_and_wheelhouse(world, sage_repo):
    args = ("install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    r = run(world, *args, "--report", "report.json")
    assert r.returncode == 0, r.stderr
    assert "compiled 1/2 units" in r.stderr and "compiled 2/2 units" in r.stderr
    assert "sageattention==2.2.0" in freeze(world)
    built = subprocess.run([world.py, "-I", "-c", "import sageattention.build_env as b, sageattention as s; "
                            "print(b.MAX_JOBS, b.ARCHS, s.ok())"], cwd=world.tmp, env=world.env,
                           capture_output=True, text=True, check=True).stdout.split()
    plan_env = next(s for s in json.loads((world.tmp / "report.json").read_text())["plan"]["backends"]
                    if s["name"] == "sage")["steps"]
    build_env = next(s for s in plan_env if s["kind"] == "build")["env"]
    assert built == [build_env["MAX_JOBS"], "9.0", "True"]  # the plan's MAX_JOBS and arch list reached setup.py
    # same build key: the second install takes the cached wheel, no clone, no compile
    subprocess.run([world.py, "-m", "pip", "uninstall", "-y", "-q", "sageattention"], env=world.env, check=True)
    again = run(world, *args)
    assert again.returncode == 0 and "wheel cache hit" in again.stderr and "compiled" not in again.stderr
    # build once into a wheelhouse, install elsewhere from it offline (fresh cache = another node)
    house = world.tmp / "house"
    subprocess.run([world.py, "-m", "pip", "uninstall", "-y", "-q", "sageattention"], env=world.env, check=True)
    b = run(world, "build", "sage", "--workload", "lora", "--python", world.py, "--wheelhouse", str(house))
    assert b.returncode == 0, b.stderr
    assert [p.name for p in house.glob("*.whl")] and list(house.glob("*.attn-install-key.json"))
    node = dict(world.env, ATTN_INSTALL_CACHE=str(world.tmp / "node-cache"))
    off = run(world, *args, "--offline", "--wheelhouse", str(house), env=node)
    assert off.returncode == 0, off.stderr
    assert "wheel cache hit" in off.stderr and "sageattention==2.2.0" in freeze(world)


def test_build_killed_for_memory_names_a_smaller_max_jobs(world, sage_repo):
    before = freeze(world)
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes",
            env=dict(world.env, FAKE_OOM="1"))
    assert r.returncode == 8
    assert "retry with fewer parallel jobs, e.g. MAX_JOBS=" in r.stderr
    assert "state: nothing was changed" in r.stderr and freeze(world) == before


def test_preflight_errors_before_any_work(world, sage_repo):
    old = world.tmp / "bin" / "nvcc"
    old.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.1, V12.1.105'\n")
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    assert r.returncode == 6 and "nvcc 12.1 is too old to build sage for sm_90: needs >= 12.3" in r.stderr
    old.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    assert r.returncode == 6 and "nvcc 13.0 and torch's CUDA 12.6 differ in major version" in r.stderr
    assert not Path(world.env["ATTN_INSTALL_CACHE"], "src").exists()  # nothing was cloned
