"""Source builds for real: a small C extension in a git repo made by the test, cloned at its tag
and built with `pip wheel --no-build-isolation` by attn-install's own steps (as SageAttention would
be), on a fake H200 with a fake nvcc 12.6 (the compile is real gcc). Asserts the plan's MAX_JOBS and
arch list reach the build, progress is shown, the wheel cache is reused by key, the wheelhouse
round trip works, and a build killed for memory gets the MAX_JOBS hint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.installworld import freeze, run

pytestmark = pytest.mark.slow  # real pip, venvs, git and loopback servers

SETUP = '''
import os, sys
from setuptools import Extension, setup
from setuptools.command.build_py import build_py
if os.environ.get("FAKE_OOM"):
    print("gcc: fatal error: Killed signal terminated program cc1plus", flush=True)
    sys.exit(137)
# two extensions, one ninja each (as SageAttention's setup.py runs them): the counters restart
for ext in ("_qattn", "_fused"):
    print(f"[1/2] compiling {ext}.cu", flush=True)
    print(f"[2/2] compiling {ext}_pybind.cpp", flush=True)


class BuildPy(build_py):  # what the build saw goes into the wheel, not into the source tree
    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, "sageattention", "build_env.py"), "w") as fh:
            env = os.environ.get
            fh.write(f"MAX_JOBS = {env('MAX_JOBS')!r}\\nARCHS = {env('TORCH_CUDA_ARCH_LIST')!r}\\n"
                     f"EXT_PARALLEL = {env('EXT_PARALLEL')!r}\\n")


setup(name="sageattention", version="2.2.0", packages=["sageattention"], cmdclass={"build_py": BuildPy},
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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                            check=True).stdout.strip()
    # the pinned commit of the real row is replaced by this repo's commit (fetched by id, not by tag)
    sources = world.matrices / "sources.toml"
    text = sources.read_text().replace("https://github.com/thu-ml/SageAttention.git", f"file://{src}")
    text = re.sub(r'(backend = "sage"\n.*?\nref = )"[0-9a-f]{40}"', rf'\g<1>"{commit}"', text, flags=re.S)
    sources.write_text(text.replace("sm_90 = 14", "sm_90 = 4"))
    import sys

    from attn_installer.install.backup import repack
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
    assert "compiled 1/4 units" in r.stderr and "compiled 4/4 units" in r.stderr
    assert "fetch file://" in r.stderr or "pinned commit" in r.stderr
    # installed by the path of the one wheel of this build key (never resolved over a folder)
    assert re.search(r"^sageattention @ file://\S+/wheels/sage-[0-9a-f]{16}/sageattention-2\.2\.0-\S+\.whl",
                     freeze(world), re.M), freeze(world)
    built = subprocess.run([world.py, "-I", "-c", "import sageattention.build_env as b, sageattention as s; "
                            "print(b.MAX_JOBS, b.ARCHS, b.EXT_PARALLEL, s.ok())"], cwd=world.tmp, env=world.env,
                           capture_output=True, text=True, check=True).stdout.split()
    plan_env = next(s for s in json.loads((world.tmp / "report.json").read_text())["plan"]["backends"]
                    if s["name"] == "sage")["steps"]
    build_env = next(s for s in plan_env if s["kind"] == "build")["env"]
    # the plan's MAX_JOBS, arch list and extension parallelism reached setup.py
    assert built == [build_env["MAX_JOBS"], "9.0", build_env["EXT_PARALLEL"], "True"]
    # same build key: the second install takes the cached wheel, no clone, no compile
    subprocess.run([world.py, "-m", "pip", "uninstall", "-y", "-q", "sageattention"], env=world.env, check=True)
    again = run(world, *args)
    assert again.returncode == 0 and "wheel cache hit" in again.stderr and "compiled" not in again.stderr
    # build once into a wheelhouse, install elsewhere from it offline (fresh cache = another node)
    house = world.tmp / "house"
    subprocess.run([world.py, "-m", "pip", "uninstall", "-y", "-q", "sageattention"], env=world.env, check=True)
    b = run(world, "build", "sage", "--workload", "lora", "--python", world.py, "--wheelhouse", str(house))
    assert b.returncode == 0, b.stderr
    assert f"verification deferred (a build installs nothing): `attn-install install sage --wheelhouse {house}`" \
        in b.stdout
    (wheel,) = house.glob("sage-*/*.whl")  # a folder per build key, the key file (with the sha256) last
    key = json.loads((wheel.parent / "attn-install-key.json").read_text())
    assert key["wheel"] == wheel.name and len(key["sha256"]) == 64 and key["key"]["backend"] == "sage"
    node = dict(world.env, ATTN_INSTALL_CACHE=str(world.tmp / "node-cache"))
    off = run(world, *args, "--offline", "--wheelhouse", str(house), env=node)
    assert off.returncode == 0, off.stderr
    assert "wheel cache hit" in off.stderr and f"/node-cache/wheels/{wheel.parent.name}/{wheel.name}" in freeze(world)


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
    old.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.6, V12.6.85'\n")
    gxx = world.tmp / "bin" / "gcc-15"
    gxx.write_text("#!/bin/sh\necho 15.1.0\n")
    gxx.chmod(0o755)
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes",
            env=dict(world.env, CC=str(gxx)))
    assert r.returncode == 6 and "host gcc 15.1.0 is newer than nvcc 12.6 accepts (gcc <= 13" in r.stderr
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes",
            env=dict(world.env, CUDA_HOME=str(world.tmp / "no-cuda-here")))
    assert r.returncode == 6 and "nvcc not found: install the CUDA toolkit matching torch's CUDA 12.6" in r.stderr
    sources = world.matrices / "sources.toml"
    text = sources.read_text()
    sage_row = text.index('backend = "sage"')
    disk = text.index("disk_gb = ", sage_row)
    sources.write_text(text[:disk] + "disk_gb = 1000000.0" + text[text.index("\n", disk):])
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    assert r.returncode == 8 and "not enough free disk for the sage build: " in r.stderr
    assert "about 1e+06 GB needed" in r.stderr and "state: nothing was changed" in r.stderr
    assert not Path(world.env["ATTN_INSTALL_CACHE"], "src").exists()  # nothing was cloned


def test_a_source_checkout_is_keyed_by_its_content(world, sage_repo):
    """--source DIR: a copy of the same sources reuses the cached wheel (another node, another path);
    an edited file (a patched fork) is built again instead of getting the cached wheel."""
    mine = world.tmp / "my-checkout"
    shutil.copytree(sage_repo, mine, ignore=shutil.ignore_patterns(".git"))
    args = ("install", "sage", "--workload", "lora", "--python", world.py, "--yes", "--source", str(mine))
    first = run(world, *args)
    assert first.returncode == 0 and "compiled 4/4 units" in first.stderr, first.stderr

    def uninstall():
        subprocess.run([world.py, "-m", "pip", "uninstall", "-y", "-q", "sageattention"], env=world.env, check=True)

    uninstall()
    again = run(world, *args)
    assert again.returncode == 0 and "wheel cache hit" in again.stderr and "compiled" not in again.stderr
    # still installed: --source asks for a build of the checkout, not "already in place"
    init = mine / "sageattention/__init__.py"
    init.write_text(init.read_text() + "PATCHED = True\n")
    patched = run(world, *args)
    assert patched.returncode == 0 and "wheel cache hit" not in patched.stderr
    assert "compiled 4/4 units" in patched.stderr

    def wheel(r):
        return next(line.split()[-1] for line in r.stdout.splitlines() if line.strip().startswith("wheel:"))

    # each revision keeps its own wheel: the first is still cached beside the patched one
    assert Path(wheel(first)).parent != Path(wheel(patched)).parent and Path(wheel(first)).is_file()
    two = run(world, "install", "sage", "flash_attention_3", "--python", world.py, "--source", str(mine))
    assert two.returncode == 2 and "--source DIR builds one backend from that checkout" in two.stderr
    out = subprocess.run([world.py, "-I", "-c", "import sageattention; print(sageattention.PATCHED)"],
                         cwd=world.tmp, env=world.env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_a_same_version_rebuild_that_fails_verification_puts_the_old_build_back(world, sage_repo):
    """The v2.2.0 tag vs the pinned commit on the H200: same name, same version, another build. A
    version-only rollback would leave the broken build installed; the backup wheel must go back."""
    args = ("install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    assert run(world, *args).returncode == 0
    before = freeze(world)
    broken = world.tmp / "tag-checkout"
    shutil.copytree(sage_repo, broken, ignore=shutil.ignore_patterns(".git"))
    (broken / "sageattention/__init__.py").write_text("raise ImportError('wrong build')\n")
    r = run(world, *args, "--source", str(broken), "--report", "report.json")
    assert r.returncode == 8 and "verification of sage failed: import sageattention failed" in r.stderr
    assert "replaced by another build of the same version" in r.stderr
    assert "restored exactly as before" in r.stderr and freeze(world) == before
    (res,) = json.loads((world.tmp / "report.json").read_text())["results"]
    assert res["rollback"]["restored"] == ["sageattention==2.2.0"] and res["rollback"]["exact"] is True
    ok = subprocess.run([world.py, "-I", "-c", "import sageattention; print(sageattention.ok())"],
                        cwd=world.tmp, env=world.env, capture_output=True, text=True)
    assert ok.stdout.strip() == "True", ok.stderr  # the good build is back, not just its version


def test_a_checkout_left_by_an_earlier_run_starts_over(world, sage_repo):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=sage_repo, capture_output=True, text=True,
                            check=True).stdout.strip()
    left = Path(world.env["ATTN_INSTALL_CACHE"], "src", f"sage-{commit[:12]}")
    (left / "build").mkdir(parents=True)
    (left / "build" / "leftover.o").write_text("from a killed build")
    (left / "setup.py").write_text("raise SystemExit('half-fetched leftover')\n")
    r = run(world, "install", "sage", "--workload", "lora", "--python", world.py, "--yes")
    assert r.returncode == 0, r.stderr
    assert not (left / "build" / "leftover.o").exists() and "half-fetched" not in (left / "setup.py").read_text()
