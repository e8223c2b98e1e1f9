"""Hub kernels for real: the `kernels` package (repacked from this environment) installed by pip
into a throwaway venv from the loopback index, a kernel fetched from a loopback mimic of the Hugging
Face Hub (tests/hubmimic.py) into the venv's Hub cache by target/attn_hubfetch.py, then loaded by
kernels itself with the Hub offline (verification stops at "no GPU" after that load)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.hubmimic import HubMimic
from tests.installworld import freeze, run
from tests.pkgindex import stand_in_torch

pytestmark = pytest.mark.slow  # real pip, venvs and loopback servers

REPO = "kernels-community/flash-attn3"
VARIANTS = ("torch-stable-abi29-cu130-x86_64-linux", "torch-stable-abi29-cu126-x86_64-linux",
            "torch212-cxx11-cu130-x86_64-linux", "torch-stable-abi29-cu130-aarch64-linux")
GOOD = b"def flash_attn_func(*a, **k):\n    raise RuntimeError('no GPU here')\n"
BROKEN = b"raise ImportError('_flash_attn3_cuda.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n"


def kernel_files(init: bytes) -> dict[str, bytes]:
    files = {"README.md": b"# flash-attn3 (test mimic)\n"}
    for v in VARIANTS:
        meta = {"name": "flash-attn3", "id": f"_flash_attn3_{v.replace('-', '_')}", "version": 1,
                "license": "BSD-3-Clause", "python-depends": [], "backend": {"type": "cuda"}}
        files[f"build/{v}/metadata.json"] = json.dumps(meta).encode()
        files[f"build/{v}/__init__.py"] = init
    return files


@pytest.fixture
def hub(world, hub_house):
    """An H200 world (torch 2.11.0+cu130) whose index also serves kernels and its dependencies, and
    a Hub mimic holding kernels-community/flash-attn3 v1."""
    wheel = stand_in_torch(world.wheels, "2.11.0+cu130", "13.0")
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
                   env=world.env, check=True, capture_output=True)
    for w in sorted(hub_house.glob("*.whl")):
        world.idx.add(w)
    mimic = HubMimic()
    world.hub = mimic
    world.hf_cache = world.tmp / "hf" / "hub"
    world.env = dict(world.env, FAKE_GPU="h200", HF_ENDPOINT=mimic.url, HF_HOME=str(world.tmp / "hf"))
    yield world
    mimic.close()


def cache_listing(w) -> list[str]:
    root = w.hf_cache
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.is_dir() else []


def test_hub_kernel_installed_verified_offline_and_pinned_in_the_config(hub):
    sha = hub.hub.repo(REPO).commit(kernel_files(GOOD), "v1")
    before = freeze(hub)
    r = run(hub, "--auto", "--route", "hub_kernel", "--python", hub.py, "--yes", "-o", "attn.yaml",
            "--report", "report.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"verify skipped: no GPU (hub kernel {REPO}@{sha} loaded from the cache)" in r.stdout
    cfg = (hub.tmp / "attn.yaml").read_text()
    assert f"attn_implementation: {REPO}@{sha}" in cfg and "sample_packing: true" in cfg
    snap = hub.hf_cache / "kernels--kernels-community--flash-attn3"
    assert (snap / "refs" / "v1").read_text() == sha  # offline nodes resolve version=1
    assert not (snap / "trees" / f"{sha}.json").exists()  # else an offline one-variant snapshot fails
    assert sorted(p.name for p in (snap / "snapshots" / sha / "build").iterdir()) == [VARIANTS[0]]
    (res,) = json.loads((hub.tmp / "report.json").read_text())["results"]
    assert res["hub"]["revision"] == sha and res["hub"]["variant"] == VARIANTS[0]
    assert "kernels==" in freeze(hub) and set(before.splitlines()) <= set(freeze(hub).splitlines())
    # the trust lookup, refs, the build/ listing and the variant's files were all the Hub saw
    assert any("/api/kernels/kernels-community/flash-attn3/refs" in q for q in hub.hub.requests)
    assert not any(VARIANTS[1] in q for q in hub.hub.requests)

    # kernels itself, offline, by version and by the pinned commit (what transformers calls)
    code = ("from kernels import get_kernel\n"
            f"print(get_kernel({REPO!r}, version=1).__name__, get_kernel({REPO!r}, revision={sha!r}).__name__)")
    hub.hub.offline = True
    off = subprocess.run([hub.py, "-c", code], env=dict(hub.env, HF_HUB_OFFLINE="1"), capture_output=True,
                         text=True, timeout=120, check=False)
    assert off.returncode == 0, off.stderr


def test_a_hub_kernel_failing_verification_leaves_env_and_cache_as_they_were(hub):
    hub.hub.repo(REPO).commit(kernel_files(BROKEN), "v1")
    before, cache_before = freeze(hub), cache_listing(hub)
    r = run(hub, "install", "flash_attention_3", "--route", "hub_kernel", "--python", hub.py, "--yes")
    assert r.returncode == 8, r.stdout
    assert f"loading hub kernel {REPO}@" in r.stderr and "undefined symbol" in r.stderr
    assert "restored exactly as before" in r.stderr
    assert freeze(hub) == before
    assert [p for p in cache_listing(hub) if "flash-attn3" in p] == [
        p for p in cache_before if "flash-attn3" in p] == []


def test_an_offline_node_installs_a_pre_staged_hub_kernel(hub, tmp_path):
    sha = hub.hub.repo(REPO).commit(kernel_files(GOOD), "v1")
    facts = tmp_path / "node.json"
    probe = run(hub, "probe", "--json", "--python", hub.py)
    assert probe.returncode == 0, probe.stderr
    facts.write_text(probe.stdout)
    wh = tmp_path / "wheelhouse"
    d = run(hub, "download", "flash_attention_3", "--facts", str(facts), "--wheelhouse", str(wh),
            "--route", "hub_kernel")
    assert d.returncode == 0, d.stderr + d.stdout
    assert f"hub kernel {REPO} v1 = {sha[:12]}, {VARIANTS[0]} (hub/)" in d.stdout
    assert any(p.name.startswith("kernels-") for p in wh.glob("*.whl"))
    # the node: no index, no Hub
    hub.hub.offline = True
    hub.idx.close()
    r = run(hub, "install", "flash_attention_3", "--route", "hub_kernel", "--python", hub.py, "--yes",
            "--wheelhouse", str(wh), "--offline")
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"hub kernel {REPO}@{sha} loaded from the cache" in r.stdout
    assert (hub.hf_cache / "kernels--kernels-community--flash-attn3" / "refs" / "v1").read_text() == sha
