"""The CLI on recorded machines: fake nvidia-smi / rocminfo / hipconfig executables on PATH print what
those machines printed (tests/fixtures/probe-corpus, tests/smi_replay.py), torch is a stand-in read
from its files. `probe --json` must describe the machine and `plan --json` recommend a backend."""

from __future__ import annotations

import json
import os

import pytest

from tests.cli.conftest import cli, fake_bin, fake_torch
from tests.conftest import validate
from tests.smi_replay import CORPUS, Recording, install

CC_ERROR = "2-nvidia-old-drivers/nvidia-smi-compute_cap-error_inside-snap_issue-quote.txt"
V100S = "3-nvidia-smi-multigpu-mig/nvidia-smi-qx_driver-460.73.01_cuda-11.2_8x-tesla-v100s-pcie-32gb.xml"
A100_MIG = ("3-nvidia-smi-multigpu-mig/nvidia-smi-qx_driver-535.54.03_cuda-12.2_a100-sxm4-80gb_mig-enabled_"
            "4gpu-host-only-gpu0-kept.xml")
A100_MIG_LIST = "3-nvidia-smi-multigpu-mig/nvidia-smi-L_driver-535.x_4x-a100-sxm4-80gb_gpu0-mig-4x-1g.20gb.txt"


def machine_env(tmp_path, bindir, torch_version, cuda="None", hip=None, **extra):
    site = fake_torch(tmp_path, version=torch_version, cuda=cuda)
    if hip is not None:
        (site / "torch/version.py").write_text(
            f"__version__ = '{torch_version}'\ncuda: Optional[str] = None\nhip: Optional[str] = '{hip}'\n")
    drop = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_PATH", "CC", "XDG_CACHE_HOME",
            "ATTN_INSTALL_CACHE", "VIRTUAL_ENV", "CONDA_PREFIX", "HSA_OVERRIDE_GFX_VERSION", "CUDA_DEVICE_ORDER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"PATH": f"{bindir}{os.pathsep}/usr/bin:/bin", "PYTHONPATH": str(site), "ATTN_INSTALL_NO_NVML": "1",
                "HOME": str(tmp_path), "CUDA_HOME": str(tmp_path / "no-cuda-toolkit"), **extra})
    return env


def probe_json(env):
    r = cli(env, "probe", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    validate(facts, "facts.schema.json")
    return facts


def plan_json(env):
    r = cli(env, "plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    validate(plan, "plan.schema.json")
    return plan


def test_610_driver(tmp_path, allow_subprocess):
    bindir = install(Recording(
        query="1-nvidia-smi-banner/nvidia-smi-query-gpu-csv_driver-610.57.04_rtx-2080-super_linux.txt",
        banner="1-nvidia-smi-banner/nvidia-smi-banner_driver-610.57.04_rtx-2080-super_linux.txt"), tmp_path / "bin")
    env = machine_env(tmp_path, bindir, "2.11.0+cu130", cuda="'13.0'")
    facts = probe_json(env)
    assert facts["driver"] == {"vendor": "nvidia", "version": "610.57.04", "cuda": "13.3", "rocm": None}
    assert [(g["name"], g["arch"]) for g in facts["gpus"]] == [("NVIDIA GeForce RTX 2080 SUPER", "sm_75")]
    assert facts["sources"]["driver.cuda"] == "nvidia-smi banner"
    assert plan_json(env)["recommended"] is not None


@pytest.mark.parametrize(("visible", "uuids"), [
    (None, 8), ("1,0", ["GPU-bbf7a241", "GPU-76098dc1"]), ("GPU-2aa87d54", ["GPU-2aa87d54"]), ("5,5", []),
])
def test_eight_gpu_old_driver_host(tmp_path, allow_subprocess, visible, uuids):
    bindir = install(Recording(query_error=CC_ERROR, xml=V100S), tmp_path / "bin")
    env = machine_env(tmp_path, bindir, "2.4.1+cu118", cuda="'11.8'",
                      **({"CUDA_VISIBLE_DEVICES": visible} if visible is not None else {}))
    facts = probe_json(env)
    got = [g["uuid"][:12] for g in facts["gpus"]]
    assert (len(got) == uuids) if isinstance(uuids, int) else (got == uuids)
    assert all(g["arch"] == "sm_70" and g["compute_capability"] == "7.0" for g in facts["gpus"])
    assert facts["driver"]["version"] == "460.73.01" and facts["driver"]["cuda"] == "11.2"
    assert facts["sources"]["gpus"] == "nvidia-smi -q -x"
    if facts["gpus"]:
        assert facts["sources"]["gpus.compute_capability"].startswith("matrices/gpus.toml by GPU name")
        assert plan_json(env)["recommended"] is not None


def test_mig_slice_by_its_uuid(tmp_path, allow_subprocess):
    bindir = install(Recording(xml=A100_MIG, listing=A100_MIG_LIST), tmp_path / "bin")
    env = machine_env(tmp_path, bindir, "2.8.0+cu128", cuda="'12.8'", CUDA_VISIBLE_DEVICES="MIG-a45882f0")
    facts = probe_json(env)
    assert [(g["name"], g["uuid"][:12], g["mig"]) for g in facts["gpus"]] == [
        ("NVIDIA A100-SXM4-80GB MIG 1g.20gb", "MIG-a45882f0", True)]
    assert plan_json(env)["recommended"] is not None


def test_mi50_host_with_a_rocm_62_torch(tmp_path, allow_subprocess):
    recorded = CORPUS / "5-rocminfo/rocminfo_rocm-old-runtime-1.1_8x-gfx906-vega20-mi50-class_epyc7551p.txt"
    bindir = fake_bin(tmp_path, "rocminfo", f"cat {recorded}\n")
    env = machine_env(tmp_path, bindir, "2.5.1+rocm6.2", hip="6.2.41133-dd7f95766")
    facts = probe_json(env)
    assert len(facts["gpus"]) == 8 and {g["arch"] for g in facts["gpus"]} == {"gfx906"}
    assert {g["memory_gb"] for g in facts["gpus"]} == {32.0}
    plan = plan_json(env)
    assert plan["recommended"] == "sdpa" and not plan["blockers"]
    sdpa = next(b for b in plan["backends"] if b["name"] == "sdpa")
    assert any("SDPA runs its math kernel on gfx906" in r for r in sdpa["reasons"])


def test_distribution_rocm_under_usr(tmp_path, allow_subprocess):
    """Ubuntu's hipcc-rocm / hipconfig (no /opt/rocm) and a gfx1030 card with a ROCm 6.4 torch."""
    hipconfig = CORPUS / "6-distro-rocm-hipconfig/hipconfig-version_ubuntu-distro_hipcc-rocm_7.2.53211-9999.txt"
    rocminfo = CORPUS / "5-rocminfo/rocminfo_rocm-unknown-runtime-1.1_rx6900xt-gfx1030_i9-12900k_ansi-colour-header.txt"
    bindir = fake_bin(tmp_path, "hipconfig", f"grep -v '^# ' {hipconfig}\n")
    fake_bin(tmp_path, "hipcc", "exit 0\n")
    fake_bin(tmp_path, "rocminfo", f"cat {rocminfo}\n")
    env = machine_env(tmp_path, bindir, "2.8.0+rocm6.4", hip="6.4.43482-0f2d60242")
    facts = probe_json(env)
    assert facts["toolkit"]["rocm"] == "7.2.53211" and facts["toolkit"]["hipcc"] == str(bindir / "hipcc")
    assert facts["sources"]["toolkit.rocm"] == "hipconfig --version"
    assert [(g["name"], g["arch"], g["memory_gb"]) for g in facts["gpus"]] == [
        ("AMD Radeon RX 6900 XT", "gfx1030", 16.0)]
    plan = plan_json(env)
    assert plan["recommended"] == "sdpa" and not plan["blockers"]
