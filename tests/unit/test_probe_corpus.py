"""The probe against the corpus of real outputs in tests/fixtures/probe-corpus (SOURCES.md there says
where each came from): every parser on every file of its kind, then the probe end to end with
nvidia-smi answering from one machine's recordings (tests/smi_replay.py) and fake /sys, /opt trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.version import Version

from attn_installer.matrix import load_matrix
from attn_installer.probe import probe_system
from attn_installer.probe.amd import (
    gfx_from_target_version,
    normalise_gfx,
    parse_hipconfig_version,
    parse_kfd_properties,
    parse_rocm_smi_json,
    parse_rocm_smi_text,
    parse_rocminfo,
    probe_amd,
)
from attn_installer.probe.nvidia import (
    SMI_FIELDS,
    Board,
    capability_from_name,
    cuda_devices,
    parse_nvidia_smi_banner,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
    probe_nvidia,
)
from tests.conftest import FakeRunner, validate
from tests.smi_replay import CORPUS, Recording, ReplayRunner, project

B = "1-nvidia-smi-banner/"
OLD = "2-nvidia-old-drivers/"
MULTI = "3-nvidia-smi-multigpu-mig/"
ROCM_SMI = "4-rocm-smi/"
ROCMINFO = "5-rocminfo/"
HIP = "6-distro-rocm-hipconfig/"
CC_ERROR = OLD + "nvidia-smi-compute_cap-error_inside-snap_issue-quote.txt"
A100_MIG_XML = MULTI + "nvidia-smi-qx_driver-510.47.03_cuda-11.6_a100-sxm4-40gb_mig-enabled.xml"


def text(rel: str) -> str:
    return (CORPUS / rel).read_text(encoding="utf-8", errors="replace")


def table():
    return load_matrix().gpu_capabilities


def test_sources_md_covers_exactly_the_corpus():
    listed = set(re.findall(r"^### `([^`]+)`", text("SOURCES.md"), re.M))
    present = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    assert listed == present


# --------------------------------------------------------------------------- banners (class 1, 2, 3)

BANNERS = [
    # the 610 series: "KMD Version" and "CUDA UMD Version" (Linux, Windows)
    (B + "nvidia-smi-banner_driver-610.43.02_kmd-umd_cuda-umd-13.3_2x-b200-partial_linux.txt", "610.43.02", "13.3"),
    (B + "nvidia-smi-banner_driver-610.57.04_rtx-2080-super_linux.txt", "610.57.04", "13.3"),
    (B + "nvidia-smi-banner_driver-610.62_rtx-2080-super_windows.txt", "610.62", "13.3"),
    (B + "nvidia-smi-banner_driver-595.71.05_rtx-2080-super_linux.txt", "595.71.05", "13.2"),
    (B + "nvidia-smi-banner_driver-595.71.05_rtx-4080-super_linux.txt", "595.71.05", "13.2"),
    (B + "nvidia-smi-banner_driver-595.80_l40s_linux.txt", "595.80", "13.2"),
    (B + "nvidia-smi-banner_driver-591.86_rtx-2080-super_windows.txt", "591.86", "13.1"),
    (B + "nvidia-smi-banner_driver-590.48.01_h100-80gb-hbm3_linux.txt", "590.48.01", "13.1"),
    (B + "nvidia-smi-banner_driver-590.48.01_h100-mig_linux.txt", "590.48.01", "13.1"),
    (B + "nvidia-smi-banner_driver-590.48.01_h200-mig_linux.txt", "590.48.01", "13.1"),
    (B + "nvidia-smi-banner_driver-590.48.01_h200_linux.txt", "590.48.01", "13.1"),
    (B + "nvidia-smi-banner_driver-580.82.09_cuda-13.0_rtx-5090-plus-rtx-4090_mixed_fedora_PARTIAL.txt",
     "580.82.09", "13.0"),
    (B + "nvidia-smi-banner_driver-580.95.05_cuda-13.0_rtx-3060_raspberry-pi-cm5-aarch64_pci-domain-1.txt",
     "580.95.05", "13.0"),
    # libcuda not usable (FreeBSD Linux shim): no CUDA version, not "N/A"
    (B + "nvidia-smi-banner_driver-575.64.03_CUDA-Version-NA_rtx-5070_freebsd-linux-shim.txt", "575.64.03", None),
    (B + "nvidia-smi-banner_driver-550.120_cuda-12.4_l40s_under-load_linux.txt", "550.120", "12.4"),
    (B + "nvidia-smi-banner_driver-550.127.05_L40S_linux.txt", "550.127.05", "12.4"),
    (B + "nvidia-smi-banner_driver-550.135_cuda-12.4_tesla-p4_linux.txt", "550.135", "12.4"),
    (B + "nvidia-smi-banner_driver-550.40.07_cuda-12.4_rtx-4070_linux.txt", "550.40.07", "12.4"),
    (B + "nvidia-smi-banner_driver-550.54.15_RTX2000Ada_linux.txt", "550.54.15", "12.4"),
    (B + "nvidia-smi-banner_driver-550.90.07_L4_linux.txt", "550.90.07", "12.4"),
    (B + "nvidia-smi-banner_driver-550.90.07_RTX4000Ada_linux.txt", "550.90.07", "12.4"),
    (B + "nvidia-smi-banner_smi-530.47_driver-531.68_cuda-12.1_rtx-3070_wsl2-windows-driver.txt", "531.68", "12.1"),
    (B + "nvidia-smi-banner_driver-525.105.17_cuda-12.0_tesla-v100-sxm2_old-layout.txt", "525.105.17", "12.0"),
    (B + "nvidia-smi-banner_driver-515.65.01_cuda-11.7_titan-v_old-layout.txt", "515.65.01", "11.7"),
    # old drivers: the kernel driver, not the NVIDIA-SMI version, when the userspace differs
    (OLD + "nvidia-smi-banner_smi-450.66_kmod-418.67_cuda-10.1_tesla-t4_mismatched-userspace.txt", "418.67", "10.1"),
    (OLD + "nvidia-smi-compute_cap-error-and-banner_smi-470.256.02-userspace_kmod-580.95.05_rtx-pro-laptop_"
     "inside-snap.txt", "580.95.05", "13.0"),
    (OLD + "nvidia-smi-banner_smi-450.57_driver-450.57_cuda-11.0_titan-xp_linux.txt", "450.57", "11.0"),
    (OLD + "nvidia-smi-banner_driver-346.46_no-cuda-field_grid-k520_aws.txt", "346.46", None),
    (OLD + "nvidia-smi-banner_driver-340.108_no-cuda-field_geforce-8400m-gs.txt", "340.108", None),
    (MULTI + "nvidia-smi-banner_driver-590.44.01_cuda-13.1_16x-rtx-6000d-host_PARTIAL.txt", "590.44.01", "13.1"),
    (MULTI + "nvidia-smi-banner_driver-565.57.01_H100SXMx8_linux.txt", "565.57.01", "12.7"),
    (MULTI + "nvidia-smi-banner_driver-560.35.03_RTX3090_linux.txt", "560.35.03", "12.6"),
    (MULTI + "nvidia-smi-banner_driver-555.42.02_A100SXMx4_linux.txt", "555.42.02", "12.5"),
    (MULTI + "nvidia-smi-banner_driver-550.54.14_H100NVLx2_linux.txt", "550.54.14", "12.4"),
    (MULTI + "nvidia-smi-banner_driver-550.54.14_RTX4060Ti_linux.txt", "550.54.14", "12.4"),
    (MULTI + "nvidia-smi-banner_driver-550.127.05_A40x10_linux.txt", "550.127.05", "12.4"),
    (MULTI + "nvidia-smi-banner_driver-550.127.05_RTX4090_linux.txt", "550.127.05", "12.4"),
    (MULTI + "nvidia-smi-banner_driver-550.127.05_RTX6000Ada_x8_linux.txt", "550.127.05", "12.4"),
    (MULTI + "nvidia-smi-banner_driver-520.61.05_cuda-11.8_2x-a100-80g_mig-enabled_PARTIAL.txt", "520.61.05", "11.8"),
    (MULTI + "nvidia-smi-banner_driver-495.29.05_cuda-11.5_a100-sxm-80gb_mig-enabled_PARTIAL.txt", "495.29.05", "11.5"),
]


@pytest.mark.parametrize(("rel", "driver", "cuda"), BANNERS, ids=[Path(b[0]).name[:60] for b in BANNERS])
def test_banner(rel, driver, cuda):
    v = parse_nvidia_smi_banner(text(rel))
    assert (v.driver, v.cuda) == (driver, cuda)


def test_every_banner_in_the_corpus_is_in_the_table():
    assert {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*banner*")} == {b[0] for b in BANNERS}


# --------------------------------------------------------------------------- --query-gpu (class 1)

QUERIES = {
    "nvidia-smi-query-gpu-csv_driver-610.57.04_rtx-2080-super_linux.txt": ("NVIDIA GeForce RTX 2080 SUPER", "7.5", 8.0),
    "nvidia-smi-query-gpu-csv_driver-610.62_rtx-2080-super_windows.txt": ("NVIDIA GeForce RTX 2080 SUPER", "7.5", 8.0),
    "nvidia-smi-query-gpu-csv_driver-595.71.05_rtx-2080-super_linux.txt": ("NVIDIA GeForce RTX 2080 SUPER", "7.5", 8.0),
    "nvidia-smi-query-gpu-csv_driver-595.71.05_rtx-4080-super_linux.txt":
        ("NVIDIA GeForce RTX 4080 SUPER", "8.9", 16.0),
    "nvidia-smi-query-gpu-csv_driver-595.80_l40s_linux.txt": ("NVIDIA L40S", "8.9", 45.0),
    "nvidia-smi-query-gpu-csv_driver-591.86_rtx-2080-super_windows.txt": ("NVIDIA GeForce RTX 2080 SUPER", "7.5", 8.0),
    "nvidia-smi-query-gpu-csv_driver-590.48.01_h100-80gb-hbm3_linux.txt": ("NVIDIA H100 80GB HBM3", "9.0", 79.6),
    "nvidia-smi-query-gpu-csv_driver-590.48.01_h100-mig_linux.txt": ("NVIDIA H100 80GB HBM3", "9.0", 79.6),
    "nvidia-smi-query-gpu-csv_driver-590.48.01_h200-mig_linux.txt": ("NVIDIA H200", "9.0", 140.4),
    "nvidia-smi-query-gpu-csv_driver-590.48.01_h200_linux.txt": ("NVIDIA H200", "9.0", 140.4),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_query_gpu_narrowed_to_the_probe_fields(name):
    recorded = text(B + name)
    driver = re.search(r"driver-([0-9.]+)_", name).group(1)
    boards, drv = parse_nvidia_smi_csv(project(recorded, list(SMI_FIELDS), noheader=True, nounits=True))
    assert drv == driver
    assert [(b.name, b.cc, b.memory_gb) for b in boards] == [QUERIES[name]]
    assert boards[0].mig == ("mig_linux" in name)


def test_every_query_in_the_corpus_is_in_the_table():
    assert {p.name for p in CORPUS.glob(B + "nvidia-smi-query-gpu-csv_*")} == set(QUERIES)


# --------------------------------------------------------------------------- compute capability table (class 9)


def test_the_table_agrees_with_every_recorded_compute_capability():
    """Each (name, compute capability) pair a real nvidia-smi or deviceQuery printed in the corpus."""
    pairs = set()
    for name in QUERIES:
        boards, _ = parse_nvidia_smi_csv(project(text(B + name), list(SMI_FIELDS), True, True))
        pairs |= {(b.name, b.cc) for b in boards}
    for line in text("9-nvidia-compute-capability/deviceQuery-capability-lines_thamada-captures.tsv").splitlines():
        if line.startswith("#"):
            continue
        _f, name, cap = line.split("\t")
        pairs.add((name.strip('"'), cap.split()[-1]))
    assert len(pairs) >= 15
    rows = table()
    for name, cc in sorted(pairs):
        row = capability_from_name(name, rows)
        assert row is not None and row.cc == cc, name


@pytest.mark.parametrize(("name", "cc"), [
    ("Tesla V100-SXM2-16GB", "7.0"), ("Tesla V100S-PCIE-32GB", "7.0"), ("Tesla T4", "7.5"), ("Quadro P400", "6.1"),
    ("NVIDIA GeForce GT 1030", "6.1"), ("TITAN Xp", "6.1"), ("NVIDIA A100-SXM4-40GB", "8.0"), ("A100-SXM4-40GB", "8.0"),
    ("NVIDIA A100 80GB PCIe", "8.0"), ("NVIDIA A10", "8.6"), ("NVIDIA GeForce RTX 4070 Ti SUPER", "8.9"),
    ("NVIDIA RTX 4000 SFF Ada Generation", "8.9"), ("NVIDIA GeForce RTX 3060 Laptop GPU", "8.6"),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "12.0"), ("Tesla K80", "3.7"), ("GRID K520", "3.0"),
])
def test_table_by_name(name, cc):
    assert capability_from_name(name, table()).cc == cc


@pytest.mark.parametrize("name", ["Graphics Device", "NVIDIA A10G", "NVIDIA H20", "NVIDIA GeForce RTX 2080 ...",
                                  "NVIDIA RTX PRO ...", "GeForce 8400M GS"])
def test_table_does_not_guess(name):
    assert capability_from_name(name, table()) is None


# --------------------------------------------------------------------------- nvidia-smi -q -x and -L (class 2, 3, x)


def test_every_xml_in_the_corpus_parses():
    xmls = sorted(CORPUS.glob("*/nvidia-smi-qx_*.xml"))
    assert len(xmls) >= 25
    for p in xmls:
        parsed = parse_nvidia_smi_xml(p.read_text())
        driver, cuda = re.search(r"driver-([0-9.]+)_cuda-([0-9.]+)_", p.name).groups()
        assert (parsed["driver_version"], parsed["cuda_version"]) == (driver, cuda), p.name
        assert parsed["gpus"] and all(g["name"] and g["memory_gb"] for g in parsed["gpus"]), p.name


def test_xml_mig_devices():
    parsed = parse_nvidia_smi_xml(text(A100_MIG_XML))
    (gpu,) = parsed["gpus"]
    assert gpu["mig"] and [(m["index"], m["gpu_instance"], m["compute_instance"], m["memory_gb"])
                           for m in gpu["mig_devices"]] == [(0, 1, 0, 19.5), (1, 2, 0, 19.5)]


def test_list_with_mig_devices():
    listed = parse_nvidia_smi_list(text(MULTI + "nvidia-smi-L_driver-535.x_4x-a100-sxm4-80gb_gpu0-mig-4x-1g.20gb.txt"))
    assert [(g["index"], len(g["migs"])) for g in listed] == [(0, 4), (1, 0), (2, 0), (3, 0)]
    assert listed[0]["migs"][1] == {"index": 1, "profile": "1g.20gb",
                                    "uuid": "MIG-a45882f0-9215-5733-a0c1-49286ab31cb5"}


# --------------------------------------------------------------------------- the probe, end to end (NVIDIA)


def probe(rec: Recording, tmp_path, visible=None, device_order=None, **others):
    return probe_nvidia(ReplayRunner(rec, others), root=tmp_path, nvml=False, visible=visible,
                        device_order=device_order, capabilities=table())


@pytest.mark.parametrize(("driver", "os_name"), [("610.57.04", "linux"), ("610.62", "windows"),
                                                  ("595.71.05", "linux"), ("591.86", "windows")])
def test_new_driver_through_nvidia_smi(tmp_path, driver, os_name):
    """The 610 series says "CUDA UMD Version" in the banner; no -q -x was recorded for these machines."""
    rec = Recording(query=B + f"nvidia-smi-query-gpu-csv_driver-{driver}_rtx-2080-super_{os_name}.txt",
                    banner=B + f"nvidia-smi-banner_driver-{driver}_rtx-2080-super_{os_name}.txt")
    r = probe(rec, tmp_path)
    assert r.source == "nvidia-smi" and r.driver.version == driver
    assert r.driver.cuda == ("13.3" if driver.startswith("610") else "13.2" if driver.startswith("595") else "13.1")
    assert [(g.name, g.arch, g.memory_gb) for g in r.gpus] == [("NVIDIA GeForce RTX 2080 SUPER", "sm_75", 8.0)]
    assert r.sources["driver.cuda"] == "nvidia-smi banner"
    assert r.sources["gpus.compute_capability"] == "nvidia-smi --query-gpu compute_cap"


@pytest.mark.parametrize(("xml", "name", "arch", "cuda"), [
    ("nvidia-smi-qx_driver-418.43_cuda-10.1_quadro-p400_linux.xml", "Quadro P400", "sm_61", "10.1"),
    ("nvidia-smi-qx_driver-460.39_cuda-11.2_tesla-v100-pcie-32gb.xml", "Tesla V100-PCIE-32GB", "sm_70", "11.2"),
    ("nvidia-smi-qx_driver-470.74_cuda-11.4_gt-1030_linux.xml", "NVIDIA GeForce GT 1030", "sm_61", "11.4"),
])
def test_old_driver_asks_again_then_reads_the_xml(tmp_path, xml, name, arch, cuda):
    """Drivers 418 - 470 reject compute_cap (the recorded error); the query without it was not recorded
    on these machines, so -q -x lists the GPU and the compute capability comes from the table."""
    rec = Recording(query_error=CC_ERROR, xml=OLD + xml)
    runner = ReplayRunner(rec)
    r = probe_nvidia(runner, root=tmp_path, nvml=False, capabilities=table())
    queries = [c[1] for c in runner.calls if c[1].startswith("--query-gpu=")]
    assert queries == ["--query-gpu=" + ",".join(SMI_FIELDS), "--query-gpu=index,name,memory.total,driver_version,uuid"]
    assert [(g.name, g.arch) for g in r.gpus] == [(name, arch)]
    assert r.driver.version == re.search(r"driver-([0-9.]+)_", xml).group(1) and r.driver.cuda == cuda
    assert r.source == "nvidia-smi -q -x"
    assert r.sources["gpus.compute_capability"].startswith("matrices/gpus.toml by GPU name")
    assert any("no compute_cap query field" in n and "is not a valid field to query" in n for n in r.notes)


def test_old_driver_retry_answered(tmp_path):
    """When the query without compute_cap answers, its GPUs are used (here the recorded 595 table
    narrowed to those fields stands in for the old driver's answer: no such recording exists)."""
    rec = Recording(query_error=CC_ERROR, rejects=("compute_cap", "mig.mode.current"),
                    query=B + "nvidia-smi-query-gpu-csv_driver-595.80_l40s_linux.txt",
                    banner=B + "nvidia-smi-banner_driver-595.80_l40s_linux.txt")
    r = probe(rec, tmp_path)
    assert [(g.name, g.arch, g.compute_capability) for g in r.gpus] == [("NVIDIA L40S", "sm_89", "8.9")]
    assert r.source == "nvidia-smi" and "matrices/gpus.toml" in r.sources["gpus.compute_capability"]


def test_old_driver_unknown_gpu_is_left_out_with_a_note(tmp_path):
    rec = Recording(query_error=CC_ERROR, xml=OLD + "nvidia-smi-qx_driver-418.43_cuda-10.1_gtx-1660-ti-graphics-device_"
                                                    "linux.xml")
    r = probe(rec, tmp_path)
    assert r.gpus == () and r.driver.version == "418.43"
    assert any("Graphics Device" in n and "compute capability unknown" in n for n in r.notes)


V100S = MULTI + "nvidia-smi-qx_driver-460.73.01_cuda-11.2_8x-tesla-v100s-pcie-32gb.xml"
V100S_UUIDS = ["GPU-76098dc1", "GPU-bbf7a241", "GPU-8f75e71c", "GPU-3181eb56", "GPU-2aa87d54", "GPU-39c3a168",
               "GPU-d2446f91", "GPU-1d955959"]


@pytest.mark.parametrize(("visible", "picked"), [
    (None, list(range(8))),
    ("1,0", [1, 0]),
    ("7,2,5", [7, 2, 5]),
    ("GPU-bbf7a241", [1]),
    ("GPU-1d955959,GPU-76098dc1", [7, 0]),
    ("0,9,1", [0]),           # the list stops at the first index that matches no GPU
    ("3,3", []),              # a repeated entry hides every GPU (torch's parser, checked against the driver)
    ("", []),
    ("-1", []),
    ("2gpu,4", [2, 4]),       # CUDA reads an index like strtoul
    ("GPU-bbf7a241,1", [1]),  # a list of UUIDs stops at the first entry that is not one
])
def test_eight_gpu_host_and_cuda_visible_devices(tmp_path, visible, picked):
    r = probe(Recording(query_error=CC_ERROR, xml=V100S), tmp_path, visible=visible)
    assert [g.uuid[:12] for g in r.gpus] == [V100S_UUIDS[i] for i in picked]
    assert [g.index for g in r.gpus] == list(range(len(picked)))
    assert all(g.arch == "sm_70" and g.memory_gb == 31.7 for g in r.gpus)


def test_two_gpu_hosts(tmp_path):
    a5000 = probe(Recording(xml=MULTI + "nvidia-smi-qx_driver-590.44.01_cuda-13.1_rtx-a5000x2_linux.xml"), tmp_path,
                  visible="1,0")
    assert [g.uuid[-2:] for g in a5000.gpus] == ["cd", "ab"] and {g.arch for g in a5000.gpus} == {"sm_86"}
    assert a5000.driver.cuda == "13.1" and a5000.sources["driver.cuda"] == "nvidia-smi -q -x"
    # this recording has the same (masked) UUID twice: a prefix that names both matches nothing
    dup = probe(Recording(xml=MULTI + "nvidia-smi-qx_driver-590.44.01_cuda-13.1_rtx-2080x2_linux.xml"), tmp_path,
                visible="GPU-12345678")
    assert dup.gpus == () and any("matches no GPU (or more than one)" in n for n in dup.notes)


def test_mig_before_r570_is_one_device(tmp_path):
    """4x A100 host, GPU 0 in MIG mode (its -q -x keeps GPU 0 only; -L of the same host lists all four)."""
    rec = Recording(xml=MULTI + "nvidia-smi-qx_driver-535.54.03_cuda-12.2_a100-sxm4-80gb_mig-enabled_4gpu-host-only-"
                              "gpu0-kept.xml",
                    listing=MULTI + "nvidia-smi-L_driver-535.x_4x-a100-sxm4-80gb_gpu0-mig-4x-1g.20gb.txt")
    r = probe(rec, tmp_path)
    assert [(g.name, g.uuid, g.mig, g.memory_gb) for g in r.gpus] == [
        ("NVIDIA A100-SXM4-80GB MIG 1g.20gb", "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a", True, 19.5)]
    assert any("before R570 CUDA enumerates one MIG device" in n for n in r.notes)
    assert r.sources["gpus.mig"] == "nvidia-smi -q -x + nvidia-smi -L"
    picked = probe(rec, tmp_path, visible="MIG-a45882f0")
    assert [g.uuid[:12] for g in picked.gpus] == ["MIG-a45882f0"]
    two = probe(rec, tmp_path, visible="MIG-f00d722c,MIG-a45882f0")
    assert [g.uuid[:12] for g in two.gpus] == ["MIG-f00d722c"]


def test_mig_xml_without_list(tmp_path):
    r = probe(Recording(xml=A100_MIG_XML), tmp_path)
    assert [(g.name, g.uuid, g.memory_gb) for g in r.gpus] == [("NVIDIA A100-SXM4-40GB MIG device 0", None, 19.5)]
    assert any("nvidia-smi -L did not answer" in n for n in r.notes)


@pytest.mark.parametrize(("machine", "profiles"), [
    ("h100-mig", ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
    ("h200-mig", ["1c.3g.71gb", "2c.3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"]),
])
def test_mig_from_r570_every_gpu_instance(tmp_path, machine, profiles):
    """590 driver, MIG mode from the query's mig.mode.current, devices from -L (no -q -x recorded, so
    the GPU instances are unknown and every MIG device counts)."""
    name = "NVIDIA H100 80GB HBM3" if machine == "h100-mig" else "NVIDIA H200"
    rec = Recording(query=B + f"nvidia-smi-query-gpu-csv_driver-590.48.01_{machine}_linux.txt",
                    banner=B + f"nvidia-smi-banner_driver-590.48.01_{machine}_linux.txt",
                    listing=MULTI + f"nvidia-smi-L_driver-590.48.01_{machine}_linux.txt")
    r = probe(rec, tmp_path)
    assert [g.name for g in r.gpus] == [f"{name} MIG {p}" for p in profiles]
    assert all(g.mig and g.arch == "sm_90" for g in r.gpus)
    assert any("GPU instance of some MIG devices is unknown" in n for n in r.notes)
    one = probe(rec, tmp_path, visible="MIG-00000002")
    assert [g.name for g in one.gpus] == [f"{name} MIG {profiles[2]}"]


def test_mixed_gpus_note_the_cuda_device_order(tmp_path):
    assert not any("CUDA_DEVICE_ORDER" in n for n in probe(Recording(query_error=CC_ERROR, xml=V100S), tmp_path).notes)
    boards = (Board(index=0, name="NVIDIA GeForce RTX 4090", cc="8.9", memory_gb=24.0, uuid="GPU-a"),
              Board(index=1, name="NVIDIA GeForce RTX 5090", cc="12.0", memory_gb=32.0, uuid="GPU-b"))
    _gpus, notes = cuda_devices(boards, None, "580.82.09")
    assert any("fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID" in n for n in notes)
    assert cuda_devices(boards, None, "580.82.09", device_order="PCI_BUS_ID")[1] == []


# --------------------------------------------------------------------------- notes (class 10)


@pytest.mark.parametrize(("rel", "needles"), [
    ("nvidia-smi_nvml-mismatch_nvml-550.144_intel-llvm-ci.txt",
     ["Failed to initialize NVML: Driver/library version mismatch", "NVML library version: 550.144"]),
    ("nvidia-smi_nvml-mismatch_nvml-570.124_open-kmod-570.124.06.txt",
     ["Driver/library version mismatch", "NVML library version: 570.124", "kernel module is 570.124.06"]),
    ("nvidia-smi_nvml-mismatch_one-line_driver-460-upgrade.txt", ["Driver/library version mismatch"]),
])
def test_mismatch_note_keeps_the_whole_text(tmp_path, rel, needles):
    if "570.124.06" in rel:
        (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
        (tmp_path / "proc/driver/nvidia/version").write_text(
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build\n")
    r = probe(Recording(failure="10-nvml-version-mismatch/" + rel), tmp_path)
    (note,) = [n for n in r.notes if n.startswith("nvidia-smi --query-gpu failed")]
    assert all(x in note for x in needles), note
    assert "reboot or reload the driver" in note and "[" not in note


def test_nvml_exception_note_is_whole(tmp_path):
    recorded = text("10-nvml-version-mismatch/pynvml_exception-title_NVMLError_LibRmVersionMismatch.txt")
    message = recorded.split(": ", 1)[1]

    class NVMLError_LibRmVersionMismatch(Exception):  # noqa: N801 - pynvml's name
        pass

    class Broken:
        def nvmlInit(self):
            raise NVMLError_LibRmVersionMismatch(message.strip())

        def nvmlShutdown(self):
            pass

    r = probe_nvidia(FakeRunner(), root=tmp_path, nvml=Broken())
    assert r.notes[0] == ("NVML failed: RM has detected an NVML/RM version mismatch. (driver and kernel module "
                          "versions differ: reboot or reload the driver)")


# --------------------------------------------------------------------------- rocm-smi (class 4)

ROCM_SMI_JSON = {
    "rocm-smi-showproductname-json_mi250x-gfx9010_rocm-6.0-era.json": [("AMD INSTINCT MI200 (MCM) OAM LC MBA HPE C2",
                                                                         "gfx90a", None)],
    "rocm-smi-a-json_rocm-6.x_driver-6.2.4_mi250-gfx9010_one-gcd.json": [("AMD INSTINCT MI250 (MCM) OAM AC MBA",
                                                                           "gfx90a", None)],
    "rocm-smi-showproductname-showuse-showmeminfo-vram-json_rx7900xt-gfx1100.json": [("Radeon RX 7900 XT", "gfx1100",
                                                                                       20.0)],
    "rocm-smi-json_rx6700xt-gfx1031_rocm-6.1.2.json": [("Navi 22 [Radeon RX 6700/6700 XT / 6800M]", "gfx1031", 12.0)],
}


@pytest.mark.parametrize("name", sorted(ROCM_SMI_JSON))
def test_rocm_smi_json(name):
    cards = parse_rocm_smi_json(text(ROCM_SMI + name))
    assert [(c["name"], c["arch"], c["memory_gb"]) for c in cards] == ROCM_SMI_JSON[name]


def test_rocm_smi_json_without_gfx_field_parses():
    """Older rocm-smi JSON dumps have no GFX Version: the card stays, its target comes from a later source."""
    for p in sorted(CORPUS.glob(ROCM_SMI + "rocm-smi-json_*")):
        cards = parse_rocm_smi_json(p.read_text())
        assert cards and all(c["arch"] in (None, "gfx1031") for c in cards), p.name


@pytest.mark.parametrize(("name", "expected"), [
    ("rocm-smi-showproductname_rocm-6.1.2-ubuntu22.04_w7900-gfx11000_plus-raphael-igpu-gfx1036.txt",
     [("AMD GPU 0x7448", "gfx1100"), ("AMD GPU 0x164e", "gfx1036")]),
    ("rocm-smi-showproductname_rocm-6.0.2-manjaro_w7900_plus-raphael-igpu_no-gfx-field.txt",
     [("Navi 31 [Radeon Pro W7900]", None), ("Raphael", None)]),
    ("rocm-smi-showproductname_rocm-4.0.0_mi100-hex-only.txt", [("AMD GPU 0x738c", None)]),
])
def test_rocm_smi_text(name, expected):
    assert [(c["name"], c["arch"]) for c in parse_rocm_smi_text(text(ROCM_SMI + name))] == expected


@pytest.mark.parametrize(("printed", "gfx"), [
    ("gfx9010", "gfx90a"), ("gfx9008", "gfx908"), ("gfx9006", "gfx906"), ("gfx9000", "gfx900"), ("gfx9012", "gfx90c"),
    ("gfx11000", "gfx1100"), ("gfx11001", "gfx1101"), ("gfx11002", "gfx1102"), ("gfx12000", "gfx1200"),
    ("gfx12001", "gfx1201"), ("gfx1036", "gfx1036"), ("gfx1030", "gfx1030"), ("gfx1151", "gfx1151"),
    ("gfx942", "gfx942"), ("gfx950", "gfx950"),
])
def test_rocm_smi_decimal_targets(printed, gfx):
    """ROCm/rocm_smi_lib rsmi_get_gfx_target_version: M*100 + m*10 + s, or M*1000 + s when m is 0."""
    assert normalise_gfx(printed) == gfx


def test_rocm_smi_text_end_to_end(tmp_path):
    """--json was not recorded on this machine (the fake fails it); the text form it falls back to was."""
    runner = FakeRunner({
        ("rocm-smi", "--showproductname", "--showmeminfo"): (1, ""),
        ("rocm-smi", "--showproductname"): (0, text(ROCM_SMI + "rocm-smi-showproductname_rocm-6.1.2-ubuntu22.04_"
                                                           "w7900-gfx11000_plus-raphael-igpu-gfx1036.txt")),
    })
    r = probe_amd(runner, root=tmp_path, try_python_module=False)
    assert [g.arch for g in r.gpus] == ["gfx1100", "gfx1036"] and r.source == "rocm-smi --showproductname"
    assert r.memory_unknown == (0, 1) and all(g.memory_gb == 0.0 for g in r.gpus)
    assert not any("[" in n for n in r.notes)


# --------------------------------------------------------------------------- rocminfo (class 5)

ROCMINFO_GPUS = {
    "rocminfo-support_rocm-7.2.0-arch_radeon-780m-gfx1103-apu_plus-npu-aie2-agent_7840hs.txt":
        [("AMD Radeon 780M Graphics", "gfx1103", 23.4)],
    "rocminfo_ROCk-module-NOT-loaded_header_prime-laptop_PARTIAL.txt": [],
    "rocminfo_rocm-5.7-container_lumi-cray_1x-mi250x-gcd-gfx90a_epyc7a53.txt":
        [("AMD Instinct MI250X", "gfx90a", 64.0)],
    "rocminfo_rocm-6.3.1_kmod-6.10.5_rx7900xtx-gfx1100_ryzen5900x.txt": [("Radeon RX 7900 XTX", "gfx1100", 24.0)],
    "rocminfo_rocm-6.x_MI300X_x4.txt": [("AMD Instinct MI300X", "gfx942", 192.0)] * 4,
    "rocminfo_rocm-6.x_rx6700xt-reported-as-gfx1030_i3-12100f.txt": [("AMD Radeon RX 6700 XT", "gfx1030", 12.0)],
    "rocminfo_rocm-old-runtime-1.1_8x-gfx906-vega20-mi50-class_epyc7551p.txt": [("Vega 20", "gfx906", 32.0)] * 8,
    "rocminfo_rocm-unknown-runtime-1.1_7x-mi25-gfx900_threadripper-pro-3955wx.txt":
        [("Radeon Instinct MI25", "gfx900", 16.0)] * 7,
    "rocminfo_rocm-unknown-runtime-1.1_rx6900xt-gfx1030_i9-12900k_ansi-colour-header.txt":
        [("AMD Radeon RX 6900 XT", "gfx1030", 16.0)],
}


@pytest.mark.parametrize("name", sorted(ROCMINFO_GPUS))
def test_rocminfo_gpu_agents_and_memory_pool(name):
    agents = parse_rocminfo(text(ROCMINFO + name))
    assert [(a["name"], a["arch"], a["memory_gb"]) for a in agents] == ROCMINFO_GPUS[name]


def test_every_rocminfo_in_the_corpus_is_in_the_table():
    assert {p.name for p in CORPUS.glob(ROCMINFO + "*")} == set(ROCMINFO_GPUS)


def test_rocminfo_end_to_end_mi50_host(tmp_path):
    runner = FakeRunner({("rocminfo",): (0, text(ROCMINFO + "rocminfo_rocm-old-runtime-1.1_8x-gfx906-vega20-mi50-class_"
                                                            "epyc7551p.txt"))})
    r = probe_amd(runner, root=tmp_path, try_python_module=False, visible="3,1")
    assert [(g.index, g.arch, g.memory_gb) for g in r.gpus] == [(0, "gfx906", 32.0), (1, "gfx906", 32.0)]
    assert r.source == "rocminfo" and r.memory_unknown == ()


def test_hsa_override_is_what_the_runtime_reports(tmp_path):
    runner = FakeRunner({("rocm-smi", "--showproductname", "--showmeminfo"): (
        0, text(ROCM_SMI + "rocm-smi-json_rx6700xt-gfx1031_rocm-6.1.2.json"))})
    r = probe_amd(runner, root=tmp_path, try_python_module=False, override="10.3.0")
    assert [g.arch for g in r.gpus] == ["gfx1030"] and r.sources["gpus.arch"].startswith("HSA_OVERRIDE_GFX_VERSION")
    assert any("reports GPU 0 (gfx1031) as gfx1030" in n for n in r.notes)


# --------------------------------------------------------------------------- distribution ROCm, KFD (class 6, 8)


@pytest.mark.parametrize(("name", "version"), [
    ("hipconfig-version_ubuntu-distro_hipcc-rocm_7.2.53211-9999.txt", "7.2.53211"),
    ("hipconfig-full_gentoo_hip-5.4.3_HIP_PATH-usr_ROCM_PATH-usr_llvm-15.txt", "5.4.3"),
    ("hipconfig_opt-rocm-6.2.0_cxx-hipconfig-format_ubuntu-noble.txt", "6.2.41133"),
    ("hipconfig_opt-rocm-4.0.0_perl-hipconfig-format_debian-bullseye.txt", "4.0.20496"),
    ("hipconfig-vn_arch-hip-rocclr-4.0_truncated.txt", "4.0"),
])
def test_hipconfig(name, version):
    assert parse_hipconfig_version(text(HIP + name)) == version


def test_distribution_rocm_under_usr(tmp_path):
    """Ubuntu's hipcc-rocm: hipcc and hipconfig under /usr, no /opt/rocm; ROCm's version from hipconfig."""
    (tmp_path / "usr/bin").mkdir(parents=True)
    for exe in ("hipcc", "hipconfig"):
        (tmp_path / "usr/bin" / exe).write_text("#!/bin/sh\n")
        (tmp_path / "usr/bin" / exe).chmod(0o755)
    recorded = "".join(ln for ln in text(HIP + "hipconfig-version_ubuntu-distro_hipcc-rocm_7.2.53211-9999.txt")
                       .splitlines(keepends=True) if not ln.startswith("# "))
    runner = ReplayRunner(Recording(), {
        ("hipconfig", "--version"): (0, recorded),
        ("rocminfo",): (0, text(ROCMINFO + "rocminfo_rocm-6.3.1_kmod-6.10.5_rx7900xtx-gfx1100_ryzen5900x.txt")),
    })
    f = probe_system({"PATH": str(tmp_path / "usr/bin")}, runner, root=tmp_path, nvml=False, amdsmi=None)
    assert f.toolkit.rocm == "7.2.53211" and f.sources["toolkit.rocm"] == "hipconfig --version"
    assert f.toolkit.hipcc == str(tmp_path / "usr/bin/hipcc")
    assert [(g.arch, g.memory_gb) for g in f.gpus] == [("gfx1100", 24.0)] and f.driver.rocm == "7.2.53211"
    validate(f.to_dict(), "facts.schema.json")


def test_kfd_properties():
    grep = text("8-kfd-sysfs/grep-gfx_target_version_mi300x-node4.txt")
    assert gfx_from_target_version(parse_kfd_properties(grep)["gfx_target_version"]) == "gfx942"
    # tinygrad's copy of a real node: one line is its own placeholder (not a number), which the parser skips
    props = parse_kfd_properties(text("8-kfd-sysfs/kfd-node-properties_rx7900xtx-gfx1100_tinygrad-mock-template.txt"))
    assert gfx_from_target_version(props["gfx_target_version"]) == "gfx1100" and "drm_render_minor" not in props


def test_kfd_fills_a_memory_the_tool_did_not_give(tmp_path):
    """The rule only: the recorded MI250X answer has no VRAM size; a KFD node of the same target (the
    sysfs files here are written by the test, not recorded) gives it."""
    node = tmp_path / "sys/class/kfd/kfd/topology/nodes/1"
    (node / "mem_banks/0").mkdir(parents=True)
    (node / "properties").write_text("gfx_target_version 90010\n")
    (node / "mem_banks/0/properties").write_text(f"size_in_bytes {64 * 1024**3}\n")
    runner = FakeRunner({("rocm-smi", "--showproductname", "--showmeminfo"): (
        0, text(ROCM_SMI + "rocm-smi-showproductname-json_mi250x-gfx9010_rocm-6.0-era.json"))})
    r = probe_amd(runner, root=tmp_path, try_python_module=False)
    assert [(g.arch, g.memory_gb) for g in r.gpus] == [("gfx90a", 64.0)] and r.memory_unknown == ()
    assert r.sources["gpus.memory_gb"] == "rocm-smi, missing sizes from kfd-sysfs mem_banks"


# --------------------------------------------------------------------------- plans for these machines

def machine(tmp_path, runner, env=None, torch=None):
    """Facts of a recorded machine (probed through *runner*) with the torch the test names."""
    from dataclasses import replace

    from attn_installer.facts import TorchInfo

    f = probe_system({"PATH": "", **(env or {})}, runner, root=tmp_path, nvml=False, amdsmi=None,
                     capabilities=table())
    version, build = torch
    t = TorchInfo(version=version, cuda=build if not build.startswith("6") else None,
                  hip=build if build.startswith("6") else None, cxx11abi=True)
    return replace(f, torch=t, packages={**f.packages, "torch": version})


def plan_of(facts, **kw):
    from tests.machines import planned

    p = planned(facts, cache_dir="/c", **kw)
    validate(p.to_dict(), "plan.schema.json")
    return p


def rocminfo_runner(name):
    return FakeRunner({("rocminfo",): (0, text(ROCMINFO + name))})


@pytest.mark.parametrize(("recorded", "torch", "gfx"), [
    ("rocminfo_rocm-old-runtime-1.1_8x-gfx906-vega20-mi50-class_epyc7551p.txt", ("2.5.1+rocm6.2", "6.2.41133"),
     "gfx906"),
    ("rocminfo_rocm-unknown-runtime-1.1_rx6900xt-gfx1030_i9-12900k_ansi-colour-header.txt",
     ("2.8.0+rocm6.4", "6.4.43482"), "gfx1030"),
    ("rocminfo_rocm-unknown-runtime-1.1_7x-mi25-gfx900_threadripper-pro-3955wx.txt", ("2.5.1+rocm6.2", "6.2.41133"),
     "gfx900"),
])
def test_sdpa_runs_on_every_gpu_the_rocm_torch_carries(tmp_path, recorded, torch, gfx):
    """MI50 (gfx906) with a ROCm 6.2 torch and an RX 6900 XT (gfx1030) with a ROCm 6.4 torch got "no
    backend": their gfx is in the torch build, only not in SDPA's fused (AOTriton) kernels."""
    p = plan_of(machine(tmp_path, rocminfo_runner(recorded), torch=torch))
    assert p.recommended == "sdpa" and not p.blockers
    reasons = " ".join(p.backend("sdpa").reason_texts)
    assert f"SDPA runs its math kernel on {gfx}" in reasons and "no fused kernel" in reasons
    assert p.backend("eager").viable and not p.backend("flash_attention_2_rocm").viable
    flex = p.backend("flex_attention")  # Triton on the ROCm build: not "for NVIDIA GPUs"
    assert not any("NVIDIA" in r for r in flex.reason_texts)
    assert flex.viable == (Version(torch[0]).release >= (2, 6)), flex.reason_texts


def test_rocm_target_the_torch_build_lacks_blocks_and_hiding_the_gpu_fits(tmp_path):
    recorded = text(ROCM_SMI + "rocm-smi-showproductname_rocm-6.1.2-ubuntu22.04_w7900-gfx11000_plus-raphael-igpu-"
                               "gfx1036.txt")
    w7900 = FakeRunner({("rocm-smi", "--showproductname", "--showmeminfo"): (1, ""),
                        ("rocm-smi", "--showproductname"): (0, recorded)})
    both = plan_of(machine(tmp_path, w7900, torch=("2.8.0+rocm6.4", "6.4.43482")))
    assert both.recommended is None
    assert any("has no kernels for GPU 1 (AMD GPU 0x164e, gfx1036)" in b and "HIP_VISIBLE_DEVICES" in b
               for b in both.blockers)
    dgpu = plan_of(machine(tmp_path, w7900, env={"HIP_VISIBLE_DEVICES": "0"}, torch=("2.8.0+rocm6.4", "6.4.43482")))
    assert dgpu.recommended == "sdpa" and not dgpu.blockers
    assert "SDPA runs its flash / memory-efficient (AOTriton, experimental on RDNA" in " ".join(
        dgpu.backend("sdpa").reason_texts)


def test_rx6700xt_with_the_override_is_a_gfx1030(tmp_path):
    rx6700 = FakeRunner({("rocm-smi", "--showproductname", "--showmeminfo"): (
        0, text(ROCM_SMI + "rocm-smi-json_rx6700xt-gfx1031_rocm-6.1.2.json"))})
    plain = plan_of(machine(tmp_path, rx6700, torch=("2.8.0+rocm6.4", "6.4.43482")))
    assert plain.recommended is None and "gfx1031" in plain.blockers[0]
    overridden = plan_of(machine(tmp_path, rx6700, env={"HSA_OVERRIDE_GFX_VERSION": "10.3.0"},
                                 torch=("2.8.0+rocm6.4", "6.4.43482")))
    assert overridden.recommended == "sdpa"


@pytest.mark.parametrize(("xml", "torch", "kernel"), [
    (OLD + "nvidia-smi-qx_driver-460.39_cuda-11.2_tesla-v100-pcie-32gb.xml", ("2.4.1+cu118", "11.8"),
     "memory-efficient"),
    (OLD + "nvidia-smi-qx_driver-470.74_cuda-11.4_gt-1030_linux.xml", ("2.4.1+cu118", "11.8"), "memory-efficient"),
    (V100S, ("2.4.1+cu118", "11.8"), "memory-efficient"),
])
def test_old_driver_machines_get_a_backend(tmp_path, xml, torch, kernel):
    f = machine(tmp_path, ReplayRunner(Recording(query_error=CC_ERROR, xml=xml)), torch=torch)
    assert f.sources["gpus.compute_capability"].startswith("matrices/gpus.toml")
    p = plan_of(f)
    assert p.recommended is not None and not p.blockers
    assert f"SDPA runs its {kernel} kernel" in " ".join(p.backend("sdpa").reason_texts)


def test_an_old_driver_too_old_for_the_torch_says_so(tmp_path):
    f = machine(tmp_path, ReplayRunner(Recording(query_error=CC_ERROR, xml=OLD + "nvidia-smi-qx_driver-418.43_cuda-"
                                                                                 "10.1_quadro-p400_linux.xml")),
                torch=("2.4.1+cu118", "11.8"))
    p = plan_of(f)
    assert p.recommended is None and "NVIDIA driver 418.43 is too old for torch 2.4.1+cu118" in p.blockers[0]


def test_610_driver_and_mig_machines_get_a_backend(tmp_path):
    rtx = machine(tmp_path, ReplayRunner(Recording(
        query=B + "nvidia-smi-query-gpu-csv_driver-610.57.04_rtx-2080-super_linux.txt",
        banner=B + "nvidia-smi-banner_driver-610.57.04_rtx-2080-super_linux.txt")), torch=("2.11.0+cu130", "13.0"))
    assert rtx.driver.cuda == "13.3" and plan_of(rtx).recommended is not None
    mig = machine(tmp_path, ReplayRunner(Recording(
        xml=MULTI + "nvidia-smi-qx_driver-535.54.03_cuda-12.2_a100-sxm4-80gb_mig-enabled_4gpu-host-only-gpu0-kept.xml",
        listing=MULTI + "nvidia-smi-L_driver-535.x_4x-a100-sxm4-80gb_gpu0-mig-4x-1g.20gb.txt")),
        env={"CUDA_VISIBLE_DEVICES": "MIG-930574a9"}, torch=("2.8.0+cu128", "12.8"))
    assert [g.uuid[:12] for g in mig.gpus] == ["MIG-930574a9"] and mig.gpus[0].mig
    assert plan_of(mig).recommended is not None
    validate(mig.to_dict(), "facts.schema.json")


@pytest.mark.parametrize(("version", "hip", "arch_list", "has"), [
    ("2.6.0+rocm6.2.4", "6.2.41134-65d174c3e", None, "gfx1030"),   # the local tag names the flavour: rocm6.2.4
    ("2.5.1+rocm6.2", "6.2.41133-dd7f95766", None, "gfx906"),
    ("2.8.0+rocm6.4", "6.4.43482-0f2d60242", None, "gfx1201"),
    ("2.8.0+rocm6.4", "6.4.43482-0f2d60242", ("gfx90a:xnack-", "gfx942"), "gfx90a"),  # read from torch itself
])
def test_torch_gfx(version, hip, arch_list, has):
    from attn_installer.facts import TorchInfo
    from attn_installer.resolve import torch_gfx
    from tests.machines import facts

    t = TorchInfo(version=version, cuda=None, hip=hip, cxx11abi=True, arch_list=arch_list)
    gfx, origin = torch_gfx(facts([], None, t), load_matrix())
    assert has in gfx
    assert origin == ("torch.cuda.get_arch_list()" if arch_list else "matrices/torch.toml [[rocm_build]]")
