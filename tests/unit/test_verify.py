"""Verification result parsing on recorded GPU output and on the failures users hit."""

from __future__ import annotations

import json

from attn_installer.verify import SNIPPET, parse_verify_output
from tests.conftest import FIXTURES


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


def test_snippet_compiles_and_checks_the_known_false_successes():
    compile(SNIPPET, "<verify>", "exec")
    assert "C++/CUDA extensions" in SNIPPET  # xformers falling back
    assert "falls back to the math kernel" in SNIPPET  # SDPA with no fused kernel
    assert "is_available" in SNIPPET  # no GPU: skipped
