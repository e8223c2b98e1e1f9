"""`config --merge`: only the attention / precision lines of a real-looking axolotl config change."""

from __future__ import annotations

import re
import stat
import subprocess
import sys

import pytest

from attn_installer.config import conflicting_keys, merge_yaml
from attn_installer.configfile import merge_file
from attn_installer.errors import ConfigError
from attn_installer.matrix import load_matrix
from tests.conftest import FIXTURES, REPO
from tests.machines import MACHINES, planned

AXOLOTL = FIXTURES / "axolotl"
CONFIGS = sorted(p.name for p in AXOLOTL.glob("*.yaml"))
TOP_KEY = re.compile(r"^([A-Za-z_]\w*)\s*:")


def recommended(machine: str, **kw):
    p = planned(MACHINES[machine], cache_dir="/cache", **kw)
    assert p.recommended is not None
    return p.config, conflicting_keys(p.config, load_matrix().attention_keys), p.config_comments


def untouched(text: str, touched: set[str]) -> list[str]:
    """Every line that is not a top-level line of a touched key, in order, with its line ending."""
    return [line for line in text.splitlines(keepends=True)
            if (m := TOP_KEY.match(line)) is None or m.group(1) not in touched]


def assert_only_keys_changed(before: str, after: str, changed, removed) -> None:
    touched = set(changed) | set(removed)
    assert untouched(after, touched) == untouched(before, touched)
    for key in removed:
        assert not re.search(rf"^{key}\s*:", after, re.M), key


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("machine", "kw"), [
    ("a100", {"axolotl_version": "0.21.0"}),
    ("a100", {"axolotl_version": "0.16.1"}),
    ("colab_t4", {"axolotl_version": "0.18.0"}),
    ("colab_t4", {"axolotl_version": "0.10.0"}),
    ("h100", {"backend": "flex_attention", "axolotl_version": "0.8.1"}),
    ("h200_torch211", {}),
])
def test_merge_changes_only_the_recommended_keys(name, machine, kw):
    before = (AXOLOTL / name).read_text()
    config, remove, comments = recommended(machine, **kw)
    r = merge_yaml(before, config, remove, name=name, comments=comments)
    assert_only_keys_changed(before, r.text, r.changed, r.removed)
    again = merge_yaml(r.text, config, remove, name=name, comments=comments)
    assert again.text == r.text and again.changed == () and again.removed == ()


def test_new_axolotl_replaces_legacy_booleans_where_they_stood():
    before = (AXOLOTL / "llama3-lora.yaml").read_text()
    config, remove, _ = recommended("a100", axolotl_version="0.21.0")
    assert config["attn_implementation"] == "flash_attention_2"
    r = merge_yaml(before, config, remove)
    assert r.removed == ("flash_attention", "xformers_attention", "s2_attention")
    assert "attn_implementation: flash_attention_2\ns2_attention" not in r.text
    # the new key takes the first removed key's line; bf16 keeps its end-of-line comment
    assert "logging_steps: 1\nattn_implementation: flash_attention_2\n\nwarmup_steps: 10\n" in r.text
    assert "bf16: true   # let axolotl decide from the GPU\nfp16: false\n" in r.text
    assert "load_in_8bit: True\n" in r.text  # ruamel's dump would have written `true`
    assert "  - path: mhenrichsen/alpaca_2k_test\n" in r.text  # and re-indented the sequence


def test_old_axolotl_replaces_attn_implementation_with_the_boolean():
    before = (AXOLOTL / "qwen2-full.yaml").read_text()
    config, remove, _ = recommended("a100", axolotl_version="0.10.0")
    assert config["flash_attention"] is True and "attn_implementation" not in config
    r = merge_yaml(before, config, remove)
    assert r.removed == ("attn_implementation",)
    assert "# the attention backend is picked per machine\nflash_attention: true\n" in r.text
    assert "attn_implementation" not in r.text
    assert "sample_packing: true\npad_to_sequence_len: true\n" in r.text  # FA2 packs


def test_legacy_to_legacy_switch_drops_the_other_booleans():
    before = (AXOLOTL / "mistral-qlora-packing.yaml").read_text()
    config, remove, _ = recommended("a100", axolotl_version="0.16.1")
    r = merge_yaml(before, config, remove)
    assert "\nflash_attention: true\n" in r.text
    assert set(r.removed) == {"xformers_attention", "sdp_attention"}
    assert "chat_template_jinja: |\n  {% for message in messages %}\n" in r.text
    assert r.text.endswith("# leftover from the last run:\n# flash_attn_cross_entropy: true\n")


def test_no_attention_key_written_keeps_the_users_choice():
    assert conflicting_keys({"bf16": True}, load_matrix().attention_keys) == ()


def test_new_keys_go_at_the_end_and_comments_above_them():
    r = merge_yaml("base_model: x  # m\nlr: 1", {"attn_implementation": "sage", "pad_to_sequence_len": True},
                   load_matrix().attention_keys[1:], comments=["LoRA only"])
    assert r.text == "base_model: x  # m\nlr: 1\n# LoRA only\nattn_implementation: sage\npad_to_sequence_len: true\n"


def test_crlf_and_empty_files():
    r = merge_yaml("a: 1\r\nflash_attention: true\r\n", {"attn_implementation": "sdpa"}, ["flash_attention"])
    assert r.text == "a: 1\r\nattn_implementation: sdpa\r\n"
    assert merge_yaml("# nothing yet\n", {"bf16": True}, []).text == "# nothing yet\nbf16: true\n"


def test_merge_file_backup_diff_and_mode(tmp_path):
    cfg = tmp_path / "lora.yaml"
    original = (AXOLOTL / "llama3-lora.yaml").read_bytes()
    cfg.write_bytes(original)
    cfg.chmod(0o640)
    config, remove, _ = recommended("h200_torch211")
    out = merge_file(cfg, config, remove)
    assert out.backup == tmp_path / "lora.yaml.bak" and out.backup.read_bytes() == original
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    assert out.diff.startswith(f"--- {out.backup}\n+++ {cfg}\n@@")
    assert "-flash_attention: true  # FA2 wheel from the image\n" in out.diff
    assert "+attn_implementation: flash_attention_3\n" in out.diff  # the prebuilt FA3 wheel
    assert cfg.read_text() == out.result.text
    # nothing to do: no write, no second backup
    assert merge_file(cfg, config, remove).backup is None and not (tmp_path / "lora.yaml.bak.1").exists()
    # an older backup is never replaced
    second = merge_file(cfg, {"attn_implementation": "eager"}, remove)
    assert second.backup == tmp_path / "lora.yaml.bak.1" and out.backup.read_bytes() == original


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("base_model: x\nlr: 1\nlr: 2\n", "3:1", 'found duplicate key "lr"'),
    ("base_model: x\ndatasets: [a, b\nlr: 1\n", "3:3",
     "expected ',' or ']', but got ':' (while parsing a flow sequence at line 2)"),
    ("base_model: x\nlora: r: 8\n", "2:8", "mapping values are not allowed here"),
    ("base_model: x\n\tlr: 1\n", "2:1", "found character '\\t' that cannot start any token"),
    ("a: 1\n---\nb: 2\n", "2:1", "but found another document"),
    ("- a\n- b\n", "1:1", "the top level is not a mapping"),
])
def test_bad_yaml_names_file_line_col_and_leaves_it_alone(tmp_path, text, where, problem):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        merge_file(cfg, {"attn_implementation": "sdpa"}, ["flash_attention"])
    msg = str(e.value)
    assert msg.startswith(f"{cfg}:{where}: ") and problem in msg and "\n" not in msg
    assert cfg.read_text() == text and sorted(tmp_path.iterdir()) == [cfg]


def test_merge_key_that_yaml_anchors_hide_is_refused():
    text = "base: &b\n  x: 1\nflash_attention: true\nother:\n  <<: *b\n"
    assert merge_yaml(text, {"attn_implementation": "sdpa"}, ["flash_attention"]).removed == ("flash_attention",)
    with pytest.raises(ConfigError, match="cannot merge"):
        merge_yaml("d: &d {flash_attention: true}\n<<: *d\n", {"attn_implementation": "sdpa"},
                   ["flash_attention"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read \(no such file\); the file was not changed$"):
        merge_file(tmp_path / "nope.yaml", {"bf16": True}, [])


# --------------------------------------------------------------------------- through the CLI


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "attn_installer", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin",
                                                                   "PYTHONPATH": str(REPO)})


def test_cli_merge(tmp_path, allow_subprocess):
    facts = tmp_path / "facts.json"
    facts.write_text(MACHINES["a100"].to_json())
    cfg = tmp_path / "qwen.yaml"
    original = (AXOLOTL / "qwen2-full.yaml").read_bytes()
    cfg.write_bytes(original)
    # the config's own sdpa fits this A100: it stays, and nothing is written
    r = run_cli("config", "--facts", str(facts), "--merge", str(cfg), "--axolotl-version", "0.18.0",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("kept: attn_implementation: sdpa selects sdpa, which fits this machine")
    assert r.stdout.rstrip().endswith("nothing to change")
    assert cfg.read_bytes() == original and not (tmp_path / "qwen.yaml.bak").exists()
    # --prefer-recommended writes the plan's choice, names each key and why
    r = run_cli("config", "--facts", str(facts), "--merge", str(cfg), "--axolotl-version", "0.18.0",
                "--prefer-recommended", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "-attn_implementation: sdpa\n+attn_implementation: flash_attention_2\n" in r.stdout
    assert ("  attn_implementation: sdpa -> flash_attention_2: --prefer-recommended: flash_attention_2 (the plan's "
            "choice) replaces attn_implementation: sdpa\n") in r.stdout
    assert "sample_packing" not in r.stdout  # packing stays as the user has it (off)
    assert r.stdout.rstrip().endswith(f"the original is in {cfg}.bak")
    r = run_cli("config", "--facts", str(facts), "--merge", str(cfg), "--axolotl-version", "0.18.0",
                "--prefer-recommended", cwd=tmp_path)
    assert r.returncode == 0 and "nothing to change" in r.stdout
    assert not (tmp_path / "qwen.yaml.bak.1").exists()


def test_cli_merge_errors(tmp_path, allow_subprocess):
    facts = tmp_path / "facts.json"
    facts.write_text(MACHINES["a100"].to_json())
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: x\nlora_r: 8\n  lora_alpha: 16\n")
    r = run_cli("config", "--facts", str(facts), "--merge", str(bad), cwd=tmp_path)
    assert r.returncode == 10
    assert r.stderr == f"attn-install: error: {bad}:3:13: not valid YAML: mapping values are not allowed here; " \
                       "the file was not changed\n"
    assert bad.read_text() == "base_model: x\nlora_r: 8\n  lora_alpha: 16\n" and r.stdout == ""
    r = run_cli("config", "--facts", str(facts), "--merge", str(bad), "-o", "x.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "drop --output" in r.stderr
