"""Verification result parsing on recorded GPU output and on the failures users hit."""

from __future__ import annotations

import json
import sys
import types

import pytest

from attn_installer.matrix import load_matrix
from attn_installer.modelconfig import axolotl_model, read_model_attention
from attn_installer.verify import (
    call_table,
    case_lines,
    cases,
    parse_verify_output,
    per_gpu_model,
    record_status,
    save_record,
    verify_backend,
)
from tests.conftest import FIXTURES, load_target

MODELS = FIXTURES / "model-configs"


def test_recorded_h200_verification_passes():
    recorded = json.loads((FIXTURES / "nvidia/h200-device/verify.json").read_text())
    for entry in recorded:
        res = parse_verify_output(entry["backend"], json.dumps(entry) + "\n", "", 0, False)
        assert res.status == "passed" and res.ok
        assert res.data["gpu"] == "NVIDIA H200" and res.data["out_cosine"] > 0.999
    sdpa = recorded[0]
    assert sdpa["sdpa_kernels"] == {"cudnn": "ok", "flash": "ok", "efficient": "ok"}


def test_no_gpu_is_skipped_not_passed():
    res = parse_verify_output("sdpa", '{"status": "skipped", "detail": "no GPU"}\n', "", 0, False)
    assert res.status == "skipped" and res.ok and res.detail == "no GPU"


def test_wrong_output_fails():
    line = json.dumps({"status": "failed", "detail": "output differs from math SDPA (rel err 1.41, cosine 0.002)",
                       "out_cosine": 0.002})
    res = parse_verify_output("sage", line, "", 0, False)
    assert not res.ok and "cosine 0.002" in res.detail


def test_xformers_fallback_warning_fails_even_if_snippet_passed():
    line = json.dumps({"status": "passed", "detail": "matches"})
    stderr = "WARNING[XFORMERS]: xFormers can't load C++/CUDA extensions. xFormers was built for: PyTorch 2.10.0+cu128"
    res = parse_verify_output("xformers", line, stderr, 0, False)
    assert res.status == "failed" and "C++/CUDA" in res.detail


def test_crash_and_timeout():
    err = "ImportError: flash_attn_2_cuda.so: undefined symbol: _ZN3c10"
    crash = parse_verify_output("flash_attention_2", "", err, 1, False)
    assert crash.status == "failed" and "undefined symbol" in crash.detail and "exit 1" in crash.detail
    assert parse_verify_output("sdpa", "", "", 124, True).detail == "verification timed out"


# --------------------------------------------------------------------------- the program, on fake modules


def fake_torch(gpu: bool = False) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.__version__ = "2.8.0+cu126"  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(is_available=lambda: gpu)  # type: ignore[attr-defined]
    return torch


def run_program(monkeypatch, capsys, backend, modules):
    """target/attn_verify.py's main() with fake modules in sys.modules; its JSON line."""
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    b = load_matrix().backend(backend)
    config = {"backend": backend, "call": call_table(b), "dtype": "bf16", "cases": cases(b),
              "rel_tol": b.verify_rel_tol, "min_cosine": b.verify_min_cosine}
    assert load_target("attn_verify").main(["attn_verify.py", json.dumps(config)]) == 0
    return parse_verify_output(backend, capsys.readouterr().out, "", 0, False)


def test_program_without_a_gpu_is_skipped_after_the_import(monkeypatch, capsys):
    xf = types.ModuleType("xformers")
    xf.__version__ = "0.0.32.post2"  # type: ignore[attr-defined]
    ops = types.ModuleType("xformers.ops")
    res = run_program(monkeypatch, capsys, "xformers", {"torch": fake_torch(), "xformers": xf, "xformers.ops": ops})
    assert res.status == "skipped" and res.detail == "no GPU (import xformers.ops ok)"
    sdpa = run_program(monkeypatch, capsys, "sdpa", {"torch": fake_torch()})
    assert sdpa.status == "skipped" and sdpa.detail == "no GPU"


def test_program_fails_an_import_that_raises(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn raises ImportError
    res = run_program(monkeypatch, capsys, "flash_attention_2", {"torch": fake_torch()})
    assert res.status == "failed" and res.detail.startswith("import flash_attn failed: ModuleNotFoundError")


@pytest.mark.parametrize(("version", "status"), [("0.0.32.post2", "failed"), ("0.0.35", "skipped")])
def test_program_xformers_extension_warning(monkeypatch, capsys, tmp_path, version, status):
    """xformers' "can't load C++/CUDA extensions" fails the check, except from 0.0.34, whose
    attention runs on torch's own kernels (the kernel check then decides)."""
    pkg = tmp_path / "xformers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (pkg / "ops.py").write_text("import warnings\nwarnings.warn(\"WARNING[XFORMERS]: xFormers can't load "
                                "C++/CUDA extensions. xFormers was built for: PyTorch 2.10.0\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("xformers", "xformers.ops"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    res = run_program(monkeypatch, capsys, "xformers", {"torch": fake_torch()})
    assert res.status == status
    if status == "failed":
        assert res.detail.startswith("extension not loaded: WARNING[XFORMERS]")
    else:
        assert "attention path does not need it" in res.data["warnings"][0]


def test_cases_cover_what_training_runs():
    m = load_matrix()
    fa2 = [c["name"] for c in cases(m.backend("flash_attention_2"))]
    assert fa2 == [f"{kind} d{d}" for d in (64, 128) for kind in (
        "mha causal h8/kv8", "gqa causal h8/kv2", "mqa causal h8/kv1", "gqa non-causal h8/kv2",
        "varlen gqa causal h8/kv2", "varlen mha causal h8/kv8")]
    assert all(c["backward"] for c in cases(m.backend("flash_attention_2")))
    packed = [c for c in cases(m.backend("flash_attention_3")) if c.get("docs")]
    assert packed and all(sum(c["docs"]) == c["seq"] and len(set(c["docs"])) == 3 for c in packed)
    # SDPA has no packing path in axolotl: no varlen case; Sage has one (forward only, in the program)
    assert not any(c.get("docs") for c in cases(m.backend("sdpa")))
    assert any(c.get("docs") for c in cases(m.backend("sage")))
    assert {c["head_dim"] for c in cases(m.backend("sdpa"), head_dims=(96,))} == {96}


def test_cases_from_a_model_config_use_its_dims_and_heads():
    m = load_matrix()
    ds = read_model_attention(MODELS / "deepseek-v3.json")
    got = cases(m.backend("flash_attention_3"), model=ds)
    assert {(c["head_dim"], c.get("head_dim_v")) for c in got} == {(192, 128)}
    assert "model causal h128/kv128 d192/128" in [c["name"] for c in got]
    qwen = read_model_attention(MODELS / "qwen2.5-3b-instruct.json")
    names = [c["name"] for c in cases(m.backend("flex_attention"), model=qwen)]
    assert "model causal h16/kv2 d128" in names and "mqa causal h8/kv1 d128" in names
    llama = read_model_attention(MODELS / "llama-3.1-8b-instruct.json")
    assert llama.dtype == "bf16" and "model causal h32/kv8 d128" in [c["name"] for c in cases(m.backend("sdpa"),
                                                                                               model=llama)]


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.glob("*.json") if p.name != "expected.json"))
def test_model_attention_of_real_configs(name):
    want = json.loads((MODELS / "expected.json").read_text())[name]
    got = read_model_attention(MODELS / name)
    assert (got.head_dim, got.head_dim_v, got.heads, got.kv_heads) == (
        want["head_dim_qk"], want["head_dim_v"], want["num_q_heads"], want["num_kv_heads"])


def test_axolotl_config_finds_its_model_in_the_hf_cache(tmp_path):
    hub = tmp_path / "hub" / "models--Qwen--Qwen2.5-3B-Instruct"
    snap = hub / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text((MODELS / "qwen2.5-3b-instruct.json").read_text())
    cfg = tmp_path / "qwen.yaml"
    cfg.write_text("base_model: Qwen/Qwen2.5-3B-Instruct\nfp16: true\nbf16: false\nsequence_len: 4096\n")
    model, dtype, note = axolotl_model(cfg, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert model is not None and (model.heads, model.kv_heads, model.head_dim) == (16, 2, 128)
    assert dtype == "fp16" and note == ""
    # HF_HOME/hub, and a local folder as base_model
    model, _, _ = axolotl_model(cfg, {"HF_HOME": str(tmp_path)})
    assert model is not None
    local = tmp_path / "llama"
    local.mkdir()
    (local / "config.json").write_text((MODELS / "llama-3.1-8b-instruct.json").read_text())
    cfg.write_text(f"base_model: {local}\nbf16: auto\n")
    model, dtype, _ = axolotl_model(cfg, {})
    assert model is not None and model.kv_heads == 8 and dtype == "bf16"
    # not on this machine: said, never guessed
    cfg.write_text("base_model: org/absent\nbf16: true\n")
    model, dtype, note = axolotl_model(cfg, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert model is None and dtype == "bf16" and "config.json of org/absent is not on this machine" in note


def test_bad_axolotl_config_is_one_line(tmp_path):
    from attn_installer.errors import ConfigError

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("base_model: [unclosed\n")
    with pytest.raises(ConfigError, match=f"^{cfg}:2:1: not valid YAML: "):
        axolotl_model(cfg, {})
    with pytest.raises(ConfigError, match="cannot read the axolotl config: no such file"):
        axolotl_model(tmp_path / "absent.yaml", {})


# --------------------------------------------------------------------------- one line per case, records


H200_CASES = {"backend": "flash_attention_2", "status": "failed", "gpu": "NVIDIA H200", "build": "b" * 16,
              "dtype": "bf16", "detail": "dk (gradient) differs from fp32 attention (rel err 0.87, cosine 0.5) in case "
              "gqa causal h8/kv2 d128",
              "cases": [{"name": "mha causal h8/kv8 d128", "status": "passed", "out_rel_err": 0.002,
                         "out_cosine": 0.99999, "dq_rel_err": 0.0025, "dk_rel_err": 0.0025, "dv_rel_err": 0.0023,
                         "kernels": ["void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>"]},
                        {"name": "gqa causal h8/kv2 d128", "status": "failed", "wrong": "dk", "out_rel_err": 0.002,
                         "out_cosine": 0.99999, "dq_rel_err": 0.0025, "dk_rel_err": 0.87, "dv_rel_err": 0.87},
                        {"name": "varlen gqa causal h8/kv2 d128", "status": "failed", "wrong": "error",
                         "error": "RuntimeError: aten::sum stable ABI dispatcher failure"}]}


def test_one_line_per_case_and_a_failure_names_its_case():
    res = parse_verify_output("flash_attention_2", json.dumps(H200_CASES) + "\n", "", 0, False)
    lines = case_lines(res)
    assert len(lines) == 3
    assert lines[0].startswith("  ok   mha causal h8/kv8 d128: out rel err 2.0e-03 cos 0.99999; dq 2.5e-03")
    assert lines[0].endswith("kernel void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>")
    assert lines[1].startswith("  FAIL gqa causal h8/kv2 d128:")
    assert "dk 8.7e-01" in lines[1] and "(dk wrong)" in lines[1]
    assert lines[2] == "  FAIL varlen gqa causal h8/kv2 d128: RuntimeError: aten::sum stable ABI dispatcher failure"
    assert "in case gqa causal h8/kv2 d128" in res.detail


def test_records_are_per_build_and_gpu_model(tmp_path):
    res = parse_verify_output("flash_attention_2", json.dumps(H200_CASES) + "\n", "", 0, False)
    path = save_record(tmp_path, res, "2026-12-01T00:00:00+00:00")
    assert path == tmp_path / "verify" / f"flash_attention_2-{'b' * 16}.json"
    assert record_status(tmp_path, "flash_attention_2", "b" * 16, "NVIDIA H200").startswith("failed: dk (gradient)")
    ok = parse_verify_output("flash_attention_2", json.dumps({**H200_CASES, "status": "passed", "detail": "ok",
                                                              "gpu": "NVIDIA A100-SXM4-80GB"}) + "\n", "", 0, False)
    save_record(tmp_path, ok, "2026-12-01T00:00:01+00:00")
    assert record_status(tmp_path, "flash_attention_2", "b" * 16, "NVIDIA A100-SXM4-80GB") == "passed"
    assert record_status(tmp_path, "flash_attention_2", "b" * 16, "NVIDIA H200").startswith("failed")  # both kept
    assert record_status(tmp_path, "flash_attention_2", "c" * 16, "NVIDIA H200") is None  # another build: never
    skipped = parse_verify_output("sdpa", '{"status": "skipped", "detail": "no GPU"}\n', "", 0, False)
    assert save_record(tmp_path, skipped, "x") is None


def test_verification_runs_once_per_gpu_model():
    from attn_installer.facts import Gpu

    a100 = [Gpu(index=i, vendor="nvidia", name="NVIDIA A100-SXM4-80GB", arch="sm_80", memory_gb=80.0,
                uuid=f"GPU-a{i}") for i in range(2)]
    h100 = Gpu(index=2, vendor="nvidia", name="NVIDIA H100 80GB HBM3", arch="sm_90", memory_gb=80.0)
    assert per_gpu_model(a100, {}) == [("", {})]  # one model: one run, environment untouched
    assert per_gpu_model([], {}) == [("", {})]
    got = per_gpu_model([*a100, h100], {"CUDA_VISIBLE_DEVICES": "1,3,5"})
    assert got == [("NVIDIA A100-SXM4-80GB (sm_80)", {"CUDA_VISIBLE_DEVICES": "GPU-a0"}),
                   ("NVIDIA H100 80GB HBM3 (sm_90)", {"CUDA_VISIBLE_DEVICES": "5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})]
    mi = [Gpu(index=0, vendor="amd", name="AMD Instinct MI300X", arch="gfx942", memory_gb=192.0),
          Gpu(index=1, vendor="amd", name="AMD Instinct MI210", arch="gfx90a", memory_gb=64.0)]
    assert [e for _, e in per_gpu_model(mi, {})] == [{"HIP_VISIBLE_DEVICES": "0"}, {"HIP_VISIBLE_DEVICES": "1"}]


def test_sdpa_on_a_gpu_without_fused_kernels_accepts_the_math_kernel():
    """An MI50 (gfx906) or a P100 gets SDPA's math kernel by design: verification must not call that
    a silent fallback (elsewhere it still does)."""
    from dataclasses import replace

    from attn_installer.verify import math_only
    from tests.conftest import FakeRunner
    from tests.machines import MACHINES

    m = load_matrix()
    mi300 = MACHINES["mi300x"]
    mi50 = replace(mi300.gpus[0], name="AMD Instinct MI50", arch="gfx906")
    assert math_only((mi50,), m) and not math_only(mi300.gpus, m) and not math_only((), m)
    assert not math_only((*MACHINES["h200_torch211"].gpus,), m)

    def sent(**kw):
        runner = FakeRunner({("/py",): (0, json.dumps({"backend": "sdpa", "status": "passed", "detail": "ok"}))})
        verify_backend(runner, "/py", m.backend("sdpa"), **kw)
        return json.loads(runner.calls[0][-1])["call"]

    assert sent()["require_fused"] is True
    assert sent(math_only=True)["require_fused"] is False
