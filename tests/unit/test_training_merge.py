"""`config --merge` planned from the file it merges into: a table of axolotl configs written for the
tests (tests/fixtures/axolotl/training/), each merged on several machines' facts and for several
axolotl versions, with the invariants of issue #13 asserted on every result:

* the user's choice stays when it fits (machine, packing, the model's head dims / soft-capping /
  window) and can be had without a source build; otherwise it changes, saying why;
* packing is never turned on, and turned off only with --allow-no-packing; when nothing with a
  varlen path fits and that is not allowed, the plan says so and nothing is merged;
* a value the plan cannot judge (a hub kernel path) stays byte for byte, with a warning;
* the chosen backend fits the training; bf16 is never left on a GPU without it;
* every line that is not a changed or removed key is byte-identical, every changed key has a reason;
* merging again changes nothing; the merged keys are fields of that axolotl version's schema
  (tests/fixtures/axolotl/schema.json), with values its annotation accepts.
"""

from __future__ import annotations

import json
import re

import pytest
from ruamel.yaml import YAML

from attn_installer.axolotl import merge_edits
from attn_installer.config import merge_yaml
from attn_installer.matrix import load_matrix
from attn_installer.trainconfig import find_model, read_training_config, training_from_text
from tests.conftest import FIXTURES
from tests.machines import MACHINES, planned
from tests.unit.test_axolotl_schema import VERSIONS, accepts

TRAINING = FIXTURES / "axolotl" / "training"
CONFIGS = sorted(p.name for p in TRAINING.glob("*.yaml"))
MODELS = FIXTURES / "model-configs"
HUB = {  # base_model -> the real config.json fixture it stands for (tests/fixtures/model-configs/SOURCES.md)
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b-instruct.json",
    "Qwen/Qwen2.5-3B-Instruct": "qwen2.5-3b-instruct.json",
    "google/gemma-2-2b": "gemma-2-2b.json",
    "mistralai/Mistral-7B-v0.3": "mistral-7b-v0.3.json",
    "Qwen/Qwen3-0.6B": "qwen3-0.6b.json",
}
MACHINE_NAMES = ["a100", "h100", "h200_torch211", "colab_t4", "v100_cu126", "b200", "mi300x", "rtx4090", "cpu_only"]
AXOLOTL = [None, "0.12.0", "0.16.1", "0.18.0", "0.21.0"]
TOP_KEY = re.compile(r"^([A-Za-z_]\w*)\s*:")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A Hugging Face cache (as huggingface_hub lays it out) holding each test model's config.json."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    for i, (repo, fixture) in enumerate(HUB.items()):
        folder = root / ("models--" + repo.replace("/", "--"))
        commit = f"{i:040x}"
        (folder / "snapshots" / commit).mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
        (folder / "snapshots" / commit / "config.json").write_text((MODELS / fixture).read_text())
    return {"HF_HUB_CACHE": str(root)}


def lines_outside(text: str, touched: set[str]) -> list[str]:
    """Every line that is not the top-level line of a touched key, in order, with its line ending
    (a touched key's own line is the first of its span; continuation lines stay in the list)."""
    return [line for line in text.splitlines(keepends=True)
            if (m := TOP_KEY.match(line)) is None or m.group(1) not in touched]


def merge_case(name, machine, version, hf_cache, **opts):
    m = load_matrix()
    tc = read_training_config(TRAINING / name, m)
    model, note = find_model(tc, hf_cache)
    assert model is not None, note
    p = planned(MACHINES[machine], cache_dir="/cache", workload=tc.workload, axolotl_version=version,
                training=tc.as_training(model, **opts))
    text = (TRAINING / name).read_text()
    if p.choice is not None and p.choice.packing == "blocked":
        return tc, p, None, text, text
    edits = merge_edits(p, tc, MACHINES[machine], m, version)
    r = merge_yaml(text, edits.set, edits.remove, name=name, comments=edits.comments)
    return tc, p, edits, text, r.text


def schema_version(version, tc):
    if version is not None:
        return version
    return "0.16.1" if tc.legacy else "0.21.0"


CASES = [(c, mach, v) for c in CONFIGS for mach in MACHINE_NAMES for v in AXOLOTL]


@pytest.mark.parametrize(("name", "machine", "version"), CASES)
def test_merge_invariants(name, machine, version, hf_cache):
    m = load_matrix()
    tc, p, edits, before, after = merge_case(name, machine, version, hf_cache)
    choice = p.choice
    assert choice is not None
    if edits is None:  # packing that nothing here can do, not allowed to turn off: nothing merged
        assert tc.packing and "--allow-no-packing" in choice.packing_reason and p.recommended is None
        assert not any(p.backend(b.name).viable for b in m.backends if b.packing)
        return
    new = YAML(typ="safe").load(after)
    old = tc.data
    touched = set(edits.set) | set(edits.remove)
    # byte-identical elsewhere, a reason for every key touched, and idempotent
    assert lines_outside(after, touched) == lines_outside(before, touched)
    assert set(edits.why) >= touched
    assert all(edits.why[k] for k in touched)
    again = merge_edits(p, training_from_text(after, name, m), MACHINES[machine], m, version)
    assert merge_yaml(after, again.set, again.remove, name=name).text == after
    # packing: never turned on; off only when the plan turned it off (not here: no --allow-no-packing)
    assert bool(new.get("sample_packing")) == bool(old.get("sample_packing"))
    # a value the plan cannot judge stays byte for byte
    if tc.choice and "/" in tc.choice:
        assert not choice.judged and choice.kept
        assert f"attn_implementation: {tc.choice}\n" in after
        assert any("cannot judge it" in w for w in p.warnings)
        return
    chosen = choice.backend
    assert chosen is not None and p.backend(chosen).viable
    b = m.backend(chosen)
    if new.get("sample_packing"):
        assert b.packing, f"{chosen} has no varlen path but packing stays on"
    # the user's backend stays when it fits and needs no source build; else the reason says why
    mine = [p.backend(x.name) for x in m.backends if x.attn_implementation == tc.choice]
    usable = [bp for bp in mine if bp.viable and bp.method != "source"]
    if usable:
        assert choice.kept and chosen in {bp.name for bp in usable}, choice.reasons
        assert "which fits this machine and the training" in choice.reasons[0]
    else:
        assert not choice.kept and ("cannot run here" in choice.reasons[0] or "source build" in choice.reasons[0])
    # precision: never bf16 on a GPU without it
    gpus = MACHINES[machine].gpus
    if gpus and any(g.vendor == "nvidia" and (g.sm or 0) < 80 for g in gpus):
        assert new.get("bf16") is not True
    # the written keys exist in that axolotl version, with values it accepts
    sv = VERSIONS[schema_version(version, tc)]
    for key, value in edits.set.items():
        assert key in sv["keys"], f"{key} is not a field of axolotl {sv['version']}"
        assert accepts(sv["keys"][key]["annotation"], value), (key, value)
    legacy = {f.flag for f in m.legacy_flags}
    impl = new.get("attn_implementation")
    values = sv["attn_implementation_values"]
    if values is not None:  # 0.17+: one key; a truthy legacy boolean beside it is a ValueError
        assert not (impl and any(new.get(f) for f in legacy))
        if "attn_implementation" in edits.set:
            assert impl in values or any("does not accept attn_implementation" in w for w in p.warnings)
    else:
        assert sum(bool(new.get(f)) for f in legacy) <= 1  # "Only one of ... must be set"


def changed(name, machine, version, hf_cache, **opts):
    _, p, edits, before, after = merge_case(name, machine, version, hf_cache, **opts)
    return p, edits, after


def test_kept_choice_writes_nothing_where_the_version_reads_the_same_key(hf_cache):
    p, edits, after = changed("llama3-lora-packing.yaml", "a100", "0.21.0", hf_cache)
    assert p.choice.kept and p.recommended == "flash_attention_2"
    assert edits.set == {} and edits.remove == () and after == (TRAINING / "llama3-lora-packing.yaml").read_text()


def test_legacy_config_is_rewritten_only_for_a_version_that_reads_attn_implementation(hf_cache):
    legacy = (TRAINING / "mistral-legacy-012.yaml").read_text()
    _, edits, after = changed("mistral-legacy-012.yaml", "a100", None, hf_cache)
    assert after == legacy  # version unknown: the file's own kind of key stays
    _, edits, after = changed("mistral-legacy-012.yaml", "a100", "0.16.1", hf_cache)
    assert after == legacy
    p, edits, after = changed("mistral-legacy-012.yaml", "a100", "0.21.0", hf_cache)
    assert p.choice.kept and edits.set == {"attn_implementation": "flash_attention_2"}
    assert set(edits.remove) == {"xformers_attention", "sdp_attention", "flash_attention", "s2_attention"}
    assert "flash_attention_2: axolotl 0.21.0 selects it with attn_implementation: flash_attention_2" in \
        edits.why["attn_implementation"]
    assert "\nattn_implementation: flash_attention_2\n\nmicro_batch_size" in after
    assert after.endswith("  {% endfor %}\n# trailing comment kept as it is\n")
    # on a T4 FA2 cannot run: xformers (packs) replaces it, as a legacy boolean for 0.16
    p, edits, after = changed("mistral-legacy-012.yaml", "colab_t4", "0.16.1", hf_cache)
    assert not p.choice.kept and p.recommended == "xformers" and "needs SM >=80" in edits.why["xformers_attention"]
    assert "\nxformers_attention: true\n" in after and "flash_attention: true" not in after
    assert "\nbf16: false\n" in after and "\nfp16: true\n" in after and "sm_75" in edits.why["bf16"]


def test_gemma2_softcap_reasoning(hf_cache):
    p, edits, after = changed("gemma2-softcap.yaml", "a100", "0.21.0", hf_cache)
    assert p.recommended == "flash_attention_2" and not p.choice.kept
    why = edits.why["attn_implementation"]
    assert why.startswith("attn_implementation: sdpa selects sdpa, which cannot run here: ")
    assert "gemma2 (google/gemma-2-2b) soft-caps attention logits (attn_logit_softcapping 50); sdpa does not " \
           "apply soft-capping (transformers drops it silently)" in why
    assert "sdpa has no varlen (packed) path" in why
    assert "-attn_implementation: sdpa" not in after and "\nattn_implementation: flash_attention_2\n" in after
    # a T4: nothing that packs also soft-caps (xformers drops it, FA2 / flex need sm_80)
    _, p, edits, _, _ = merge_case("gemma2-softcap.yaml", "colab_t4", "0.21.0", hf_cache)
    assert edits is None and p.choice.packing == "blocked"
    p, edits, after = changed("gemma2-softcap.yaml", "colab_t4", "0.21.0", hf_cache, allow_no_packing=True)
    assert p.recommended == "eager" and edits.set["sample_packing"] is False
    assert "--allow-no-packing turns sample_packing off (eager runs without it)" in edits.why["sample_packing"]


def test_explicit_fa3_stays_on_hopper_with_a_prebuilt_wheel_and_moves_elsewhere(hf_cache):
    p, edits, _ = changed("qwen3-fa3.yaml", "h200_torch211", "0.21.0", hf_cache)
    assert p.choice.kept and p.backend("flash_attention_3").route == "torch_index" and edits.set == {}
    p, edits, _ = changed("qwen3-fa3.yaml", "h100", "0.21.0", hf_cache)  # torch 2.8: only a source build
    assert not p.choice.kept and "needs a source build here" in edits.why["attn_implementation"]
    p, edits, _ = changed("qwen3-fa3.yaml", "a100", "0.21.0", hf_cache)
    assert not p.choice.kept and "needs SM ==90" in edits.why["attn_implementation"]


def test_flex_kept_gets_torch_compile(hf_cache):
    p, edits, after = changed("qwen25-full.yaml", "a100", "0.21.0", hf_cache)
    assert p.choice.kept and edits.set == {"torch_compile": True}
    assert "flex_attention needs torch_compile: true" in edits.why["torch_compile"]
    assert after.endswith("output_dir: ./outputs/qwen25-3b-fft\ntorch_compile: true\n")


def test_hub_kernel_path_is_kept_with_a_warning(hf_cache):
    p, edits, after = changed("llama3-hub-kernel.yaml", "h200_torch211", "0.21.0", hf_cache)
    assert p.choice.kept and not p.choice.judged and "attn_implementation" not in edits.set
    assert after == (TRAINING / "llama3-hub-kernel.yaml").read_text()
    assert any("kernels-community/flash-attn3@v1: a hub kernel path; attn-install cannot judge it" in w
               for w in p.warnings)
    p, edits, after = changed("llama3-hub-kernel.yaml", "h200_torch211", "0.21.0", hf_cache,
                              prefer_recommended=True)
    assert edits.set == {"attn_implementation": "flash_attention_3"}


def test_every_config_is_planned_from_its_model(hf_cache):
    m = load_matrix()
    seen = {}
    for name in CONFIGS:
        tc = read_training_config(TRAINING / name, m)
        model, _ = find_model(tc, hf_cache)
        seen[name] = (tc.workload, tc.packing, model.head_dim, model.softcap, tc.choice)
    assert seen["gemma2-softcap.yaml"] == ("lora", True, 256, 50.0, "sdpa")
    assert seen["qwen25-full.yaml"] == ("full", False, 128, None, "flex_attention")
    assert seen["mistral-legacy-012.yaml"] == ("full", True, 128, None, "flash_attention_2")
    assert json.dumps(seen)  # plain values


def test_auto_fallback_merges_the_backend_installed_not_the_one_planned(hf_cache):
    """--auto could not install the plan's choice by any route and installed the next backend:
    the merge writes what was installed, and says so."""
    from dataclasses import replace

    from attn_installer.axolotl import make_config

    m = load_matrix()
    tc = read_training_config(TRAINING / "qwen3-fa3.yaml", m)
    model, _ = find_model(tc, hf_cache)
    p = planned(MACHINES["a100"], cache_dir="/cache", workload=tc.workload, axolotl_version="0.21.0",
                training=tc.as_training(model))
    assert p.recommended == "flash_attention_2" and p.choice.backend == "flash_attention_2"
    config, _, _ = make_config(m.backend("flex_attention"), MACHINES["a100"], m, "lora", "0.21.0")
    installed = replace(p, recommended="flex_attention", config=config)  # what install.run._recommend makes
    edits = merge_edits(installed, tc, MACHINES["a100"], m, "0.21.0")
    assert edits.set["attn_implementation"] == "flex_attention"
    assert edits.why["attn_implementation"].startswith("flex_attention is the backend installed (flash_attention_2, "
                                                       "the plan's choice, could not be installed by any route)")
