"""Installs for real: pip into temporary virtual environments from a package index on loopback
(tests/pkgindex.py) holding small wheels built here: a stand-in torch, good and broken backends.
The GPU is a fake nvidia-smi printing recorded output; verification then stops at "no GPU"
after importing the backend, which is exactly where the broken ones fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import validate
from tests.installworld import XF, broken_xformers, freeze, good_xformers, run
from tests.pkgindex import build_wheel

pytestmark = pytest.mark.slow  # real pip, venvs, git and loopback servers


def test_install_xformers_pins_torch_and_reports(world):
    world.idx.add(good_xformers(world.wheels))
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--yes", "--report", "report.json")
    assert r.returncode == 0, r.stderr + r.stdout
    after = freeze(world)
    assert "torch==2.8.0+cu126" in after and f"xformers=={XF}" in after and "numpy==1.0" in after
    assert set(before.split()) <= set(after.split())
    assert "verify skipped: no GPU (import xformers.ops ok)" in r.stdout
    report = json.loads((world.tmp / "report.json").read_text())
    validate(report["facts"], "facts.schema.json")
    validate(report["plan"], "plan.schema.json")
    (res,) = report["results"]
    assert res["ok"] and res["changed"] == {"xformers": [None, XF]}
    assert [s["status"] for s in res["steps"]] == ["ok"] and res["steps"][0]["returncode"] == 0
    pins = Path(res["steps"][0]["argv"][res["steps"][0]["argv"].index("--constraint") + 1]).read_text()
    assert "torch==2.8.0+cu126" in pins.split()
    # the second run finds it in place: nothing installed, nothing changed
    again = run(world, "install", "--python", world.py, "--yes")
    assert again.returncode == 0 and "already in place" in again.stdout
    assert freeze(world) == after


def test_backend_needing_another_torch_is_refused_and_torch_stays(world):
    world.idx.add(good_xformers(world.wheels, requires=("torch>=2.9",)))
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--yes")
    assert r.returncode == 8, r.stderr
    assert f"xformers {XF} needs torch>=2.9; you have torch 2.8.0+cu126" in r.stderr
    assert "never moves torch" in r.stderr  # the hint of the conflict row
    assert "state: nothing was changed" in r.stderr
    assert freeze(world) == before


def test_failed_verification_restores_the_exact_freeze(world):
    world.idx.add(broken_xformers(world.wheels))
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--yes", "--report", "report.json")
    assert r.returncode == 8, r.stdout
    assert "verification of xformers failed: import xformers.ops failed" in r.stderr
    assert "undefined symbol" in r.stderr and "built for another torch version" in r.stderr
    assert "restored exactly as before" in r.stderr
    assert freeze(world) == before  # numpy 2.0 replaced 1.0 during the install: 1.0 is back
    (res,) = json.loads((world.tmp / "report.json").read_text())["results"]
    assert res["rollback"]["uninstalled"] == ["xformers"] and res["rollback"]["restored"] == ["numpy==1.0"]
    assert res["rollback"]["exact"] is True


def test_dry_run_changes_nothing(world):
    world.idx.add(good_xformers(world.wheels))
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: nothing was changed" in r.stdout and f"xformers=={XF}" in r.stdout
    assert "writes " in r.stdout and "torch==2.8.0+cu126" in r.stdout
    auto = run(world, "--auto", "--dry-run", "--python", world.py)
    assert auto.returncode == 0 and "would write attn-install-config.yaml" in auto.stdout
    assert not (world.tmp / "attn-install-config.yaml").exists()
    assert freeze(world) == before
    assert not any("POST" in q for q in world.idx.requests)


def test_offline_with_a_missing_wheel_names_it(world):
    house = world.tmp / "house"
    house.mkdir()
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--yes", "--offline", "--wheelhouse", str(house))
    assert r.returncode == 8
    assert f"the wheelhouse {house} has no wheel for xformers=={XF}" in r.stderr
    assert "attn-install download --facts" in r.stderr
    assert freeze(world) == before


def test_download_for_another_machine_then_install_offline(world):
    world.idx.add(good_xformers(world.wheels))
    probe = run(world, "probe", "--json", "--python", world.py)
    (world.tmp / "facts.json").write_text(probe.stdout)
    house = world.tmp / "house"
    d = run(world, "download", "--facts", "facts.json", "--wheelhouse", str(house))
    assert d.returncode == 0, d.stderr
    assert sorted(p.name for p in house.glob("*.whl")) == [f"xformers-{XF}-py3-none-any.whl"]  # numpy: already there
    offline = dict(world.env, PIP_INDEX_URL="http://127.0.0.1:9/simple")  # nothing listens on port 9
    r = run(world, "install", "--python", world.py, "--yes", "--offline", "--wheelhouse", str(house), env=offline)
    assert r.returncode == 0, r.stderr
    assert f"xformers=={XF}" in freeze(world)


def test_a_second_run_waits_for_the_lock_then_says_so(world):
    from attn_installer.install.lock import EnvLock

    world.idx.add(good_xformers(world.wheels))
    before = freeze(world)
    prefix = str(Path(world.py).parent.parent)
    with EnvLock(prefix, world.tmp / "cache", 0):
        r = run(world, "install", "--python", world.py, "--yes", "--lock-wait", "1")
    assert r.returncode == 9
    assert "locked by attn-install pid" in r.stderr and ".attn-install.lock" in r.stderr
    assert freeze(world) == before


def test_flash_attn_release_wheel_from_a_github_like_server(world):
    import hashlib

    env = dict(world.env, FAKE_GPU="h200")
    plan = json.loads(run(world, "plan", "--json", "--python", world.py, "--backend", "flash_attention_2",
                          env=env).stdout)
    fa2 = next(b for b in plan["backends"] if b["name"] == "flash_attention_2")
    assert fa2["method"] == "wheel", fa2["reasons"]
    filename = fa2["download"]["filename"]
    tag = filename.split("-")[2] + "-" + filename.split("-")[3] + "-" + filename.split("-")[4][:-4]
    wheel = build_wheel(world.tmp / "gh", "flash_attn", filename.split("-")[1],
                        {"flash_attn/__init__.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError\n"},
                        ("torch",), tag=tag)
    (world.idx.root / "assets" / filename).write_bytes(wheel.read_bytes())
    # a wrong hash in the matrix: downloaded, refused, nothing installed
    fa = world.matrices / "flash_attn_wheels.toml"
    good = fa.read_text()
    def with_sha(digest: str) -> str:
        return good.replace('version = "2.8.3"\n', f'version = "2.8.3"\nsha256 = {{ "{filename}" = "{digest}" }}\n', 1)

    fa.write_text(with_sha("0" * 64))
    before = freeze(world)
    bad = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=env)
    assert bad.returncode == 8 and "does not match the matrix's" in bad.stderr
    assert freeze(world) == before
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    fa.write_text(with_sha(digest))
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert "exists" in r.stderr and "sha256 ok" in r.stderr
    assert any(q.startswith("HEAD /Dao-AILab/flash-attention/releases/download/") for q in world.idx.requests)
    assert "flash_attn @ file://" in freeze(world)  # installed from the verified file in the cache


def test_colab_auto_end_to_end(world):
    """The Colab cell's path: --auto --yes in Colab's own Python on a T4 (simulated)."""
    world.idx.add(good_xformers(world.wheels))
    env = dict(world.env, COLAB_RELEASE_TAG="release-colab-20261101")
    r = run(world, "--auto", "--yes", "--python", world.py, env=env)
    assert r.returncode == 0, r.stderr
    cfg = (world.tmp / "attn-install-config.yaml").read_text()
    assert "attn_implementation: xformers" in cfg and "fp16: true" in cfg and "bf16: false" in cfg
    assert "torch==2.8.0+cu126" in freeze(world)
    once = freeze(world)
    again = run(world, "--auto", "--yes", "--python", world.py, env=env)
    assert again.returncode == 0 and "already in place" in again.stdout
    assert freeze(world) == once


def test_auto_merge_installs_what_fits_and_merges_into_the_users_config(world):
    """--auto --merge FILE (issue #13): planned from the user's config, installed, merged into it."""
    world.idx.add(good_xformers(world.wheels))
    cfg = world.tmp / "train.yaml"
    text = ("base_model: org/not-cached\nadapter: lora\nsample_packing: true\nflash_attention: true  # from the image\n"
            "bf16: true\nlearning_rate: 0.0002\n")
    cfg.write_text(text)
    env = dict(world.env, COLAB_RELEASE_TAG="release-colab-20261101")
    r = run(world, "--auto", "--yes", "--python", world.py, "--merge", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert "changed: flash_attention: true selects flash_attention_2, which cannot run here: " in r.stdout
    assert "xformers: OK: installed" in r.stdout and f"config: {cfg} (xformers" in r.stdout
    merged = cfg.read_text()
    assert merged == ("base_model: org/not-cached\nadapter: lora\nsample_packing: true\nxformers_attention: true\n"
                      "bf16: false\nlearning_rate: 0.0002\nfp16: true\n")  # axolotl not installed: the file's keys
    assert (world.tmp / "train.yaml.bak").read_text() == text
    assert not (world.tmp / "attn-install-config.yaml").exists()
    assert "torch==2.8.0+cu126" in freeze(world)


def test_colab_cell_twice_installs_once_and_changes_nothing(world, deps_house):
    """The real Colab cell, run twice in a Python that holds attn-install (simulated Colab, fake T4)."""
    from attn_installer.colab import colab_cell

    world.idx.add(good_xformers(world.wheels))
    subprocess.run([world.py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(deps_house),
                    *[p.name.split("-")[0] for p in deps_house.glob("*.whl")]], env=world.env, check=True)
    env = dict(world.env, COLAB_RELEASE_TAG="release-colab-20261101")
    work = world.tmp / "content"
    work.mkdir()
    (world.tmp / "cell.py").write_text(colab_cell())
    runs = []
    for _ in range(2):
        runs.append(subprocess.run([world.py, str(world.tmp / "cell.py")], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=300, check=False))
        assert runs[-1].returncode == 0, runs[-1].stdout + runs[-1].stderr
        if len(runs) == 1:
            once = freeze(world)
    out = runs[0].stdout
    assert "is already installed" in out and "Tesla T4" in out and "xformers: OK: installed" in out
    assert "xformers: OK: already in place" in runs[1].stdout
    cfg = (work / "attn-install-config.yaml").read_text()
    assert "attn_implementation: xformers" in cfg and "fp16: true" in cfg
    assert out.endswith(cfg) and freeze(world) == once and "torch==2.8.0+cu126" in once


@pytest.mark.skipif(shutil.which("uv") is None and not (Path(sys.executable).parent / "uv").exists(),
                    reason="uv not installed")
def test_uv_installer_uses_the_same_pins(world):
    world.idx.add(good_xformers(world.wheels, requires=("torch>=2.9",)))
    env = dict(world.env, UV_INDEX_URL=world.env["PIP_INDEX_URL"], UV_CACHE_DIR=str(world.tmp / "uvcache"),
               UV_NO_CONFIG="1")
    before = freeze(world)
    r = run(world, "install", "--python", world.py, "--yes", "--installer", "uv", env=env)
    assert r.returncode == 8, r.stderr
    assert freeze(world) == before
    world.idx.remove("xformers")
    world.idx.add(good_xformers(world.wheels))
    ok = run(world, "install", "--python", world.py, "--yes", "--installer", "uv", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "torch==2.8.0+cu126" in freeze(world) and f"xformers=={XF}" in freeze(world)
