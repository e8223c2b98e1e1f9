"""Black-box CLI tests: real processes, fake nvidia-smi on PATH printing recorded output,
a stand-in torch on PYTHONPATH (read from its files, never imported)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from attn_installer.runner import SubprocessRunner
from tests.cli.conftest import cli, fake_bin, fake_torch
from tests.conftest import FIXTURES, validate


def test_probe_json_through_nvidia_smi_fallback(colab_t4):
    r = cli(colab_t4, "probe", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    validate(facts, "facts.schema.json")
    assert facts["gpus"][0]["name"] == "Tesla T4" and facts["gpus"][0]["arch"] == "sm_75"
    assert facts["driver"] == {"vendor": "nvidia", "version": "580.159.04", "cuda": "12.2", "rocm": None}
    assert facts["torch"]["version"] == "2.8.0+cu126" and facts["torch"]["cxx11abi"] is True
    assert facts["sources"]["gpus"] == "nvidia-smi" and facts["host"]["colab"] is True


def test_probe_human(colab_t4):
    r = cli(colab_t4, "probe")
    assert r.returncode == 0
    assert "Tesla T4, sm_75 (cc 7.5)" in r.stdout and "torch    2.8.0+cu126" in r.stdout


def test_plan_json_and_table(colab_t4):
    r = cli(colab_t4, "plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    validate(plan, "plan.schema.json")
    assert plan["recommended"] == "xformers" and plan["config"]["fp16"] is True
    table = cli(colab_t4, "plan").stdout
    assert "*xformers" in table and "recommended: xformers" in table


def test_plan_for_another_machine_from_facts_file(colab_t4, tmp_path):
    facts = FIXTURES / "nvidia/h200-device/probe.json"
    r = cli(colab_t4, "plan", "--facts", str(facts), "--json", "--allow-source", "--head-dim", "128",
            "--dtype", "bf16", "--route", "source")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    validate(plan, "plan.schema.json")
    assert plan["recommended"] == "flash_attention_3"
    fa3 = next(b for b in plan["backends"] if b["name"] == "flash_attention_3")
    env = next(s for s in fa3["steps"] if s["kind"] == "build")["env"]
    assert "FLASH_ATTENTION_DISABLE_BACKWARD" not in env and env["FLASH_ATTENTION_DISABLE_FP16"] == "TRUE"
    # --inference: the same trimmed build without the backward kernels
    r = cli(colab_t4, "plan", "--facts", str(facts), "--json", "--allow-source", "--head-dim", "128",
            "--dtype", "bf16", "--inference", "--backend", "flash_attention_3", "--route", "source")
    plan = json.loads(r.stdout)
    assert plan["workload"] == "inference"
    fa3 = next(b for b in plan["backends"] if b["name"] == "flash_attention_3")
    env = next(s for s in fa3["steps"] if s["kind"] == "build")["env"]
    assert env["FLASH_ATTENTION_DISABLE_BACKWARD"] == "TRUE" and env["FLASH_ATTENTION_DISABLE_HDIM256"] == "TRUE"
    r = cli(colab_t4, "plan", "--facts", str(facts), "--inference", "--workload", "lora")
    assert r.returncode == 2 and "--inference and --workload lora disagree" in r.stderr


@pytest.mark.parametrize(("content", "code", "needle"), [
    (None, 5, "no such file"),
    ("", 5, "the file is empty"),
    ('{"schema_version": 9}', 5, "field 'schema_version': 9 is newer"),
])
def test_bad_facts_file_one_line(colab_t4, tmp_path, content, code, needle):
    path = tmp_path / "facts.json"
    if content is not None:
        path.write_text(content)
    r = cli(colab_t4, "plan", "--facts", str(path))
    assert r.returncode == code
    assert r.stderr.count("\n") == 1 and needle in r.stderr and str(path) in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors(colab_t4):
    r = cli(colab_t4, "plan", "--backend", "flash")
    assert r.returncode == 2 and "unknown backend 'flash'" in r.stderr
    r = cli(colab_t4, "plan", "--workload", "pretrain")
    assert r.returncode == 2 and "pretrain" in r.stderr
    r = cli(colab_t4, "plan", "--frobnicate")
    assert r.returncode == 2 and "No such option" in r.stderr


def test_backend_that_does_not_fit_exits_nonzero(colab_t4):
    r = cli(colab_t4, "plan", "--backend", "flash_attention_2")
    assert r.returncode == 6
    assert "flash_attention_2 does not fit this machine" in r.stderr and "sm_75" in r.stderr


def test_bad_matrix_dir_is_reported(colab_t4, tmp_path):
    env = dict(colab_t4, ATTN_INSTALL_MATRIX_DIR=str(tmp_path / "nowhere"))
    r = cli(env, "plan")
    assert r.returncode == 4 and "cannot read" in r.stderr


def test_auto_dry_run_shows_steps_and_config(colab_t4, tmp_path):
    r = cli(colab_t4, "--auto", "--dry-run", "--output", str(tmp_path / "cfg.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "xformers==0.0.32.post2" in r.stdout and "https://download.pytorch.org/whl/cu126" in r.stdout
    assert "attn_implementation: xformers" in r.stdout and "fp16: true" in r.stdout
    assert not (tmp_path / "cfg.yaml").exists()  # real --auto runs are in test_install.py


def test_no_gpu_no_torch_probe_still_succeeds(tmp_path, allow_subprocess):
    env = {"PATH": "/usr/bin:/bin", "ATTN_INSTALL_NO_NVML": "1", "HOME": str(tmp_path)}
    r = cli(env, "probe", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    validate(facts, "facts.schema.json")
    assert facts["gpus"] == []
    plan = cli(env, "plan", "--json")
    assert json.loads(plan.stdout)["blockers"]


def test_runner_times_out_a_hung_command(tmp_path, allow_subprocess):
    bindir = fake_bin(tmp_path, "nvidia-smi", "sleep 30\n")
    t0 = time.monotonic()
    done = SubprocessRunner(tmp_path / "log.txt").run(["nvidia-smi"], timeout=0.5,
                                                      env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert done.timed_out and time.monotonic() - t0 < 5
    assert "timed out" in (tmp_path / "log.txt").read_text()
    missing = SubprocessRunner().run(["no-such-tool-xyz"], timeout=1, env={"PATH": str(bindir)})
    assert missing.not_found and missing.returncode == 127


def test_help_is_fast(allow_subprocess):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "attn_installer", "--help"],
                       capture_output=True, text=True, check=True)
    imported = r.stderr
    for heavy in ("pynvml", "ruamel", "requests", "attn_installer.probe"):
        assert f" {heavy}" not in imported, f"--help imports {heavy}"


def test_probe_and_plan_through_fake_rocm_smi(tmp_path, allow_subprocess):
    data = FIXTURES / "amd/rocm-smi_productname_use_meminfo_json_rx7900xt.json"
    bindir = fake_bin(tmp_path, "rocm-smi", f"cat {data}\n")
    site = fake_torch(tmp_path, version="2.7.1+rocm6.3", cuda="None")
    (site / "torch/version.py").write_text(
        "__version__ = '2.7.1+rocm6.3'\ncuda: Optional[str] = None\nhip: Optional[str] = '6.3.42131-fa1d09cbd'\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "PYTHONPATH": str(site), "ATTN_INSTALL_NO_NVML": "1",
           "HOME": str(tmp_path)}
    r = cli(env, "probe", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    validate(facts, "facts.schema.json")
    assert facts["gpus"][0]["vendor"] == "amd" and facts["gpus"][0]["arch"] == "gfx1100"
    assert facts["sources"]["gpus"] == "rocm-smi" and facts["torch"]["hip"].startswith("6.3")
    plan = json.loads(cli(env, "plan", "--json").stdout)
    validate(plan, "plan.schema.json")
    assert plan["recommended"] == "sdpa"
    by_name = {b["name"]: b for b in plan["backends"]}
    assert not by_name["flash_attention_2_rocm"]["viable"]  # CK does not cover RDNA3 gfx1100
    assert "gfx1100" in by_name["flash_attention_2_rocm"]["reasons"][0]


# --------------------------------------------------------------------------- planned from the training config


def _hf_cache(home, repo, fixture):
    folder = home / ".cache/huggingface/hub" / ("models--" + repo.replace("/", "--"))
    (folder / "snapshots" / ("c" * 40)).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs/main").write_text("c" * 40)
    (folder / "snapshots" / ("c" * 40) / "config.json").write_text((FIXTURES / "model-configs" / fixture).read_text())


ISSUE_CONFIG = ("base_model: NousResearch/Meta-Llama-3-8B\nsequence_len: 4096\nsample_packing: true\n"
                "adapter: lora\nflash_attention: true\nbf16: auto\n")


def test_issue_13_merge_keeps_fa2_and_packing_on_an_h100(colab_t4, tmp_path):
    """The report: an H100 with torch 2.8 (an FA2 release wheel exists), flash_attention + packing."""
    from tests.machines import MACHINES

    facts = tmp_path / "h100.json"
    facts.write_text(MACHINES["h100"].to_json())
    cfg = tmp_path / "train.yaml"
    cfg.write_text(ISSUE_CONFIG)
    r = cli(colab_t4, "config", "--facts", str(facts), "--merge", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("kept: flash_attention: true selects flash_attention_2, which fits this machine "
                               "and the training; not installed yet (`attn-install install flash_attention_2` gets "
                               "it: release_asset wheel)\n")
    assert cfg.read_text() == ISSUE_CONFIG and not (tmp_path / "train.yaml.bak").exists()
    # axolotl >= 0.17 reads attn_implementation: the same backend, the key of that version
    r = cli(colab_t4, "config", "--facts", str(facts), "--merge", str(cfg), "--axolotl-version", "0.21.0",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "-flash_attention: true\n+attn_implementation: flash_attention_2\n" in r.stdout
    assert "sample_packing: true\n" in cfg.read_text() and "sdp" not in cfg.read_text()


def test_merge_on_the_t4_says_why_and_refuses_packing_it_cannot_keep(colab_t4, tmp_path):
    _hf_cache(tmp_path, "google/gemma-2-2b", "gemma-2-2b.json")
    cfg = tmp_path / "gemma.yaml"
    text = ("base_model: google/gemma-2-2b\nadapter: qlora\nload_in_4bit: true\nsample_packing: true\n"
            "attn_implementation: sdpa\nbf16: true\n")
    cfg.write_text(text)
    r = cli(colab_t4, "config", "--merge", str(cfg), "--axolotl-version", "0.21.0", cwd=tmp_path)
    assert r.returncode == 6 and r.stdout == ""
    assert r.stderr.startswith(f"attn-install: error: sample_packing: true ({cfg}), but no backend with a varlen "
                               "(packed) path fits here (Tesla T4 (sm_75): ")
    assert "without packing eager fits: --allow-no-packing turns sample_packing off" in r.stderr
    assert r.stderr.rstrip().endswith("the file was not changed") and r.stderr.count("\n") == 1
    assert cfg.read_text() == text
    r = cli(colab_t4, "config", "--merge", str(cfg), "--axolotl-version", "0.21.0", "--allow-no-packing", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"--- {cfg}.bak\n")  # the reason is the changed key's, not said twice
    assert ("  attn_implementation: sdpa -> eager: attn_implementation: sdpa selects sdpa, which cannot run here: "
            "gemma2 (google/gemma-2-2b) soft-caps attention logits (attn_logit_softcapping 50); sdpa does not apply "
            "soft-capping (transformers drops it silently)") in r.stdout
    assert "  sample_packing: true -> false: sample_packing: true" in r.stdout
    assert "  bf16: true -> false: GPU 0 (Tesla T4, sm_75) has no bf16" in r.stdout
    assert "  fp16: (unset) -> true: " in r.stdout
    merged = cfg.read_text()
    assert "attn_implementation: eager\n" in merged and "sample_packing: false\n" in merged
    assert merged.startswith("base_model: google/gemma-2-2b\nadapter: qlora\nload_in_4bit: true\n")


def test_merge_refuses_a_read_only_config_in_one_line(colab_t4, tmp_path):
    cfg = tmp_path / "ro.yaml"
    cfg.write_text(ISSUE_CONFIG.replace("sample_packing: true\n", ""))
    cfg.chmod(0o444)
    r = cli(colab_t4, "config", "--merge", str(cfg), "--axolotl-version", "0.21.0", cwd=tmp_path)
    assert r.returncode == 10, r.stderr
    assert r.stderr.endswith(f"{cfg}: the file is read-only: cannot update it (make it writable, e.g. "
                             f"`chmod u+w {cfg}`, or merge a copy); nothing was changed\n")
    assert r.stderr.count("attn-install: error:") == 1


def test_o_refuses_the_users_config_and_force_keeps_a_backup(colab_t4, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(ISSUE_CONFIG)
    r = cli(colab_t4, "config", "-o", str(cfg), cwd=tmp_path)
    assert r.returncode == 10 and f"`attn-install config --merge {cfg}`" in r.stderr
    assert cfg.read_text() == ISSUE_CONFIG
    r = cli(colab_t4, "config", "-o", str(cfg), "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {cfg} (xformers); the file it replaced is in {cfg}.bak"
    assert (tmp_path / "train.yaml.bak").read_text() == ISSUE_CONFIG
    assert cfg.read_text().startswith("# written by attn-install ")


def test_plan_and_auto_dry_run_from_the_axolotl_config(colab_t4, tmp_path):
    _hf_cache(tmp_path, "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-3b-instruct.json")
    cfg = tmp_path / "qwen.yaml"
    text = "base_model: Qwen/Qwen2.5-3B-Instruct\nsample_packing: false\nattn_implementation: sdpa\nbf16: true\n"
    cfg.write_text(text)
    r = cli(colab_t4, "plan", "--axolotl-config", str(cfg), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    validate(doc, "plan.schema.json")
    assert doc["recommended"] == "sdpa" and doc["choice"]["kept"] is True and doc["workload"] == "full"
    r = cli(colab_t4, "--auto", "--dry-run", "--merge", str(cfg), "--axolotl-version", "0.21.0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "would change in" in r.stdout and "  bf16: true -> false: GPU 0 (Tesla T4, sm_75) has no bf16" in r.stdout
    assert "would write" not in r.stdout and r.stdout.rstrip().endswith(f"dry run: {cfg} was not changed")
    assert cfg.read_text() == text and sorted(p.name for p in tmp_path.glob("qwen.yaml*")) == ["qwen.yaml"]


def test_bench_measures_the_shape_the_axolotl_config_trains(colab_t4, tmp_path):
    _hf_cache(tmp_path, "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-3b-instruct.json")
    cfg = tmp_path / "qwen.yaml"
    cfg.write_text("base_model: Qwen/Qwen2.5-3B-Instruct\nsequence_len: 2048\nsample_packing: true\n"
                   "adapter: lora\nfp16: true\n")
    r = cli(colab_t4, "bench", "--axolotl-config", str(cfg), "--json", cwd=tmp_path, timeout=120)
    assert "measuring" in r.stderr and "at B=4 S=2048 H=16 KV=2 D=128 fp16" in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["config"]["packed"] is True and doc["config"]["workload"] == "lora"
    assert doc["config"]["seq_len"] == 2048 and doc["config"]["head_dim"] == 128
