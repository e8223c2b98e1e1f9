"""Every probe parser against real recorded output (tests/fixtures/SOURCES.md says where from)."""

from __future__ import annotations

import json

import pytest

from attn_installer.probe.amd import (
    gfx_from_target_version,
    normalise_gfx,
    parse_amd_smi_static_json,
    parse_hipconfig_version,
    parse_kfd_properties,
    parse_rocm_smi_json,
    parse_rocm_version_file,
    parse_rocminfo,
)
from attn_installer.probe.host import parse_cgroup_cpu_max, parse_cgroup_memory_limit, parse_meminfo_total
from attn_installer.probe.nvidia import (
    apply_visible_devices,
    parse_nvidia_smi_banner,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_xml,
    parse_nvml_reading,
    parse_proc_driver_version,
)
from attn_installer.probe.pyenv import parse_torch_cmake_abi, parse_torch_version_py
from attn_installer.probe.toolkit import host_compiler, parse_gcc_version, parse_nvcc_version


def test_nvml_reading_h200(fixture_text):
    reading = json.loads(fixture_text("nvidia/h200-shared/nvml-and-torch.json"))
    gpus, driver = parse_nvml_reading(reading)
    assert driver.version == "580.159.04" and driver.cuda == "13.0"
    assert len(gpus) == 1
    g = gpus[0]
    assert (g.name, g.arch, g.compute_capability) == ("NVIDIA H200", "sm_90", "9.0")
    assert g.memory_gb == pytest.approx(140.4, abs=0.1)


def _mig_reading(driver: str, gi=(1, 2)):
    return {
        "nvmlSystemGetDriverVersion": driver, "nvmlSystemGetCudaDriverVersion_v2": 12040,
        "devices": [{
            "nvmlDeviceGetName": "NVIDIA A100-SXM4-40GB", "nvmlDeviceGetCudaComputeCapability": [8, 0],
            "nvmlDeviceGetMemoryInfo.total": 42949672960, "nvmlDeviceGetUUID": "GPU-aaa",
            "nvmlDeviceGetMigMode": "[1, 1]",
            "mig_devices": [
                {"nvmlDeviceGetName": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "nvmlDeviceGetGpuInstanceId": gi[0],
                 "nvmlDeviceGetMemoryInfo.total": 5 * 1024**3, "nvmlDeviceGetUUID": "MIG-1"},
                {"nvmlDeviceGetName": "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "nvmlDeviceGetGpuInstanceId": gi[1],
                 "nvmlDeviceGetMemoryInfo.total": 20 * 1024**3, "nvmlDeviceGetUUID": "MIG-2"},
            ]}],
    }


def test_nvml_reading_mig_slices_are_gpus_of_their_own():
    # NVIDIA MIG user guide, "CUDA Device Enumeration": from R570 one compute instance per GPU instance
    gpus, driver = parse_nvml_reading(_mig_reading("570.86.15"))
    assert driver.cuda == "12.4"
    assert [g.mig for g in gpus] == [True, True]
    assert [g.memory_gb for g in gpus] == [5.0, 20.0]
    assert gpus[0].name.endswith("MIG 1g.5gb") and gpus[1].arch == "sm_80" and gpus[1].uuid == "MIG-2"
    same_gi, _ = parse_nvml_reading(_mig_reading("570.86.15", gi=(1, 1)))
    assert [g.uuid for g in same_gi] == ["MIG-1"]


def test_nvml_reading_mig_before_r570_is_one_device_per_process():
    # ... "With CUDA 11/R450 and CUDA 12/R525, only enumeration of a single MIG instance is supported"
    gpus, _ = parse_nvml_reading(_mig_reading("550.54.15"))
    assert [(g.uuid, g.index) for g in gpus] == [("MIG-1", 0)]


def test_nvidia_smi_csv_h200_device(fixture_text):
    # recorded with the six-field query (before mig.mode.current was asked): trailing fields may be missing
    boards, driver = parse_nvidia_smi_csv(fixture_text("nvidia/h200-device/nvidia-smi-query.csv"))
    assert driver == "580.159.04"
    assert boards[0].cc == "9.0" and boards[0].uuid.startswith("GPU-") and not boards[0].mig
    assert boards[0].memory_gb == pytest.approx(140.4, abs=0.1)


def test_nvidia_smi_csv_t4_five_columns(fixture_text):
    boards, driver = parse_nvidia_smi_csv(fixture_text("nvidia/other/nvidia_smi_query_csv_t4.txt"))
    assert (boards[0].name, boards[0].cc, boards[0].memory_gb) == ("Tesla T4", "7.5", 15.0)
    assert boards[0].uuid is None and driver == "580.159.04"


def test_nvidia_smi_csv_rejects_missing_compute_cap():
    with pytest.raises(ValueError, match="compute capability"):
        parse_nvidia_smi_csv("0, Tesla V100, [Field Not Found], 16160, 450.80.02\n")


@pytest.mark.parametrize(("rel", "cuda"), [
    ("nvidia/h200-device/nvidia-smi.txt", "13.0"),
    ("nvidia/other/nvidia-smi_banner_tesla-t4_colab_cuda12.2.txt", "12.2"),
    ("nvidia/other/nvidia-smi_banner_tesla-t4_cuda12.4.txt", "12.4"),
    ("nvidia/other/nvidia-smi_banner_h100_cuda12.2.txt", "12.2"),
    ("nvidia/other/nvidia-smi_banner_h100_cuda12.6_first-gpu.txt", "12.6"),
    ("nvidia/other/nvidia-smi_banner_rtx4070_cuda12.4.txt", "12.4"),
])
def test_nvidia_smi_banner(fixture_text, rel, cuda):
    assert parse_nvidia_smi_banner(fixture_text(rel)).cuda == cuda


@pytest.mark.parametrize("rel", ["nvidia/h200-device/nvidia-smi-q.xml", "nvidia/h200-shared/nvidia-smi-q.xml"])
def test_nvidia_smi_xml(fixture_text, rel):
    parsed = parse_nvidia_smi_xml(fixture_text(rel))
    assert parsed["driver_version"] == "580.159.04" and parsed["cuda_version"] == "13.0"
    assert parsed["gpus"][0]["name"] == "NVIDIA H200"
    assert parsed["gpus"][0]["mig"] is False
    assert parsed["gpus"][0]["architecture"] == "Hopper"


@pytest.mark.parametrize(("rel", "version"), [
    ("nvidia/other/proc_driver_nvidia_version_440.txt", "440.95.01"),
    ("nvidia/other/proc_driver_nvidia_version_418.txt", "418.56"),
])
def test_proc_driver_version(fixture_text, rel, version):
    assert parse_proc_driver_version(fixture_text(rel)) == version


def test_proc_driver_version_garbage():
    assert parse_proc_driver_version("nothing here\n") is None


@pytest.mark.parametrize(("rel", "version"), [
    ("nvidia/h200-device/nvcc-version.txt", "13.0"),
    ("nvidia/other/nvcc_version_12.1_linux.txt", "12.1"),
])
def test_nvcc_version(fixture_text, rel, version):
    assert parse_nvcc_version(fixture_text(rel)) == version


def test_gcc_version():
    assert parse_gcc_version("12.2.0\n") == "12.2.0"
    assert parse_gcc_version("clang version 17") is None


def _gpus(fixture_text):
    gpus, _ = parse_nvml_reading({
        "nvmlSystemGetDriverVersion": "580.1", "nvmlSystemGetCudaDriverVersion_v2": 13000,
        "devices": [
            {"nvmlDeviceGetName": n, "nvmlDeviceGetCudaComputeCapability": cc,
             "nvmlDeviceGetMemoryInfo.total": 1024**3, "nvmlDeviceGetUUID": u}
            for n, cc, u in [("A100", [8, 0], "GPU-aaa1"), ("T4", [7, 5], "GPU-bbb2"), ("H100", [9, 0], "GPU-ccc3")]
        ]})
    return gpus


@pytest.mark.parametrize(("value", "names"), [
    (None, ["A100", "T4", "H100"]),
    ("2,0", ["H100", "A100"]),
    ("GPU-bbb", ["T4"]),
    ("0,7,1", ["A100"]),
    ("", []),
    ("-1", []),
])
def test_cuda_visible_devices(fixture_text, value, names):
    gpus, _note = apply_visible_devices(_gpus(fixture_text), value)
    assert [g.name for g in gpus] == names
    assert [g.index for g in gpus] == list(range(len(names)))


@pytest.mark.parametrize(("text", "gfx"), [
    ("gfx942:sramecc+:xnack-", "gfx942"),
    ("amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-", "gfx90a"),
    ("gfx9010", "gfx90a"),
    ("gfx1100", "gfx1100"),
    ("no target", None),
])
def test_normalise_gfx(text, gfx):
    assert normalise_gfx(text) == gfx


@pytest.mark.parametrize(("value", "gfx"), [(90402, "gfx942"), (90010, "gfx90a"), (110000, "gfx1100"),
                                            (120001, "gfx1201"), (0, None)])
def test_gfx_from_target_version(value, gfx):
    assert gfx_from_target_version(value) == gfx


def test_rocm_smi_json_mi250x(fixture_text):
    cards = parse_rocm_smi_json(fixture_text("amd/rocm-smi_showproductname_json_mi250x.json"))
    assert cards == [{"name": "AMD INSTINCT MI200 (MCM) OAM LC MBA HPE C2", "arch": "gfx90a", "memory_gb": None}]


def test_rocm_smi_json_rx7900xt_with_memory(fixture_text):
    cards = parse_rocm_smi_json(fixture_text("amd/rocm-smi_productname_use_meminfo_json_rx7900xt.json"))
    assert cards[0]["name"] == "Radeon RX 7900 XT"
    assert cards[0]["arch"] == "gfx1100"
    assert cards[0]["memory_gb"] == pytest.approx(20.0, abs=0.1)


@pytest.mark.parametrize("rel", ["amd/rocm-smi_a_json_mi250_rocm6.2.4.json",
                                 "amd/rocm-smi_a_json_mi250_rocm5_2cards.json"])
def test_rocm_smi_json_full_dumps(fixture_text, rel):
    cards = parse_rocm_smi_json(fixture_text(rel))
    assert cards and all(c["name"] for c in cards)
    assert all(c["arch"] in ("gfx90a", None) for c in cards)


@pytest.mark.parametrize(("rel", "name", "gfx"), [
    ("amd/rocminfo_mi300x_vf_agent.txt", "AMD Instinct MI300X VF", "gfx942"),
    ("amd/rocminfo_mi300a_gfx942_agent5.txt", "AMD Instinct MI300A", "gfx942"),
    ("amd/rocminfo_rx7900xtx_gfx1100_agent2.txt", "Radeon RX 7900 XTX", "gfx1100"),
])
def test_rocminfo(fixture_text, rel, name, gfx):
    agents = parse_rocminfo(fixture_text(rel))
    assert agents and agents[0]["arch"] == gfx
    assert name in agents[0]["name"]


def test_amd_smi_static_json_shapes():
    listed = json.dumps([{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X",
                                             "target_graphics_version": "gfx942"},
                          "vram": {"size": {"value": 196592, "unit": "MB"}}}])
    wrapped = json.dumps({"gpu_data": [{"gpu": 0, "asic": {"market_name": "MI300X",
                                                          "target_graphics_version": "gfx942"},
                                        "vram": {"size": "196592 MB"}}]})
    for text in (listed, wrapped):
        (card,) = parse_amd_smi_static_json(text)
        assert card["arch"] == "gfx942" and card["memory_gb"] == pytest.approx(192.0, abs=0.1)


def test_kfd_properties(fixture_text):
    props = parse_kfd_properties(fixture_text("amd/kfd_properties_mi325x_gpu_node.txt"))
    assert gfx_from_target_version(props["gfx_target_version"]) == "gfx942"


@pytest.mark.parametrize(("rel", "version"), [
    ("amd/hipconfig_version_rocm6.0.txt", "6.0.32830"),
    ("amd/hipconfig_version_ubuntu_hipcc-rocm_7.2.txt", "7.2.53211"),
])
def test_hipconfig_version(fixture_text, rel, version):
    assert parse_hipconfig_version(fixture_text(rel)) == version


def test_rocm_version_file():
    assert parse_rocm_version_file("6.3.1-48\n") == "6.3.1"


def test_torch_version_py():
    text = ("__version__ = '2.11.0+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\n"
            "git_version = 'abc'\nhip: Optional[str] = None\n")
    assert parse_torch_version_py(text) == {"version": "2.11.0+cu130", "cuda": "13.0", "hip": None}


def test_torch_cmake_abi():
    assert parse_torch_cmake_abi('set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")') is False
    assert parse_torch_cmake_abi('set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")') is True
    assert parse_torch_cmake_abi("nothing") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("max\n", None), ("34359738368\n", 34359738368), ("9223372036854771712\n", None), ("", None),
])
def test_cgroup_memory(text, expected):
    assert parse_cgroup_memory_limit(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("200000 100000\n", 2.0), ("max 100000\n", None), ("junk", None)])
def test_cgroup_cpu(text, expected):
    assert parse_cgroup_cpu_max(text) == expected


def test_meminfo():
    assert parse_meminfo_total("MemTotal:       131981020 kB\nMemFree: 1 kB\n") == 131981020 * 1024


def test_host_compiler_is_the_one_nvcc_runs(tmp_path):
    assert host_compiler({}) == "gcc"
    assert host_compiler({"CC": "gcc-13", "CXX": "g++-13"}) == "gcc-13"
    # conda's CUDA packages put -ccbin in NVCC_PREPEND_FLAGS; it wins over $CC
    conda = {"CC": "gcc", "NVCC_PREPEND_FLAGS": "-ccbin=/opt/conda/bin/x86_64-conda-linux-gnu-c++"}
    assert host_compiler(conda) == "/opt/conda/bin/x86_64-conda-linux-gnu-c++"
    assert host_compiler({"NVCC_APPEND_FLAGS": "-O2 --compiler-bindir /usr/bin/g++-12"}) == "/usr/bin/g++-12"
    assert host_compiler({"NVCC_PREPEND_FLAGS": f"-ccbin {tmp_path}"}) == str(tmp_path / "gcc")
