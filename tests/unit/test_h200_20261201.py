"""The H200 runs of 2026-12-01 (tests/fixtures/nvidia/h200-device/2026-12-01, written by
benchmarks/gpu_fa3_index.sh, gpu_fa4.sh and gpu_judge.sh on one NVIDIA H200, driver 580.159.04,
torch 2.11.0+cu130): what they recorded still reads, validates and judges the way it did there."""

from __future__ import annotations

import json

import pytest

from attn_installer import bench as b
from attn_installer.judge import judge
from attn_installer.matrix import load_matrix
from tests.conftest import FIXTURES, validate

RUN = FIXTURES / "nvidia/h200-device/2026-12-01"
M = load_matrix()


def test_fa3_by_the_index_route_end_to_end():
    """--auto --pytorch-index on a clean venv: FA3 3.0.0 (built once from e2743ab5, served by a
    loopback mimic of the PyTorch index) picked by the torch_index route, installed, verified."""
    rep = json.loads((RUN / "fa3-index-auto-report.json").read_text())
    validate(rep["facts"], "facts.schema.json")
    validate(rep["plan"], "plan.schema.json")
    assert rep["ok"] and rep["plan"]["recommended"] == "flash_attention_3"
    (res,) = rep["results"]
    assert res["route"] == "torch_index" and res["changed"]["flash-attn-3"] == [None, "3.0.0"]
    # 12 cases: MHA, GQA, MQA, non-causal GQA and two packed ones, at head dims 64 and 128 (the wheel
    # was built for 128 only: FA3 runs head dim 64 in its 128 kernel)
    assert res["verify"]["status"] == "passed" and len(res["verify"]["cases"]) == 12
    log = (RUN / "fa3-index-auto.err").read_text()
    assert "--index-url http://127.0.0.1:8765/whl/cu130" in (RUN / "fa3-index-auto.out").read_text()
    assert "from the cu130 index alone (--no-deps)" in log


def test_fa4_trains_on_the_h200_and_is_within_5_percent_of_fa3():
    rep = json.loads((RUN / "fa4-report.json").read_text())
    (res,) = rep["results"]
    assert res["ok"] and res["verify"]["status"] == "passed"
    cases = [c["name"] for c in res["verify"]["cases"]]
    assert any(c.startswith("gqa") for c in cases) and any(c.startswith("varlen") for c in cases)
    bench = judge(b.BenchReport.from_dict(json.loads((RUN / "fa4-bench.json").read_text())), M)
    t = {r.label: r.fwdbwd.median for r in bench.results if r.status == "ok" and r.variant is None and r.fwdbwd}
    assert set(t) >= {"flash_attention_4", "flash_attention_3", "sdpa"}
    assert t["flash_attention_4"] < 1.05 * t["flash_attention_3"] and t["flash_attention_4"] < t["sdpa"]


@pytest.mark.parametrize("name", ["h200-judged-bench.json", "h200-bench-raising-fa2.json"])
def test_the_recorded_stand_ins_are_never_ranked(name):
    rep = judge(b.load_cached(FIXTURES / "bench" / name), M)
    fa2 = next(r for r in rep.results if r.label == "flash_attention_2")
    assert fa2.status in ("rejected", "error"), fa2
    assert "flash_attention_2" not in [r.label for r in b.ranked(rep, "fwd+bwd")]


@pytest.mark.parametrize("folder", ["train-merge", "train-merge-2"])
def test_auto_merge_of_a_packing_lora_config_on_the_h200(folder):
    """benchmarks/gpu_train_merge.sh: `--auto --merge` of llama3-lora-packing.yaml (FA2 chosen,
    sample_packing on) with the model's config.json, offline but for a loopback PyTorch-index mimic
    holding an FA3 3.0.0 built there for head dim 128: FA2's routes fail (no network), --auto falls
    back to FA3, verifies it at the model's shape (32 / 8 heads, head dim 128, packed too) and the
    merge writes flash_attention_3 saying why; the bench at the config's shape is packed."""
    run = RUN / folder
    rep = json.loads((run / "auto-report.json").read_text())
    validate(rep["facts"], "facts.schema.json")
    validate(rep["plan"], "plan.schema.json")
    fa2, fa3 = rep["results"]
    assert (fa2["backend"], fa2["ok"], fa2["state"]) == ("flash_attention_2", False, "nothing was changed")
    assert [a["route"] for a in fa2["attempts"]] == ["wheel_farm", "hub_kernel"]
    assert fa3["backend"] == "flash_attention_3" and fa3["ok"] and fa3["route"] == "torch_index"
    cases = {c["name"]: c for c in fa3["verify"]["cases"]}
    assert "model causal h32/kv8 d128" in cases and "varlen gqa causal h8/kv2 d128" in cases
    assert all(c["status"] == "passed" for c in cases.values())
    log = (run / "run.log").read_text()
    assert ("attn_implementation: flash_attention_2 -> flash_attention_3: flash_attention_3 is the backend "
            "installed (flash_attention_2, the plan's choice, could not be installed by any route)") in log
    assert "kept: attn_implementation: flash_attention_3 selects flash_attention_3" in log  # the merge again
    bench_doc = json.loads((run / "bench.json").read_text())
    shape = bench_doc["config"]
    assert (shape["heads"], shape["kv_heads"], shape["head_dim"], shape["seq_len"], shape["packed"]) == (
        32, 8, 128, 4096, True)
    judged = judge(b.BenchReport.from_dict(bench_doc), M)
    t = {r.label: r.fwdbwd.median for r in judged.results if r.status == "ok" and r.variant is None and r.fwdbwd}
    assert set(t) == {"flex_attention", "flash_attention_3"}  # sdpa: no packed path; the rest not installed
    assert t["flash_attention_3"] < t["flex_attention"]
    if folder == "train-merge-2":  # the second run, after the fallback learnt to say why
        assert ("flash_attention_2 could not be installed by any route (last, hub_kernel: install kernels from "
                "PyPI") in log


def test_sage_built_and_verified_case_by_case_on_the_h200():
    """benchmarks/gpu_sage_cases.sh: the pinned SageAttention (d1a57a5) built by `install sage
    --source` (14 units, 4:25) and verified in 12 cases (MHA, GQA, MQA, non-causal, packed through
    sageattn_varlen, head dims 64 and 128; forward only) and at Llama-3.1 8B's heads; each case names
    the int8 attention kernel, not torch's mean of K that runs longer at these shapes."""
    from attn_installer.verify import VerifyResult, attention_kernel, case_lines

    rep = json.loads((RUN / "sage" / "sage-report.json").read_text())
    validate(rep["plan"], "plan.schema.json")
    (res,) = rep["results"]
    assert res["ok"] and res["route"] == "source"
    v = res["verify"]
    names = [c["name"] for c in v["cases"]]
    assert v["status"] == "passed" and len(names) == 12
    assert {"gqa causal h8/kv2 d128", "mqa causal h8/kv1 d128", "varlen gqa causal h8/kv2 d128"} <= set(names)
    assert all("dq_rel_err" not in c for c in v["cases"])  # forward only: no gradients were compared
    lines = case_lines(VerifyResult(v["backend"], v["status"], v["detail"], v))
    assert all("kernel void qk_int8_sv_f8_attn_kernel" in ln for ln in lines if "varlen" not in ln), lines
    assert all("kernel _attn_fwd" in ln for ln in lines if "varlen" in ln), lines  # sageattn_varlen: Triton
    # the other recorded runs still name their attention kernels
    fa3 = json.loads((RUN / "train-merge" / "auto-report.json").read_text())["results"][1]["verify"]
    assert all("FlashAttnFwdSm90" in str(attention_kernel(c["kernels"])) for c in fa3["cases"])
    (llama,) = json.loads((RUN / "sage" / "verify-llama.json").read_text())
    assert llama["status"] == "passed" and "model causal h32/kv8 d128" in [c["name"] for c in llama["cases"]]
