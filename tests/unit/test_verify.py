"""Verification result parsing on recorded GPU output and on the failures users hit."""

from __future__ import annotations

import json
import sys
import types

import pytest

from attn_installer.matrix import load_matrix
from attn_installer.verify import call_table, cases, parse_verify_output
from tests.conftest import FIXTURES, load_target


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


def test_cases_cover_the_packed_path_of_sage_only_for_now():
    m = load_matrix()
    assert [c["name"] for c in cases(m.backend("sage"))] == ["causal", "varlen"]
    assert [c["name"] for c in cases(m.backend("flash_attention_2"), head_dim=64)] == ["causal"]
    assert cases(m.backend("flash_attention_2"), head_dim=64)[0]["head_dim"] == 64
