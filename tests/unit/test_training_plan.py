"""Planning from the user's training: packing, the model's head dims / sliding window / soft-capping
(matrices/backends.toml [[model_rule]]), FA3 builds for the model's head dims, and the user's own
choice kept unless it cannot run here or a measurement at the model's shape says otherwise."""

from __future__ import annotations

from dataclasses import replace

import pytest

from attn_installer.matrix import load_matrix
from attn_installer.modelconfig import ModelAttention, read_model_attention
from attn_installer.request import MeasuredSpeed, Request, Training
from attn_installer.resolve import training_misfits
from tests.conftest import FIXTURES
from tests.machines import MACHINES, planned

MODELS = FIXTURES / "model-configs"
LLAMA = read_model_attention(MODELS / "llama-3.1-8b-instruct.json")
GEMMA2 = read_model_attention(MODELS / "gemma-2-2b.json")
DEEPSEEK = read_model_attention(MODELS / "deepseek-v2-lite.json")
PHI = read_model_attention(MODELS / "phi-3.5-mini-instruct.json")
# written for this test: a head dim above 256 (as Gemma 3's global layers of the larger models have)
WIDE = ModelAttention(heads=8, kv_heads=4, head_dim=320, head_dim_v=320, source="test: head dim 320")


def plan(machine, training=None, **kw):
    return planned(MACHINES[machine], cache_dir="/cache", training=training, **kw)


def misfits(machine, backend, model=None, **kw):
    m = load_matrix()
    return training_misfits(m.backend(backend), MACHINES[machine], m,
                            Request(training=Training(source="train.yaml", model=model, **kw)))


def test_model_fields_from_real_configs():
    assert (GEMMA2.softcap, GEMMA2.sliding_window, GEMMA2.model_type) == (50.0, 4096, "gemma2")
    assert LLAMA.softcap is None and LLAMA.sliding_window is None
    assert read_model_attention(MODELS / "qwen2.5-3b-instruct.json").sliding_window is None  # use_sliding_window: false
    assert read_model_attention(MODELS / "phi-3.5-mini-instruct.json").sliding_window is None  # window > positions
    assert read_model_attention(MODELS / "gpt-oss-20b.json").sliding_window == 128  # layer_types
    assert read_model_attention(MODELS / "gemma-3-1b-it.json").sliding_window == 512


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.glob("*.json") if p.name != "expected.json"))
def test_sliding_window_and_softcap_match_the_research_table(name):
    import json

    want = json.loads((MODELS / "expected.json").read_text())[name]
    got = read_model_attention(MODELS / name)
    assert got.sliding_window == want["sliding_window_effective"]
    assert got.softcap == want["attn_logit_softcapping"]


def test_head_dim_over_256_rules_out_fa2_fa3_and_sage():
    for backend in ("flash_attention_2", "flash_attention_3", "sage"):
        assert any("takes head dims up to" in w for w in misfits("h100", backend, WIDE)), backend
    for backend in ("sdpa", "flex_attention", "eager"):
        assert misfits("h100", backend, WIDE) == [], backend
    p = plan("h100", Training(source="t.yaml", model=WIDE))
    assert not p.backend("flash_attention_2").viable and not p.backend("flash_attention_3").viable
    assert p.recommended == "sdpa"


def test_softcap_needs_a_backend_that_applies_it():
    for backend in ("sdpa", "xformers", "sage"):
        why = misfits("a100", backend, GEMMA2)
        assert any("does not apply soft-capping (transformers drops it silently)" in w for w in why), backend
    for backend in ("flash_attention_2", "flex_attention", "eager"):
        assert misfits("a100", backend, GEMMA2) == [], backend
    assert any("soft-capping" in w for w in misfits("mi300x", "flash_attention_2_rocm", GEMMA2))  # CK ignores it
    # FA4 on Blackwell: head dim 256 but soft-capping only up to 128
    assert any("soft-caps only up to head dim 128" in w for w in misfits("b200", "flash_attention_4", GEMMA2))
    assert misfits("h100", "flash_attention_4", GEMMA2) == []
    p = plan("a100", Training(source="gemma.yaml", model=GEMMA2))
    assert p.recommended == "flash_attention_2" and not p.backend("sdpa").viable


def test_mla_head_dims():
    assert any("needs them equal" in w for w in misfits("a100", "flash_attention_2", DEEPSEEK))
    assert misfits("h100", "flash_attention_3", DEEPSEEK) == []  # the (192, 128) pair
    assert misfits("h100", "flash_attention_4", DEEPSEEK) == []
    assert misfits("b200", "flash_attention_4", DEEPSEEK) == []  # a listed pair on SM100


def test_packing_needs_a_varlen_path():
    why = misfits("a100", "sdpa", packing=True)
    assert why and "has no varlen (packed) path" in why[0]
    assert misfits("a100", "flex_attention", packing=True) == []
    p = plan("h100", Training(source="t.yaml", packing=True))
    assert p.recommended == "flash_attention_2" and p.config["sample_packing"] is True


def test_packing_that_nothing_can_do_is_said_and_turned_off_only_when_allowed():
    tr = Training(source="t.yaml", packing=True, choice="flash_attention_2", choice_from="flash_attention: true")
    blocked = plan("v100_cu126", tr)
    assert blocked.recommended is None and blocked.choice.packing == "blocked"
    assert "--allow-no-packing" in blocked.choice.packing_reason and "sdpa fits" in blocked.choice.packing_reason
    assert blocked.choice.packing_reason in blocked.warnings
    off = plan("v100_cu126", replace(tr, allow_no_packing=True))
    assert off.recommended == "sdpa" and off.choice.packing == "off"
    assert off.config["sample_packing"] is False and "pad_to_sequence_len" not in off.config


def test_users_choice_stays_when_it_fits():
    tr = Training(source="t.yaml", model=LLAMA, choice="sdpa", choice_from="attn_implementation: sdpa")
    p = plan("a100", tr)  # the plan alone would pick FA2 (release wheel)
    assert plan("a100").recommended == "flash_attention_2"
    assert p.recommended == "sdpa" and p.choice.kept and p.config["attn_implementation"] == "sdpa"
    assert p.choice.reasons[0].startswith("attn_implementation: sdpa selects sdpa, which fits this machine")
    # not installed but obtainable without a source build: kept, with how to get it
    p = plan("h100", replace(tr, choice="flash_attention_2", choice_from="flash_attention: true"))
    assert p.recommended == "flash_attention_2" and p.choice.kept
    assert "`attn-install install flash_attention_2` gets it" in p.choice.reasons[0]
    assert p.to_dict()["choice"]["kept"] is True


def test_users_choice_that_cannot_run_is_replaced_saying_why():
    tr = Training(source="t.yaml", choice="flash_attention_2", choice_from="flash_attention: true")
    p = plan("colab_t4", tr)
    assert p.recommended == "xformers" and not p.choice.kept
    assert "flash_attention: true selects flash_attention_2, which cannot run here: " in p.choice.reasons[0]
    assert "needs SM >=80" in p.choice.reasons[0] and p.choice.reasons[0].endswith(
        "; xformers instead, not installed yet (`attn-install install xformers` gets it: torch_index pypi)")
    # the model rules count too: SDPA drops Gemma 2's soft-capping
    gem = plan("a100", Training(source="g.yaml", model=GEMMA2, choice="sdpa", choice_from="attn_implementation: sdpa"))
    assert gem.recommended == "flash_attention_2" and "soft-capping" in gem.choice.reasons[0]
    # a source build only is not "installed": replaced, saying how to keep it
    fa3 = plan("h100", replace(tr, choice="flash_attention_3", choice_from="attn_implementation: flash_attention_3"))
    assert fa3.recommended == "sdpa" and "needs a source build here" in fa3.choice.reasons[0]
    assert plan("h100", replace(tr, choice="flash_attention_3"), allow_source=True).recommended == "flash_attention_3"
    # failed verification of the installed build
    bad = plan("a100", replace(tr, choice="sdpa", verified={"sdpa": "failed: dk differs"}))
    assert bad.recommended == "flash_attention_2" and "failed verification" in bad.choice.reasons[0]


def test_a_measurement_at_the_models_shape_replaces_the_choice_only_beyond_the_margin():
    tr = Training(source="t.yaml", model=LLAMA, choice="sdpa", choice_from="attn_implementation: sdpa")
    where = "NVIDIA A100-SXM4-80GB, bf16 causal B=4 S=4096 H=32 KV=8 D=128"
    close = (MeasuredSpeed("sdpa", 10.0, "fwd+bwd", where), MeasuredSpeed("flex_attention", 9.5, "fwd+bwd", where))
    p = plan("a100", tr, measured=close)
    assert p.recommended == "sdpa" and p.choice.kept
    assert "not faster by more than the 10% margin" in " ".join(p.choice.reasons)
    far = (MeasuredSpeed("sdpa", 10.0, "fwd+bwd", where), MeasuredSpeed("flex_attention", 7.0, "fwd+bwd", where))
    p = plan("a100", tr, measured=far)
    assert p.recommended == "flex_attention" and not p.choice.kept
    assert p.choice.reasons[0] == (f"measured on this machine at this model's shape ({where}): flex_attention "
                                   "7.00 ms vs sdpa 10.00 ms fwd+bwd, 43% faster, more than the 10% margin: "
                                   "flex_attention replaces attn_implementation: sdpa")
    assert p.config["torch_compile"] is True
    assert plan("a100", replace(tr, margin=0.5), measured=far).recommended == "sdpa"
    # a faster backend that does not fit the training never replaces it
    packed = replace(tr, packing=True, choice="flex_attention", choice_from="attn_implementation: flex_attention")
    sdpa_fast = (MeasuredSpeed("flex_attention", 10.0, "fwd+bwd", where), MeasuredSpeed("sdpa", 5.0, "fwd+bwd", where))
    assert plan("a100", packed, measured=sdpa_fast).recommended == "flex_attention"


def test_prefer_recommended_and_unjudged_values():
    tr = Training(source="t.yaml", choice="sdpa", choice_from="attn_implementation: sdpa", prefer_recommended=True)
    p = plan("a100", tr)
    assert p.recommended == "flash_attention_2" and not p.choice.kept
    hub = plan("a100", replace(tr, prefer_recommended=False, choice="kernels-community/flash-attn3@v1",
                               choice_from="attn_implementation: kernels-community/flash-attn3@v1"))
    assert hub.choice.kept and not hub.choice.judged and hub.choice.backend is None
    assert any("a hub kernel path; attn-install cannot judge it" in w for w in hub.warnings)
    odd = plan("a100", replace(tr, prefer_recommended=False, choice="flash", choice_from="attn_implementation: flash"))
    assert odd.choice.kept and "not an attention backend attn-install knows" in odd.choice.reasons[0]


def test_fa3_source_build_keeps_the_models_head_dim_and_softcap():
    from attn_installer.plan.steps import fa3_trim_env

    m = load_matrix()

    def env(model):
        return fa3_trim_env(m, Request(training=Training(model=model)), ("sm_90",))

    phi, trimmed = env(PHI)  # head dim 96 runs on the 96 kernel
    assert trimmed and "FLASH_ATTENTION_DISABLE_HDIM96" not in phi and phi["FLASH_ATTENTION_DISABLE_HDIM128"] == "TRUE"
    ds, _ = env(DEEPSEEK)  # MLA trains on the 192 kernel, its forward on the mixed one
    assert "FLASH_ATTENTION_DISABLE_HDIM192" not in ds and "FLASH_ATTENTION_DISABLE_HDIMDIFF192" not in ds
    gem, _ = env(GEMMA2)
    assert "FLASH_ATTENTION_DISABLE_HDIM256" not in gem and "FLASH_ATTENTION_DISABLE_SOFTCAP" not in gem
    llama, _ = env(LLAMA)
    assert llama["FLASH_ATTENTION_DISABLE_SOFTCAP"] == "TRUE" and "FLASH_ATTENTION_DISABLE_HDIM128" not in llama
    p = plan("h100", Training(model=GEMMA2), backend="flash_attention_3")
    build = next(s for s in p.backend("flash_attention_3").steps if s.kind == "build")
    assert "FLASH_ATTENTION_DISABLE_SOFTCAP" not in build.env and build.env["FLASH_ATTENTION_DISABLE_HDIM128"] == "TRUE"


TRIMMED_128 = {  # the flash_attn_config.py CONFIG of an FA3 built for bf16 / head dim 128 (hopper/setup.py names)
    "FLASHATTENTION_DISABLE_BACKWARD": False, "FLASHATTENTION_DISABLE_SOFTCAP": True,
    "FLASHATTENTION_DISABLE_VARLEN": False, "FLASHATTENTION_DISABLE_LOCAL": False,
    "FLASHATTENTION_DISABLE_HDIM64": True, "FLASHATTENTION_DISABLE_HDIM96": True,
    "FLASHATTENTION_DISABLE_HDIM128": False, "FLASHATTENTION_DISABLE_HDIM192": True,
    "FLASHATTENTION_DISABLE_HDIM256": True, "FLASH_ATTENTION_DISABLE_HDIMDIFF64": True,
    "FLASH_ATTENTION_DISABLE_HDIMDIFF192": True,
}


def test_an_fa3_built_for_other_head_dims_is_not_installed_for_this_model():
    f = MACHINES["h200_torch211"]
    f = replace(f, packages={**f.packages, "flash-attn-3": "3.0.0"}, build_flags={"flash-attn-3": TRIMMED_128})
    ok = planned(f, training=Training(model=LLAMA)).backend("flash_attention_3")
    assert ok.route == "installed" and ok.steps == ()
    for model, needle in ((GEMMA2, "built for head dims 128"), (DEEPSEEK, "needs the head dim 192 kernel"),
                          (PHI, None)):
        fa3 = planned(f, training=Training(model=model)).backend("flash_attention_3")
        if needle is None:  # 96 runs on the 128 kernel
            assert fa3.route == "installed"
            continue
        assert fa3.route == "torch_index", model
        assert needle in " ".join(fa3.warnings)
        wheel = fa3.steps[0]
        assert "--force-reinstall" in wheel.argv and "--no-deps" in wheel.argv  # same version: pip would keep it
        assert "(replacing the installed flash-attn-3 build)" in wheel.description
    gem = planned(f, training=Training(model=GEMMA2)).backend("flash_attention_3")
    assert "built without soft-capping" in " ".join(gem.warnings)
    # a merge replacing the config's sdpa says the installed FA3 is replaced, not "not installed yet"
    tr = Training(source="g.yaml", model=GEMMA2, packing=True, choice="sdpa", choice_from="attn_implementation: sdpa")
    p = planned(f, training=tr)
    assert p.recommended == "flash_attention_3" and not p.choice.kept
    assert p.choice.reasons[0].endswith(
        "; flash_attention_3 instead, the installed flash-attn-3 3.0.0 does not fit (the plan's warning says "
        "why): `attn-install install flash_attention_3` replaces it (torch_index pypi)"), p.choice.reasons[0]


def test_the_probe_reads_fa3_build_flags_from_the_file_its_build_leaves(tmp_path):
    from attn_installer.facts import Facts
    from attn_installer.probe.pyenv import read_build_flags

    site = tmp_path / "site"
    site.mkdir()
    # what hopper/setup.py create_build_config_file() writes (repr of CONFIG, then show())
    (site / "flash_attn_config.py").write_text(
        "# Auto-generated by flash attention 3 setup.py\n"
        f"CONFIG = {{'build_flags': {TRIMMED_128!r}}}\n\n"
        "def show():\n    from pprint import pprint\n    pprint(CONFIG)\n\n")
    flags, notes = read_build_flags([str(tmp_path / "empty"), str(site)], {"flash-attn-3": "flash_attn_config.py"})
    assert flags == {"flash-attn-3": TRIMMED_128} and notes == []
    (site / "flash_attn_config.py").write_text("CONFIG = {'build_flags': open('x')}\n")  # never evaluated
    flags, notes = read_build_flags([str(site)], {"flash-attn-3": "flash_attn_config.py"})
    assert flags == {} and "could not be read" in notes[0]
    f = replace(MACHINES["h100"], build_flags={"flash-attn-3": TRIMMED_128})
    assert Facts.from_dict(f.to_dict()).build_flags == {"flash-attn-3": TRIMMED_128}
    assert "build_flags" not in MACHINES["h100"].to_dict()  # facts without them are as before
