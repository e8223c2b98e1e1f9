"""The probe cascade end to end with injected NVML / runner / filesystem root (no processes)."""

from __future__ import annotations

import json
import time

from attn_installer.probe import probe_system
from attn_installer.probe.nvidia import SMI_QUERY, probe_nvidia
from tests.conftest import FIXTURES, FakeRunner, validate

SMI_CSV = ("nvidia-smi", f"--query-gpu={SMI_QUERY}")


class FakeNvml:
    """Replays the recorded H200 NVML reading through pynvml's API."""

    def __init__(self, reading=None, fail=None, hang=0.0):
        self.r = reading or json.loads((FIXTURES / "nvidia/h200-shared/nvml-and-torch.json").read_text())
        self.fail, self.hang, self.shutdown = fail, hang, False

    def nvmlInit(self):
        if self.hang:
            time.sleep(self.hang)
        if self.fail:
            raise self.fail

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self):
        return self.r["nvmlSystemGetDriverVersion"]

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.r["nvmlSystemGetCudaDriverVersion_v2"]

    def nvmlDeviceGetCount(self):
        return len(self.r["devices"])

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.r["devices"][i]

    def nvmlDeviceGetName(self, h):
        return h["nvmlDeviceGetName"].encode()

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return tuple(h["nvmlDeviceGetCudaComputeCapability"])

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"total": h["nvmlDeviceGetMemoryInfo.total"]})()

    def nvmlDeviceGetUUID(self, h):
        return "GPU-0000"

    def nvmlDeviceGetMigMode(self, h):
        return (0, 0)


def smi_runner(fixture_text):
    return FakeRunner({
        SMI_CSV: (0, fixture_text("nvidia/h200-device/nvidia-smi-query.csv")),
        ("nvidia-smi", "-q", "-x"): (0, fixture_text("nvidia/h200-device/nvidia-smi-q.xml")),
    })


def test_nvml_first(tmp_path):
    nvml = FakeNvml()
    r = probe_nvidia(FakeRunner(), root=tmp_path, nvml=nvml)
    assert r.source == "nvml" and r.gpus[0].arch == "sm_90" and r.driver.cuda == "13.0"
    assert nvml.shutdown


def test_nvml_failure_falls_back_to_nvidia_smi(tmp_path, fixture_text):
    class RMMismatch(Exception):
        pass

    runner = smi_runner(fixture_text)
    broken = FakeNvml(fail=RMMismatch("RM has detected an NVML/RM version mismatch"))
    r = probe_nvidia(runner, root=tmp_path, nvml=broken)
    assert r.source == "nvidia-smi"
    assert r.gpus[0].name == "NVIDIA H200" and r.driver.version == "580.159.04" and r.driver.cuda == "13.0"
    assert any("version mismatch" in n and "reboot" in n for n in r.notes)
    assert runner.calls[0][0] == "nvidia-smi"


def test_hung_nvml_is_bounded(tmp_path, fixture_text, monkeypatch):
    import attn_installer.probe.nvidia as nv

    monkeypatch.setattr(nv, "NVML_TIMEOUT", 0.2)
    t0 = time.monotonic()
    r = probe_nvidia(smi_runner(fixture_text), root=tmp_path, nvml=FakeNvml(hang=2.0))
    assert time.monotonic() - t0 < 1.5
    assert r.source == "nvidia-smi" and any("did not answer" in n for n in r.notes)


def test_banner_when_xml_fails(tmp_path, fixture_text):
    runner = FakeRunner({
        SMI_CSV: (0, fixture_text("nvidia/other/nvidia_smi_query_csv_t4.txt")),
        ("nvidia-smi", "-q", "-x"): (9, ""),
        ("nvidia-smi",): (0, fixture_text("nvidia/other/nvidia-smi_banner_tesla-t4_colab_cuda12.2.txt")),
    })
    r = probe_nvidia(runner, root=tmp_path, nvml=False)
    assert r.driver.cuda == "12.2" and r.gpus[0].name == "Tesla T4"


def test_timed_out_smi_then_proc(tmp_path, fixture_text):
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    text = fixture_text("nvidia/other/proc_driver_nvidia_version_440.txt")
    (tmp_path / "proc/driver/nvidia/version").write_text(text)
    runner = FakeRunner({SMI_CSV: (124, "")})
    r = probe_nvidia(runner, root=tmp_path, nvml=False)
    assert r.gpus == () and r.driver.version == "440.95.01" and r.driver_source == "/proc/driver/nvidia/version"
    assert "nvidia-smi timed out" in r.notes


def test_nothing_at_all(tmp_path):
    r = probe_nvidia(FakeRunner(), root=tmp_path, nvml=False)
    assert r.gpus == () and r.driver is None


def test_visible_devices_through_cascade(tmp_path):
    r = probe_nvidia(FakeRunner(), root=tmp_path, nvml=FakeNvml(), visible="1")
    assert r.gpus == () and "matches no GPU" in r.notes[-1]


def test_probe_system_amd_kfd_only(tmp_path, fixture_text):
    node = tmp_path / "sys/class/kfd/kfd/topology/nodes/1"
    node.mkdir(parents=True)
    (node / "properties").write_text(fixture_text("amd/kfd_properties_mi325x_gpu_node.txt"))
    cpu = tmp_path / "sys/class/kfd/kfd/topology/nodes/0"
    cpu.mkdir(parents=True)
    (cpu / "properties").write_text("cpu_cores_count 64\ngfx_target_version 0\n")
    (tmp_path / "opt/rocm/.info").mkdir(parents=True)
    (tmp_path / "opt/rocm/.info/version").write_text("6.3.1-48\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       131981020 kB\n")
    f = probe_system({"PATH": ""}, FakeRunner(), root=tmp_path, nvml=False, amdsmi=None)
    assert [g.arch for g in f.gpus] == ["gfx942"] and f.gpus[0].vendor == "amd"
    assert f.sources["gpus"] == "kfd-sysfs" and f.toolkit.rocm == "6.3.1"
    validate(f.to_dict(), "facts.schema.json")


def test_probe_system_rocm_smi(tmp_path, fixture_text):
    (tmp_path / "opt/rocm").mkdir(parents=True)
    runner = FakeRunner({("rocm-smi",): (0, fixture_text("amd/rocm-smi_productname_use_meminfo_json_rx7900xt.json"))})
    f = probe_system({"PATH": ""}, runner, root=tmp_path, nvml=False)
    assert f.gpus[0].arch == "gfx1100" and f.sources["gpus"] == "rocm-smi"


def test_probe_system_no_gpu_and_cgroup_memory(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       131981020 kB\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text(str(16 * 1024**3))
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("100000 100000\n")
    f = probe_system({"PATH": "", "COLAB_RELEASE_TAG": "release-colab"}, FakeRunner(), root=tmp_path, nvml=False)
    assert f.gpus == () and f.driver is None
    assert f.host.memory_gb == 16.0 and f.sources["host.memory_gb"] == "cgroup memory limit"
    assert f.host.cpu_count == 1 and f.host.colab
    assert "no GPU visible to this process" in f.notes
    validate(f.to_dict(), "facts.schema.json")


def test_nvml_env_switch(tmp_path, fixture_text):
    f = probe_system({"PATH": "", "ATTN_INSTALL_NO_NVML": "1"}, smi_runner(fixture_text), root=tmp_path)
    assert f.sources["gpus"] == "nvidia-smi"
