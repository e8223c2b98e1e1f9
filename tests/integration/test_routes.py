"""The route walk for real: an H200 (recorded nvidia-smi) with a stand-in torch 2.11.0+cu130 and no
nvcc, FA3 offered by the PyTorch index (loopback, the index's /whl/<flavour>/<project>/ layout) and by
the wheel farm (the GitHub-release mimic, the farm's asset names). pip installs into a throwaway
venv; verification stops at "no GPU" after importing the backend, which is where broken wheels fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.installworld import freeze, run
from tests.pkgindex import build_wheel, stand_in_torch

pytestmark = pytest.mark.slow  # real pip, venvs and loopback servers

INDEX_FA3 = "flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"
GOOD = {"flash_attn_interface.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError\n"}
BROKEN = {"flash_attn_interface.py":
          "raise ImportError('/venv/flash_attn_3/_C.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n"}


@pytest.fixture
def h200(world):
    """The world's venv moved to torch 2.11.0+cu130 (what the H200 host runs), the fake GPU an H200."""
    wheel = stand_in_torch(world.wheels, "2.11.0+cu130", "13.0")
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
                   env=world.env, check=True, capture_output=True)
    for name in ("einops", "packaging", "ninja"):  # what the index's FA3 wheel needs, from the default index
        world.idx.add(build_wheel(world.wheels, name, "1.0", {f"{name}_standin.py": ""}))
    # no CUDA toolkit on this node: nothing here may need nvcc
    world.env = dict(world.env, FAKE_GPU="h200", CUDA_HOME=str(world.tmp / "no-cuda-toolkit"))
    return world


def fa3_plan(w) -> dict:
    r = run(w, "plan", "--json", "--python", w.py, "--backend", "flash_attention_3")
    assert r.returncode == 0, r.stderr
    return next(b for b in json.loads(r.stdout)["backends"] if b["name"] == "flash_attention_3")


def farm_asset(w, fa3: dict, files: dict[str, str]) -> Path:
    """The farm's wheel for this machine, built under the name the plan downloads, served as an asset."""
    farm = next(r for r in fa3["routes"] if r["kind"] == "wheel_farm")
    name = farm["download"]["filename"]
    _, version, *tag = name[:-4].split("-")
    wheel = build_wheel(w.tmp / "farm", "flash_attn_3", version, files, ("torch",), tag="-".join(tag))
    dest = w.idx.root / "assets" / name
    dest.write_bytes(wheel.read_bytes())
    return dest


def test_a_machine_without_nvcc_gets_fa3_prebuilt_and_the_walk_skips_a_missing_index_wheel(h200):
    probe = json.loads(run(h200, "probe", "--json", "--python", h200.py).stdout)
    assert probe["toolkit"]["nvcc"] is None
    fa3 = fa3_plan(h200)
    assert [r["kind"] for r in fa3["routes"]] == ["torch_index", "wheel_farm", "hub_kernel"]  # no nvcc: no build
    assert fa3["route"] == "torch_index" and fa3["method"] == "pypi"
    assert not any("nvcc" in s for s in fa3["reasons"])  # no compiler needed, none asked for
    asset = farm_asset(h200, fa3, GOOD)
    before = freeze(h200)
    # the index has no flash-attn-3 (a mirror without it): the farm's wheel is next
    r = run(h200, "--auto", "--python", h200.py, "--yes", "--report", "report.json", "-o", "attn.yaml")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "flash_attention_3 by torch_index failed" in r.stderr and "trying the next route: wheel_farm" in r.stderr
    assert "verify skipped: no GPU (import flash_attn_interface ok)" in r.stdout
    report = json.loads((h200.tmp / "report.json").read_text())
    (res,) = report["results"]
    assert res["ok"] and res["route"] == "wheel_farm"
    assert [(a["route"], a["ok"]) for a in res["attempts"]] == [("torch_index", False), ("wheel_farm", True)]
    assert any(q.startswith("GET /whl/cu130/flash-attn-3/") for q in h200.idx.requests)
    assert "attn_implementation: flash_attention_3" in (h200.tmp / "attn.yaml").read_text()
    after = freeze(h200)
    added = set(after.splitlines()) - set(before.splitlines())
    assert set(before.splitlines()) <= set(after.splitlines()) and len(added) == 1 and "flash_attn_3 @ file://" in after
    # nvcc was never looked for on the way: the source route was not tried
    assert "nvcc" not in r.stderr.replace(str(h200.tmp), "<tmp>")

    # the cached download is corrupted: refused, named, fetched again
    cached = next((h200.tmp / "cache" / "downloads").glob("flash_attn_3-*.whl"))
    cached.write_bytes(b"not a wheel")
    subprocess.run([h200.py, "-m", "pip", "uninstall", "-y", "-q", "flash_attn_3"], env=h200.env, check=True)
    again = run(h200, "install", "flash_attention_3", "--route", "wheel_farm", "--python", h200.py, "--yes")
    assert again.returncode == 0, again.stderr
    assert f"the cached {cached} is not usable (sha256" in again.stderr
    assert "recorded when it was downloaded" in again.stderr
    assert freeze(h200) == after

    # the farm re-uploads another file under the same name: the first download's record refuses it
    cached.unlink()
    asset.write_bytes(build_wheel(h200.tmp / "farm2", "flash_attn_3", "3.0.0", {"x.py": ""}).read_bytes())
    subprocess.run([h200.py, "-m", "pip", "uninstall", "-y", "-q", "flash_attn_3"], env=h200.env, check=True)
    mid = freeze(h200)
    bad = run(h200, "install", "flash_attention_3", "--route", "wheel_farm", "--python", h200.py, "--yes")
    assert bad.returncode == 8 and "is not the file first downloaded under that name" in bad.stderr
    assert freeze(h200) == mid


def test_a_wheel_failing_verification_is_rolled_back_and_the_next_route_installed(h200):
    fa3 = fa3_plan(h200)
    # the index's wheel imports like one built for another torch; its dependencies come with it
    h200.idx.add(build_wheel(h200.tmp / "ix", "flash_attn_3", "3.0.0", BROKEN, ("torch", "einops"),
                             tag="cp39-abi3-manylinux_2_28_x86_64"))
    farm_asset(h200, fa3, GOOD)
    before = freeze(h200)
    r = run(h200, "install", "flash_attention_3", "--python", h200.py, "--yes", "--report", "report.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "verification of flash_attention_3 failed: import flash_attn_interface failed" in r.stderr, r.stderr
    assert "trying the next route: wheel_farm" in r.stderr
    (res,) = json.loads((h200.tmp / "report.json").read_text())["results"]
    first, second = res["attempts"]
    assert first["route"] == "torch_index" and not first["ok"] and "undefined symbol" in first["message"]
    assert second["route"] == "wheel_farm" and second["ok"]
    after = freeze(h200)
    # einops, packaging and ninja came and went with the broken wheel; only the farm's FA3 is new
    removed = next(ln for ln in r.stderr.splitlines() if "restoring the environment: removing" in ln)
    assert all(n in removed for n in ("flash-attn-3", "einops", "packaging", "ninja")), removed
    assert set(after.splitlines()) - set(before.splitlines()) == {
        next(line for line in after.splitlines() if line.startswith("flash_attn_3"))}


def test_the_last_route_failing_restores_everything_and_names_each_attempt(h200):
    h200.idx.add(build_wheel(h200.tmp / "ix", "flash_attn_3", "3.0.0", BROKEN, ("torch",),
                             tag="cp39-abi3-manylinux_2_28_x86_64"))
    before = freeze(h200)  # no farm asset: its HEAD is a 404
    r = run(h200, "install", "flash_attention_3", "--no-source", "--python", h200.py, "--yes")
    assert r.returncode == 8, r.stdout
    assert "trying the next route: wheel_farm" in r.stderr and "404" in r.stderr
    assert freeze(h200) == before


def test_route_and_no_source_choose(h200):
    r = run(h200, "plan", "--json", "--python", h200.py, "--route", "wheel_farm")
    fa3 = next(b for b in json.loads(r.stdout)["backends"] if b["name"] == "flash_attention_3")
    assert fa3["route"] == "wheel_farm" and [x["kind"] for x in fa3["routes"]] == ["wheel_farm"]
    r = run(h200, "plan", "--json", "--python", h200.py, "--no-source")
    fa3 = next(b for b in json.loads(r.stdout)["backends"] if b["name"] == "flash_attention_3")
    assert "source" not in [x["kind"] for x in fa3["routes"]]
    bad = run(h200, "plan", "--route", "nowhere")
    assert bad.returncode == 2 and "nowhere" in bad.stderr


FA4_CUTE = "def flash_attn_func(*a, **k):\n    return 'fa4 b36'\n"
FA2_OLD_CUTE = "def flash_attn_func(*a, **k):\n    return 'the old copy flash-attn ships'\n"


def _site(w) -> Path:
    out = subprocess.run([w.py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         env=w.env, capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def _fa2_release_asset(w, files: dict[str, str]) -> None:
    env = dict(w.env, FAKE_GPU="h200")
    plan = json.loads(run(w, "plan", "--json", "--python", w.py, "--backend", "flash_attention_2", env=env).stdout)
    fa2 = next(b for b in plan["backends"] if b["name"] == "flash_attention_2")
    assert fa2["route"] == "release_asset", fa2["reasons"]
    name = fa2["download"]["filename"]
    _, version, *tag = name[:-4].split("-")
    wheel = build_wheel(w.tmp / "gh", "flash_attn", version, files, ("torch",), tag="-".join(tag))
    (w.idx.root / "assets" / name).write_bytes(wheel.read_bytes())


@pytest.mark.parametrize("fa2_works", [True, False], ids=["fa2-ok", "fa2-broken"])
def test_fa2_after_fa4_keeps_fa4s_files_and_its_rollback_never_removes_them(world, fa2_works):
    """flash-attn <= 2.8.3.post2 ships an old flash_attn/cute, FA4's package: installed after FA4 it
    overwrites FA4's files, and its uninstall deletes them."""
    fa4 = build_wheel(world.tmp / "fa4", "flash_attn_4", "4.0.0b36",
                      {"flash_attn/cute/__init__.py": FA4_CUTE}, ("torch",))
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--no-deps", str(fa4)], env=world.env, check=True)
    cute = _site(world) / "flash_attn" / "cute" / "__init__.py"
    fa2_files = {"flash_attn/__init__.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError\n"
                 if fa2_works else "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c10')\n",
                 "flash_attn/cute/__init__.py": FA2_OLD_CUTE}
    _fa2_release_asset(world, fa2_files)
    before = freeze(world)
    env = dict(world.env, FAKE_GPU="h200")
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=env)
    assert cute.read_text() == FA4_CUTE  # FA4's own file, whatever happened to FA2
    if fa2_works:
        assert r.returncode == 0, r.stderr + r.stdout
        assert "backed up flash-attn-4 4.0.0b36" in r.stderr and "reinstall flash-attn-4 4.0.0b36" in r.stderr
        assert "verifying flash_attention_4 too" in r.stderr
        assert "flash-attn==" in freeze(world) or "flash_attn @" in freeze(world)
    else:
        assert r.returncode == 8, r.stdout
        assert "restored exactly as before" in r.stderr
        assert freeze(world) == before


def test_auto_falls_back_to_the_next_backend_when_no_route_of_the_best_one_works(h200):
    """An offline mirror without FA3, no farm, no hub: --auto does not stop at "nothing installed"."""
    before = freeze(h200)
    r = run(h200, "--auto", "--python", h200.py, "--yes", "-o", "attn.yaml", "--report", "report.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "flash_attention_3 could not be installed by any route (last, hub_kernel: " in r.stderr
    assert "; --auto tries the next backend that fits: sdpa" in r.stderr
    assert "attn_implementation: sdpa" in (h200.tmp / "attn.yaml").read_text()
    results = json.loads((h200.tmp / "report.json").read_text())["results"]
    assert [(x["backend"], x["ok"]) for x in results] == [("flash_attention_3", False), ("sdpa", True)]
    assert [a["route"] for a in results[0]["attempts"]] == ["torch_index", "wheel_farm", "hub_kernel"]
    assert freeze(h200) == before
    # a named backend is what the user asked for: no fallback there
    named = run(h200, "install", "flash_attention_3", "--python", h200.py, "--yes")
    assert named.returncode == 8 and "tries the next backend" not in named.stderr
