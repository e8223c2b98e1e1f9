"""Bench results judged before anything ranks them: on the recorded H200 runs and on crafted ones
(the zeros stand-in of issue #14, NaN, an impossible speed, a wrong GQA gradient)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from attn_installer import bench as b
from attn_installer.console import render_bench
from attn_installer.judge import LEGACY_MAX_ABS_ERR, judge
from attn_installer.matrix import load_matrix
from tests.conftest import FIXTURES

M = load_matrix()
CONFIG = {"batch": 4, "seq_len": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128, "dtype": "bf16",
          "causal": True, "packed": False, "workload": "full", "warmup": 3, "repeats": 10}
GOOD_GRADS = {"status": "ok", "detail": "", "seq_len": 1024, "dq_rel_err": 2.5e-3, "dk_rel_err": 2.5e-3,
              "dv_rel_err": 2.3e-3, "dq_cosine": 0.99999, "dk_cosine": 0.99999, "dv_cosine": 0.99999}


def result(backend="flash_attention_2", **kw):
    """A result line as target/attn_bench.py prints it; defaults are SDPA's on the H200 (recorded)."""
    line = {"attn_bench": 1, "kind": "result", "backend": backend, "variant": None, "status": "ok",
            "version": "2.8.3", "fwd_ms": {"median": 0.9406}, "fwdbwd_ms": {"median": 3.7358},
            "fwd_tflops": 584.46, "fwdbwd_tflops": 515.06, "max_abs_err": 0.0095, "rel_err": 2e-3, "cosine": 0.99999,
            "grads": GOOD_GRADS, "build": "0123456789abcdef"}
    line.update(kw)
    return line


def judged(*lines, gpu="NVIDIA H200", dtype="bf16"):
    env = {"attn_bench": 1, "kind": "env", "status": "ok", "gpu": gpu, "torch": "2.11.0+cu130"}
    text = "\n".join(json.dumps(x) for x in (env, *lines, {"attn_bench": 1, "kind": "done"})) + "\n"
    rep = b.parse_bench_output(text, "", 0, False)
    return judge(dataclasses.replace(rep, config={**CONFIG, "dtype": dtype}), M)


def one(rep):
    (r,) = [r for r in rep.results if r.backend != "sdpa"]
    return r


# --------------------------------------------------------------------------- recorded


@pytest.mark.parametrize("name", ["h200-device-bench.json", "h200-device-bench-sage-fa3.json",
                                  "h200-device-bench-packed.json", "h200-device-bench-packed-sage.json"])
def test_recorded_h200_runs_are_accepted(name):
    """Real `attn-install bench --json` runs on the H200 (torch 2.11.0+cu130): every measured result
    is below the 989.4 TFLOP/s bf16 peak and within its error bound, so none is rejected; they kept
    only the max abs error (recorded before bench kept relative errors), judged against the legacy bound."""
    rep = b.load_cached(FIXTURES / "bench" / name)
    assert rep is not None
    j = judge(rep, M)
    assert j.judgment["ceiling_tflops"] == 989.4 and j.judgment["peak"] == "H200 SXM"
    measured = [r for r in rep.results if r.status == "ok"]
    assert measured and [r.status for r in j.results] == [r.status for r in rep.results]
    worst = max(r.max_abs_err or 0.0 for r in measured)
    assert worst < LEGACY_MAX_ABS_ERR
    fastest = max(max(r.fwd_tflops or 0.0, r.fwdbwd_tflops or 0.0) for r in measured)
    assert fastest < 989.4


def test_the_recorded_run_ranks_fa3_then_sdpa_then_flex():
    rep = judge(b.load_cached(FIXTURES / "bench/h200-device-bench.json"), M)
    order = [r.label for r in b.ranked(rep, "fwd+bwd")]
    assert order == ["flash_attention_3", "sdpa", "flex_attention"]


# --------------------------------------------------------------------------- crafted


def test_zeros_stand_in_is_rejected_for_error_gradients_and_speed():
    """What the issue measured: a flash-attn whose flash_attn_func returns zeros timed at 0.13 ms
    fwd+bwd, 10356 / 14550 TFLOP/s, max error 3.61."""
    zeros = result(fwd_ms={"median": 0.053}, fwdbwd_ms={"median": 0.132}, fwd_tflops=10356.0, fwdbwd_tflops=14550.0,
                   max_abs_err=3.61, rel_err=1.0, cosine=0.0,
                   grads={"status": "ok", "seq_len": 1024, **{f"d{x}_rel_err": 1.0 for x in "qkv"},
                          **{f"d{x}_cosine": 0.0 for x in "qkv"}})
    rep = judged(result("sdpa", version="2.11.0+cu130", kernel="cudnn"), zeros)
    r = one(rep)
    assert r.status == "rejected" and len(r.rejected) == 4
    assert r.rejected[0] == "output differs from fp32 attention: rel err 1 (tolerance 0.02), cosine 0 (at least 0.999)"
    assert r.rejected[1].startswith("gradients differ from fp32 attention's: dq rel err 1 cosine 0, dk")
    assert "fwd+bwd 14550 TFLOP/s is above the dense bf16 peak of the H200 SXM (989.4 TFLOP/s" in r.rejected[3]
    assert [x.label for x in b.ranked(rep, "fwd+bwd")] == ["sdpa"] and r.ms("fwd+bwd") is None
    assert [m.backend for m in b.measured_speeds(rep, "full", M, "nvidia")] == ["sdpa"]
    assert rep.judgment["rejected"] == ["flash_attention_2"]
    text = render_bench(rep)
    assert "*sdpa" in text and " flash_attention_2" in text and "REJECTED" in text
    assert "    rejected: fwd 10356 TFLOP/s is above" in text
    row = next(x for x in rep.to_dict()["results"] if x["backend"] == "flash_attention_2")
    assert row["status"] == "rejected" and len(row["rejected"]) == 4 and row["fwdbwd_tflops"] == 14550.0


@pytest.mark.parametrize("field", ["rel_err", "cosine"])
def test_nan_is_never_within_tolerance(field):
    r = one(judged(result(**{field: math.nan})))
    assert r.status == "rejected" and "output differs" in r.rejected[0]
    r = one(judged(result(grads={**GOOD_GRADS, "dk_rel_err": math.nan})))
    assert r.status == "rejected" and "dk rel err nan" in r.rejected[0]


def test_nan_survives_the_cache(tmp_path):
    rep = judged(result(rel_err=math.nan))
    path = tmp_path / "bench" / "x.json"
    b.save_cached(path, rep)
    again = b.load_cached(path)
    assert again is not None and one(judge(again, M)).status == "rejected"


def test_an_impossible_speed_alone_is_rejected():
    r = one(judged(result(fwd_tflops=1200.0, fwdbwd_tflops=900.0)))
    assert r.status == "rejected" and r.rejected == (
        "fwd 1200 TFLOP/s is above the dense bf16 peak of the H200 SXM (989.4 TFLOP/s, matrices/gpu_peaks.toml): "
        "the kernel cannot have done the work",)
    assert one(judged(result(fwd_tflops=989.0))).status == "ok"
    assert one(judged(result(fwdbwd_ms={"median": 0.0}))).status == "rejected"


def test_an_unknown_gpu_has_no_ceiling_and_says_so():
    rep = judged(result(fwd_tflops=5000.0), gpu="Imaginary Accelerator 9000")
    assert one(rep).status == "ok"
    assert rep.judgment["ceiling_tflops"] is None
    assert rep.judgment["note"].startswith("no peak known for Imaginary Accelerator 9000")
    assert "ceiling: none (no peak known for Imaginary Accelerator 9000" in render_bench(rep)
    assert one(judged(result(rel_err=0.5), gpu="Imaginary Accelerator 9000")).status == "rejected"


def test_the_ceiling_follows_the_gpu_and_dtype():
    assert one(judged(result(fwd_tflops=300.0, fwdbwd_tflops=200.0), gpu="NVIDIA A100-SXM4-80GB")).status == "ok"
    assert one(judged(result(fwd_tflops=320.0, fwdbwd_tflops=200.0), gpu="NVIDIA A100-SXM4-80GB")).status \
        == "rejected"
    # Turing has no bf16 tensor cores: judged against its fp16 rate (65)
    t4 = judged(result(fwd_tflops=70.0, fwdbwd_tflops=50.0), gpu="Tesla T4")
    assert one(t4).status == "rejected" and "no bf16 tensor cores" in one(t4).rejected[0]
    # GeForce: fp16 with fp16 accumulate runs at twice the fp32-accumulate rate; that is the ceiling
    assert one(judged(result(fwd_tflops=300.0, fwdbwd_tflops=200.0), gpu="NVIDIA GeForce RTX 4090",
                      dtype="fp16")).status == "ok"
    assert one(judged(result(fwd_tflops=300.0, fwdbwd_tflops=200.0), gpu="NVIDIA GeForce RTX 4090")).status \
        == "rejected"


def test_fwd_bwd_needs_its_gradients_checked():
    r = one(judged(result(grads=None)))
    assert r.status == "rejected" and r.rejected == ("forward + backward time without a gradient check",)
    r = one(judged(result(grads={"status": "error", "detail": "RuntimeError: CUDA error: an illegal memory access"})))
    assert r.rejected == ("gradient check failed: RuntimeError: CUDA error: an illegal memory access",)
    # forward only (inference, or Sage) needs none
    assert one(judged(result(fwdbwd_ms=None, fwdbwd_tflops=None, grads=None))).status == "ok"


def test_a_gqa_backward_wrong_only_in_dk_dv_is_rejected():
    """kernels-community#1085: the forward is right and dq too, dk / dv are not reduced to the KV heads."""
    wrong = {**GOOD_GRADS, "dk_rel_err": 0.87, "dk_cosine": 0.5, "dv_rel_err": 0.87, "dv_cosine": 0.5}
    r = one(judged(result(grads=wrong)))
    assert r.status == "rejected" and "dk rel err 0.87 cosine 0.5, dv rel err 0.87" in r.rejected[0]
    assert "dq" not in r.rejected[0]


def test_tolerance_is_the_backends_own():
    # SageAttention's 8-bit kernels pass at 0.08 / 0.998; the same numbers fail a bf16 kernel
    assert one(judged(result("sage", rel_err=0.034, cosine=0.9994, fwdbwd_ms=None, grads=None))).status == "ok"
    assert one(judged(result(rel_err=0.034, cosine=0.9994))).status == "rejected"


def test_legacy_results_are_judged_on_their_max_abs_error():
    legacy = {"rel_err": None, "cosine": None, "grads": None}
    assert one(judged(result(**legacy))).status == "ok"
    r = one(judged(result(**{**legacy, "max_abs_err": 3.61})))
    assert r.status == "rejected" and "max abs error 3.61" in r.rejected[0]
    r = one(judged(result(**{**legacy, "max_abs_err": None})))
    assert r.rejected == ("no error against the fp32 reference was measured",)


def test_forced_sdpa_kernels_are_judged_too_and_never_rank():
    rep = judged(result("sdpa", kernel="cudnn"), result("sdpa", variant="math", rel_err=0.9))
    forced = next(r for r in rep.results if r.variant == "math")
    assert forced.status == "rejected" and [r.label for r in b.ranked(rep, "fwd+bwd")] == ["sdpa"]


def test_errors_and_skips_are_left_as_they_are():
    rep = judged(result(status="error", detail="RuntimeError: kernel raised at the first call", fwd_ms=None,
                        fwdbwd_ms=None, rel_err=None, cosine=None, grads=None, max_abs_err=None))
    assert one(rep).status == "error" and one(rep).rejected == ()


# --------------------------------------------------------------------------- which builds may rank


def test_untrusted_names_why_a_measurement_may_not_rank():
    rep = judged(result("sdpa"), result("flash_attention_2", build="aaaa"), result("flex_attention", build=None),
                 result("flash_attention_3", build="cccc"))
    builds = {"sdpa": "0123456789abcdef", "flash_attention_2": "bbbb", "flash_attention_3": "cccc"}
    verified = {("sdpa", "0123456789abcdef"): "passed", ("flash_attention_3", "cccc"): "failed: dk differs"}
    why = b.untrusted(rep, builds, verified)
    assert set(why) == {"flash_attention_2", "flex_attention", "flash_attention_3"}
    assert why["flash_attention_2"].startswith("the installed build changed since it was measured (build aaaa")
    assert why["flex_attention"].startswith("measured without a build digest")
    assert why["flash_attention_3"] == ("build cccc has no passed verification on NVIDIA H200 (failed: dk differs): "
                                        "`attn-install verify flash_attention_3`")
    speeds = b.measured_speeds(rep, "full", M, "nvidia", exclude=why)
    assert [m.backend for m in speeds] == ["sdpa"]
