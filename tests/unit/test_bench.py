"""`attn-install bench`: shapes from model configs, parsing recorded H200 output, the cache,
measured ranking in the plan, and the CLI on a fake runner (no GPU, no torch in CI)."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from attn_installer import bench as b
from attn_installer import cli
from attn_installer.cli.app import App
from attn_installer.console import render_bench
from attn_installer.errors import BenchError, UsageError
from attn_installer.judge import judge
from attn_installer.matrix import load_matrix
from attn_installer.modelconfig import Shape, parse_model_config, shape_from_model_config
from attn_installer.request import MeasuredSpeed
from tests.conftest import FIXTURES, FakeRunner, load_target
from tests.machines import MACHINES, planned

BENCH = FIXTURES / "bench"
H200_8K = (BENCH / "h200-b2-s8192-recorded.jsonl").read_text()
H200_2K = (BENCH / "h200-b8-s2048-recorded.jsonl").read_text()
NO_GPU = ('{"attn_bench": 1, "kind": "env", "status": "no_gpu", "detail": "torch.cuda.is_available() is False: '
          'no GPU to measure", "torch": "2.8.0+cpu"}\n{"attn_bench": 1, "kind": "done"}\n')
H200 = dataclasses.replace(MACHINES["h200_torch211"],
                           packages={**MACHINES["h200_torch211"].packages, "flash-attn-3": "3.0.0b1"})
M = load_matrix()
CONFIG_8K = b.BenchConfig(shape=Shape(batch=2, seq_len=8192, heads=32, kv_heads=32, head_dim=128),
                          backends=M.bench_order)


def with_errors(text: str) -> str:
    """The recorded H200 lines with the errors a correct bf16 kernel shows and a build digest added
    (crafted: the hand-assembled recordings kept no error numbers, so judged as they are every
    result is rejected, see test_recorded_lines_without_errors_are_rejected)."""
    grads = {"status": "ok", "detail": "", "seq_len": 1024, **{f"{g}_rel_err": 2.5e-3 for g in ("dq", "dk", "dv")},
             **{f"{g}_cosine": 0.99999 for g in ("dq", "dk", "dv")}}
    out = []
    for line in text.splitlines():
        obj = json.loads(line)
        if obj.get("kind") == "result" and obj.get("status") == "ok":
            obj.update(rel_err=2e-3, cosine=0.99999, max_abs_err=0.0095, build=f"build-{obj['backend']}")
            if obj.get("fwdbwd_ms"):
                obj["grads"] = grads
        out.append(json.dumps(obj))
    return "\n".join(out) + "\n"


def report(text=None, config=CONFIG_8K, facts=H200):
    rep = b.parse_bench_output(with_errors(H200_8K) if text is None else text, "", 0, False)
    return judge(dataclasses.replace(rep, config=config.to_dict(), machine=b.machine_facts(facts, M),
                                     created="2026-11-27T12:00:00+00:00"), M)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(("name", "want"), [
    ("llama-3-8b.json", {"heads": 32, "kv_heads": 8, "head_dim": 128, "seq_len": 4096}),
    ("qwen2.5-7b.json", {"heads": 28, "kv_heads": 4, "head_dim": 128, "seq_len": 4096}),
    ("mistral-7b-v0.1.json", {"heads": 32, "kv_heads": 8, "head_dim": 128, "seq_len": 4096}),
    ("gemma-7b.json", {"heads": 16, "kv_heads": 16, "head_dim": 256, "seq_len": 4096}),
])
def test_shape_from_hf_config(name, want):
    assert shape_from_model_config(BENCH / "model-configs" / name) == want


def test_shape_short_context_and_multimodal_text_config():
    got = parse_model_config({"text_config": {"hidden_size": 2048, "num_attention_heads": 16,
                                                "max_position_embeddings": 2048}}, "cfg.json")
    assert got == {"heads": 16, "kv_heads": 16, "head_dim": 128, "seq_len": 2048}


@pytest.mark.parametrize(("content", "needle"), [
    (None, "cannot read the model config"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"hidden_size": 4096}', "field 'num_attention_heads' is missing"),
    ('{"hidden_size": 4096, "num_attention_heads": 0}', "field 'num_attention_heads': 0 is not a positive"),
    ('{"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 7}',
     "field 'num_key_value_heads': 7 does not divide"),
    ('{"hidden_size": 4000, "num_attention_heads": 48}', "field 'hidden_size': 4000 is not a multiple"),
    ('{"num_attention_heads": 32}', "neither 'head_dim' nor 'hidden_size'"),
])
def test_bad_model_config_is_one_line_naming_file_and_field(tmp_path, content, needle):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as e:
        shape_from_model_config(path)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_backend_names_and_aliases():
    assert b.parse_backends((), M) == ("sdpa", "flex_attention", "xformers", "flash_attention_2",
                                       "flash_attention_3", "flash_attention_4", "sage")
    assert b.parse_backends(("sdpa,fa3", "flex", "sdpa"), M) == ("sdpa", "flash_attention_3", "flex_attention")
    with pytest.raises(UsageError, match="unknown backend 'eagerr'"):
        b.parse_backends(("eagerr",), M)


# --------------------------------------------------------------------------- parsing and ranking


def test_recorded_h200_output_parses_and_ranks():
    rep = report()
    assert rep.status == "ok" and rep.complete and rep.measured and rep.env["gpu"] == "NVIDIA H200"
    by = {r.label: r for r in rep.results}
    assert by["sdpa"].kernel == "cudnn" and by["sdpa[math]"].status == "skipped"
    assert by["xformers"].status == "error" and "No operator found" in by["xformers"].detail
    assert by["sage"].fwdbwd is None  # forward only
    train = [r.label for r in b.ranked(rep, "fwd+bwd")]
    assert train == ["flash_attention_3", "sdpa", "flex_attention"]  # forced kernels never rank
    assert by["flash_attention_3"].ms("fwd+bwd") == pytest.approx(6.712, abs=1e-3)
    infer = [r.label for r in b.ranked(rep, "fwd")]
    assert infer == ["flash_attention_3", "sdpa", "flex_attention", "sage"]


def test_recorded_lines_without_errors_are_rejected():
    """As recorded: SDPA, flex and Sage kept no error, so they are rejected; FA3 kept the max abs
    error of its forward (0.0156, shared/fixtures/nvidia-h200/fa3-trimmed-build.json) and is judged
    on it. The H200's 989 TFLOP/s is above every recorded throughput: speed rejects none."""
    rep = report(H200_8K)
    assert [r.label for r in b.ranked(rep, "fwd+bwd")] == ["flash_attention_3"]
    sdpa = next(r for r in rep.results if r.label == "sdpa")
    assert sdpa.status == "rejected" and sdpa.rejected == ("no error against the fp32 reference was measured",)
    assert rep.judgment["ceiling_tflops"] == 989.4 and rep.judgment["peak"] == "H200 SXM"
    assert not any("TFLOP/s" in reason for r in rep.results for reason in r.rejected)


def test_recorded_short_sequence_ranks_fa3_then_sdpa():
    rep = report(with_errors(H200_2K), dataclasses.replace(CONFIG_8K, shape=Shape(batch=8, seq_len=2048, kv_heads=32)))
    assert [r.label for r in b.ranked(rep, "fwd+bwd")][:2] == ["flash_attention_3", "sdpa"]


def test_table_marks_the_winner_and_says_what_was_skipped():
    text = render_bench(report())
    assert "NVIDIA H200, driver 580.159.04, torch 2.11.0+cu130" in text
    assert "*flash_attention_3" in text and "default kernel: cudnn" in text
    assert "sdpa[math]" in text and "skipped: math kernel skipped" in text
    assert "fastest for full (fwd+bwd): flash_attention_3" in text


def test_no_gpu_and_no_torch_measure_nothing():
    rep = b.parse_bench_output(NO_GPU, "", 0, False)
    assert rep.status == "no_gpu" and not rep.measured and rep.complete
    assert render_bench(rep).startswith("nothing measured: torch.cuda.is_available() is False")
    b.require_ok(rep)  # not an error


def test_timeout_keeps_finished_backends():
    lines = H200_8K.splitlines()
    partial = "\n".join(lines[:3]) + "\n"
    rep = b.parse_bench_output(partial, "", 124, True, timeout=60)
    assert not rep.complete and len(rep.results) == 2
    assert "timed out after 60 s while measuring flex_attention" in rep.detail


def test_crash_without_output_is_an_error():
    rep = b.parse_bench_output("", "Segmentation fault (core dumped)\n", -11, False)
    assert rep.status == "crashed" and "Segmentation fault" in rep.detail
    with pytest.raises(BenchError):
        b.require_ok(rep)


# --------------------------------------------------------------------------- cache


def test_cache_key_changes_with_what_the_numbers_depend_on():
    key = b.cache_key(H200, M, CONFIG_8K)
    assert key == b.cache_key(H200, M, CONFIG_8K)
    assert key != b.cache_key(H200, M, dataclasses.replace(CONFIG_8K, dtype="fp16"))
    assert key != b.cache_key(H200, M, dataclasses.replace(CONFIG_8K, packed=True))
    assert key != b.cache_key(H200, M, dataclasses.replace(CONFIG_8K, workload="inference"))
    newer_fa3 = dataclasses.replace(H200, packages={**H200.packages, "flash-attn-3": "3.0.0"})
    assert key != b.cache_key(newer_fa3, M, CONFIG_8K)
    assert key != b.cache_key(MACHINES["h100"], M, CONFIG_8K)


def test_cache_round_trip_and_lookup_for_the_plan(tmp_path):
    rep = dataclasses.replace(report(), key=b.cache_key(H200, M, CONFIG_8K))
    path = b.cache_path(tmp_path, rep.key)
    b.save_cached(path, rep)
    assert path.parent.name == "bench"
    again = b.load_cached(path)
    assert again == rep and judge(again, M) == rep  # judging twice changes nothing
    assert b.find_measured(tmp_path, H200, M, "full") == rep
    assert b.find_measured(tmp_path, MACHINES["h200_torch211"], M, "full") is None  # FA3 not installed there
    # only a bench at the training's model shape counts for it (config --merge's measured switch)
    from attn_installer.modelconfig import ModelAttention

    model = ModelAttention(heads=32, kv_heads=32, head_dim=128, head_dim_v=128)
    assert b.find_measured(tmp_path, H200, M, "full", b.training_shape(model, 8192, None, False)) == rep
    assert b.find_measured(tmp_path, H200, M, "full", b.training_shape(model, 4096, None, False)) is None
    gqa = dataclasses.replace(model, kv_heads=8)
    assert b.find_measured(tmp_path, H200, M, "full", b.training_shape(gqa, 8192, None, False)) is None
    assert b.find_measured(tmp_path, H200, M, "full", b.training_shape(model, 8192, None, True)) is None  # packed
    assert b.training_shape(dataclasses.replace(model, max_positions=131072), None, None, False)["seq_len"] == 4096
    path.write_text("{broken")
    assert b.load_cached(path) is None and b.find_measured(tmp_path, H200, M, "full") is None


# --------------------------------------------------------------------------- plan --measured


def plan(facts, workload="full", measured=()):
    return planned(facts, workload=workload, cache_dir="/c", measured=tuple(measured))


def test_plan_measured_reasons_from_the_recorded_h200():
    p = plan(H200, measured=b.measured_speeds(report(), "full", M, "nvidia"))
    assert p.recommended == "flash_attention_3"
    fa3 = p.backend("flash_attention_3").reason_texts[-1]
    assert fa3.startswith("measured: 6.71 ms fwd+bwd, fastest of 3 on this GPU (NVIDIA H200, bf16 causal B=2 S=8192")
    assert p.backend("sdpa").reason_texts[-1] == (
        "measured: 7.45 ms fwd+bwd, 1.11x the time of flash_attention_3 on this GPU")
    assert not any(r.startswith("measured") for r in p.backend("sage").reason_texts)


def test_measured_order_overrides_the_static_ranking():
    fast_flex = [MeasuredSpeed("sdpa", 7.0, "fwd+bwd"), MeasuredSpeed("flex_attention", 5.0, "fwd+bwd")]
    p = plan(MACHINES["h200_torch211"], measured=fast_flex)
    assert p.recommended == "flex_attention" and p.config["torch_compile"] is True
    assert [x.name for x in p.backends][:2] == ["flex_attention", "sdpa"]


def test_sage_never_wins_full_even_when_measured_fastest():
    sage_first = [MeasuredSpeed("sage", 0.1, "fwd+bwd"), MeasuredSpeed("sdpa", 7.0, "fwd+bwd")]
    assert plan(H200, "full", sage_first).recommended == "sdpa"
    infer = b.measured_speeds(report(), "inference", M, "nvidia")
    assert [m.backend for m in infer] == ["flash_attention_3", "sdpa", "flex_attention", "sage"]
    assert plan(H200, "inference", infer).recommended == "flash_attention_3"


def test_rocm_flash_attn_measurement_maps_to_the_rocm_backend():
    rep = b.parse_bench_output(
        '{"attn_bench": 1, "kind": "env", "status": "ok", "gpu": "AMD Instinct MI300X"}\n'
        '{"attn_bench": 1, "kind": "result", "backend": "flash_attention_2", "status": "ok", "rel_err": 0.003, '
        '"cosine": 0.99999, "grads": {"status": "ok", "dq_rel_err": 0.004, "dk_rel_err": 0.004, "dv_rel_err": 0.004, '
        '"dq_cosine": 0.9999, "dk_cosine": 0.9999, "dv_cosine": 0.9999}, "fwd_tflops": 400, "fwdbwd_tflops": 300, '
        '"fwd_ms": {"median": 2.0}, "fwdbwd_ms": {"median": 8.0}}\n{"attn_bench": 1, "kind": "done"}\n', "", 0, False)
    assert [m.backend for m in b.measured_speeds(rep, "full", M, "amd")] == ["flash_attention_2_rocm"]


# --------------------------------------------------------------------------- the snippet


def bench_program():
    return load_target("attn_bench")


@pytest.mark.parametrize(("names", "kernel"), [
    (["Memset (Device)", "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_"
                         "cga1x1x1_kernel0_0"], "cudnn"),
    (["aten::_scaled_dot_product_flash_attention", "void pytorch_flash::flash_fwd_kernel<>"], "flash"),
    (["aten::_scaled_dot_product_efficient_attention", "fmha_cutlassF_bf16_aligned_64x64_rf_sm80"], "efficient"),
    (["aten::_scaled_dot_product_attention_math", "aten::softmax"], "math"),
    (["aten::copy_"], "unknown"),
])
def test_snippet_names_the_sdpa_kernel(names, kernel):
    assert load_target("attn_calls").classify_kernel(names) == kernel


def test_snippet_without_torch_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert bench_program().main(["attn_bench.py", "{}"]) == 0
    rep = b.parse_bench_output(capsys.readouterr().out, "", 0, False)
    assert rep.status == "no_torch" and "torch cannot be imported" in rep.detail


def test_snippet_runs_on_cpu_torch_when_available(allow_subprocess, tmp_path):
    pytest.importorskip("torch")
    from attn_installer.runner import SubprocessRunner

    rep = b.run_bench(SubprocessRunner(), sys.executable, CONFIG_8K, M, timeout=120)
    assert rep.status in ("no_gpu", "ok")


# --------------------------------------------------------------------------- CLI on a fake runner


BUILDS_NOW = {"sdpa": "build-sdpa", "flex_attention": "build-flex_attention",
              "flash_attention_3": "build-flash_attention_3", "sage": "build-sage"}


def program(name: str) -> tuple[str, ...]:
    """The argv prefix that runs target program *name* in the fake probe's interpreter."""
    from attn_installer import target

    return target.argv("/env/bin/python", name)


@pytest.fixture
def fake_cli(tmp_path):
    """An App with the probe facts of the H200 and a runner replaying ``out`` for the bench program,
    ``builds`` for attn_builds.py and ``verify`` for attn_verify.py."""
    runners: list[FakeRunner] = []
    answer = {"out": NO_GPU, "builds": json.dumps({"builds": BUILDS_NOW}), "verify": ""}

    def make(log_path=None):
        r = FakeRunner({program("attn_builds"): (0, answer["builds"]), program("attn_verify"): (0, answer["verify"]),
                        ("/env/bin/python", "-I", "-c"): (0, answer["out"])})
        runners.append(r)
        return r

    app = App({"ATTN_INSTALL_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}, runner_factory=make,
              probe=lambda python, want_arch_list=False: H200)

    def use(out: str, **more: str) -> list[FakeRunner]:
        answer["out"] = out
        answer.update(more)
        return runners

    use.app = app  # type: ignore[attr-defined]
    return use


def calls_of(runners: list[FakeRunner], name: str) -> list[tuple[str, ...]]:
    return [c for r in runners for c in r.calls if len(c) > 5 and c[5] == name]


def passed_verify(backend: str, build: str) -> str:
    return json.dumps({"backend": backend, "status": "passed", "detail": "8 cases match fp32 attention",
                       "gpu": "NVIDIA H200", "build": build, "dtype": "bf16", "cases": []}) + "\n"


def run_cli(capsys, fake, *args):
    with pytest.raises(SystemExit) as e:
        cli.main(list(args), obj=fake.app)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_no_gpu_exits_0_and_caches_nothing(fake_cli, capsys, tmp_path):
    fake_cli(NO_GPU)
    code, out, _err = run_cli(capsys, fake_cli, "bench")
    assert code == 0 and out.startswith("nothing measured: torch.cuda.is_available() is False")
    assert not (tmp_path / "cache/bench").exists()
    code, out, err = run_cli(capsys, fake_cli, "bench", "--plot", str(tmp_path / "p.png"))
    assert code == 0 and "no plot written" in err and not (tmp_path / "p.png").exists()


def test_cli_measures_caches_plots_and_feeds_plan(fake_cli, capsys, tmp_path, allow_subprocess):
    # allow_subprocess: matplotlib runs fc-list when it builds its font cache; our runner is fake
    runners = fake_cli(with_errors(H200_8K))
    shape = ("--batch", "2", "--seq-len", "8192", "--kv-heads", "32")
    png = tmp_path / "bench.png"
    code, out, _err = run_cli(capsys, fake_cli, "bench", *shape, "--plot", str(png))
    assert code == 0 and "*flash_attention_3" in out, _err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (argv,) = calls_of(runners, "attn_bench")
    assert argv[:3] == ("/env/bin/python", "-I", "-c")
    sent = json.loads(argv[6])
    assert sent["seq_len"] == 8192 and sent["calls"]["flash_attention_3"]["module"] == "flash_attn_interface"
    assert sent["builds"]["flash_attention_3"] == ["flash-attn-3", "torch"] and sent["builds"]["sdpa"] == ["torch"]

    code, out, err = run_cli(capsys, fake_cli, "bench", *shape, "--json")
    assert code == 0 and "cached result of" in err and len(calls_of(runners, "attn_bench")) == 1  # no second run
    doc = json.loads(out)
    assert doc["schema_version"] == 1 and doc["machine"]["driver"] == "580.159.04"
    assert doc["machine"]["builds"] == BUILDS_NOW and doc["judgment"]["ceiling_tflops"] == 989.4
    code, _out, _err = run_cli(capsys, fake_cli, "bench", *shape, "--rerun")
    assert code == 0 and len(calls_of(runners, "attn_bench")) == 2

    # measured, but no build verified yet: nothing ranks by measurement
    code, out, err = run_cli(capsys, fake_cli, "plan", "--measured")
    assert code == 0 and "measured:" not in out
    assert "not ranked by measurement: flash_attention_3: build build-flash_attention_3 has no passed " \
           "verification on NVIDIA H200" in err

    for backend in ("sdpa", "flash_attention_3", "flex_attention"):
        fake_cli(with_errors(H200_8K), verify=passed_verify(backend, BUILDS_NOW[backend]))
        code, out, err = run_cli(capsys, fake_cli, "verify", backend)
        assert code == 0 and out.startswith(f"{backend}: passed"), err
    code, out, _err = run_cli(capsys, fake_cli, "plan", "--measured")
    assert code == 0 and "measured: 6.71 ms fwd+bwd, fastest of 3 on this GPU" in " ".join(out.split())
    assert "recommended: flash_attention_3" in out
    cfg = tmp_path / "out.yaml"
    code, out, _err = run_cli(capsys, fake_cli, "config", "--measured", "-o", str(cfg))
    assert code == 0 and "attn_implementation: flash_attention_3" in cfg.read_text()

    # FA3 reinstalled (another build): its numbers and its verdict no longer count, and the bench
    # measures again instead of reading its cache
    fake_cli(with_errors(H200_8K), builds=json.dumps({"builds": {**BUILDS_NOW, "flash_attention_3": "other"}}))
    code, out, err = run_cli(capsys, fake_cli, "plan", "--measured")
    assert code == 0 and "recommended: sdpa" in out and "the installed build changed since it was measured" in err
    code, _out, err = run_cli(capsys, fake_cli, "bench", *shape)
    assert code == 0 and "cached result" not in err and len(calls_of(runners, "attn_bench")) == 3


def test_cli_plan_measured_without_a_bench_falls_back(fake_cli, capsys):
    code, out, err = run_cli(capsys, fake_cli, "plan", "--measured")
    assert code == 0 and "using the static ranking" in err and "measured:" not in out


def test_cli_bad_model_config_and_missing_matplotlib(fake_cli, capsys, tmp_path, monkeypatch):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 4096}')
    code, _out, err = run_cli(capsys, fake_cli, "bench", "--model-config", str(bad))
    assert code == 2 and err.count("\n") == 1 and str(bad) in err and "num_attention_heads" in err
    fake_cli(H200_8K)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _out, err = run_cli(capsys, fake_cli, "bench", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and "pip install 'attn-install[plot]'" in err


def test_real_h200_bench_run_recommends_the_measured_winner():
    """`attn-install bench --json` as run by attn-install on the device H200 (B=4 S=4096, torch
    2.11.0+cu130, FA3 built by `attn-install install flash_attention_3`): the plan's pick is the
    fastest measured fwd+bwd, i.e. >= 95 % of the best viable backend (issue acceptance)."""
    from pathlib import Path

    from attn_installer.facts import load_facts

    rec = b.load_cached(FIXTURES / "bench/h200-device-bench.json")
    assert rec is not None and rec.complete
    facts = load_facts(Path(FIXTURES / "nvidia/h200-device/probe.json"))
    facts = dataclasses.replace(facts, packages={**facts.packages, "flash-attn-3": "3.0.0b1"})
    p = plan(facts, measured=b.measured_speeds(rec, "full", M, "nvidia"))
    best = b.ranked(rec, "fwd_bwd")[0]
    assert best.backend == p.recommended == "flash_attention_3"
    assert p.backend("sdpa").reason_texts[-1].startswith("measured: 3.74 ms fwd+bwd, 1.08x")


def test_real_h200_run_with_two_installed_backends_and_packed():
    """The second device run (benchmarks/gpu_install.sh): FA3 built and SageAttention installed from
    a wheelhouse by attn-install, measured beside every SDPA kernel and flex. Training ranks by
    fwd+bwd (Sage has none, so it never ranks for full); inference ranks by fwd; packed (varlen) is
    what axolotl runs with sample_packing."""
    from pathlib import Path

    from attn_installer.facts import load_facts

    rec = b.load_cached(FIXTURES / "bench/h200-device-bench-sage-fa3.json")
    assert rec is not None and rec.complete
    ok = {(r.backend, r.variant) for r in rec.results if r.status == "ok"}
    assert {("sdpa", None), ("sdpa", "cudnn"), ("sdpa", "flash"), ("sdpa", "efficient"), ("flex_attention", None),
            ("flash_attention_3", None), ("sage", None)} <= ok
    facts = load_facts(Path(FIXTURES / "nvidia/h200-device/probe.json"))
    facts = dataclasses.replace(facts, packages={**facts.packages, "flash-attn-3": "3.0.0b1",
                                                 "sageattention": "2.2.0"})
    full = b.measured_speeds(rec, "full", M, "nvidia")
    assert "sage" not in {m.backend for m in full}
    p = plan(facts, measured=full)
    best = min(full, key=lambda m: m.ms)
    chosen = next(m for m in full if m.backend == p.recommended)
    assert p.recommended == "flash_attention_3" and best.ms / chosen.ms >= 0.95
    # inference: forward times, Sage included (1.69 ms there, slower than FA3's 0.87 ms at this GQA shape)
    fwd = {m.backend: m.ms for m in b.measured_speeds(rec, "inference", M, "nvidia")}
    assert fwd["sage"] > fwd["flash_attention_3"]
    packed = b.load_cached(FIXTURES / "bench/h200-device-bench-packed.json")
    assert packed is not None
    status = {r.backend: r.status for r in packed.results if r.variant is None}
    assert status["flash_attention_3"] == "ok" and status["flex_attention"] == "ok" and status["sdpa"] == "skipped"
    sage_packed = b.load_cached(FIXTURES / "bench/h200-device-bench-packed-sage.json")
    assert sage_packed is not None
    (s,) = [r for r in sage_packed.results if r.backend == "sage"]
    assert s.status == "ok" and s.ms("fwd") is not None and s.ms("fwd+bwd") is None


def test_cli_verify_prints_one_line_per_case_and_records_a_failure(fake_cli, capsys, tmp_path):
    failing = {"backend": "flash_attention_3", "status": "failed", "gpu": "NVIDIA H200", "dtype": "bf16",
               "build": BUILDS_NOW["flash_attention_3"],
               "detail": "dk (gradient) differs from fp32 attention (rel err 0.87, cosine 0.5) in case "
                         "gqa causal h8/kv2 d64",
               "cases": [{"name": "mha causal h8/kv8 d64", "status": "passed", "out_rel_err": 0.002, "out_cosine": 1.0},
                         {"name": "gqa causal h8/kv2 d64", "status": "failed", "wrong": "dk", "out_rel_err": 0.002,
                          "out_cosine": 1.0, "dk_rel_err": 0.87}]}
    runners = fake_cli(with_errors(H200_8K), verify=json.dumps(failing) + "\n")
    model = FIXTURES / "model-configs" / "qwen2.5-3b-instruct.json"
    code, out, err = run_cli(capsys, fake_cli, "verify", "flash_attention_3", "--model-config", str(model))
    assert code == 7 and "verifying flash_attention_3 (bf16, 16 heads, 2 KV heads, head dim 128, bf16)" in err
    assert out.splitlines()[1:] == [
        "  ok   mha causal h8/kv8 d64: out rel err 2.0e-03 cos 1.00000",
        "  FAIL gqa causal h8/kv2 d64: out rel err 2.0e-03 cos 1.00000; dk 8.7e-01 (dk wrong)"]
    (argv,) = calls_of(runners, "attn_verify")
    sent = json.loads(argv[6])
    assert sent["build_dists"] == ["flash-attn-3", "torch"] and sent["dtype"] == "bf16"
    assert {c["head_dim"] for c in sent["cases"]} == {128} and "model causal h16/kv2 d128" in [
        c["name"] for c in sent["cases"]]
    run_cli(capsys, fake_cli, "bench", "--batch", "2", "--seq-len", "8192", "--kv-heads", "32")
    code, out, err = run_cli(capsys, fake_cli, "plan", "--measured")
    assert "flash_attention_3: build build-flash_attention_3 has no passed verification on NVIDIA H200 " \
           "(failed: dk (gradient) differs" in err
