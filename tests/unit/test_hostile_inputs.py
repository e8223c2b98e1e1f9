"""A table of hostile inputs for every reader: facts files (`plan --facts`), matrix files
(ATTN_INSTALL_MATRIX_DIR), axolotl YAML (`verify --axolotl-config`), Hugging Face config.json
(`bench --model-config`) and the plan options. Each must end in one line on stderr naming what is
wrong and the expected non-zero exit (or be accepted, where it is data the reader takes), quickly:
never a traceback, an internal error (70), a hang or a memory blow-up.

Run in-process through the real command line (attn_installer.cli.main); none of these commands
gets as far as spawning a process."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from attn_installer.cli import main
from tests.conftest import FIXTURES, REPO

GOOD_FACTS = json.loads((FIXTURES / "nvidia/h200-device/probe.json").read_text())


def facts_with(change: Callable[[dict], None]) -> bytes:
    d = json.loads(json.dumps(GOOD_FACTS))
    change(d)
    return json.dumps(d).encode()


def _set(path: str, value) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        *head, last = path.split(".")
        for k in head:
            d = d[int(k)] if k.isdigit() else d[k]
        d[int(last) if last.isdigit() else last] = value

    return change


DEEP = b"[" * 100_000 + b"]" * 100_000
FACTS: list[tuple[str, object, str]] = [
    # (case, content: bytes, "missing", "dir", "fifo", "devzero"; what the error says)
    ("missing file", "missing", "no such file"),
    ("a directory", "dir", "is a directory"),
    ("a FIFO (would block a plain read)", "fifo", "is not a regular file"),
    ("a link to /dev/zero (endless)", "devzero", "is not a regular file"),
    ("2 MB", b" " * (2 << 20), "at most 1048576 are read"),
    ("empty", b"", "the file is empty"),
    ("UTF-16 with BOM (PowerShell >)", "\ufeff{}".encode("utf-16-le"), "is UTF-16 (PowerShell"),
    ("UTF-16 big-endian BOM", b"\xfe\xff\x00{\x00}", "is UTF-16"),
    ("Latin-1 bytes", b'{"a": "caf\xe9"}', "is not UTF-8 (byte 10)"),
    ("not JSON", b"{schema_version: 1}", "not valid JSON (line 1"),
    ("a JSON list", b"[1, 2]", "field '(top level)': expected an object"),
    ("nested 100000 deep", DEEP, "nests 100000 levels deep"),
    ("NaN memory", facts_with(_set("host.memory_gb", "NaNX")).replace(b'"NaNX"', b"NaN"), "holds NaN"),
    ("Infinity memory", facts_with(_set("host.memory_gb", "InfX")).replace(b'"InfX"', b"Infinity"),
     "holds Infinity"),
    ("-Infinity", facts_with(_set("host.memory_gb", "InfX")).replace(b'"InfX"', b"-Infinity"), "holds -Infinity"),
    ("1e400 (overflows to inf)", facts_with(_set("host.memory_gb", "X")).replace(b'"X"', b"1e400"),
     "field 'host.memory_gb': inf is out of range"),
    ("an integer of 5000 digits", facts_with(_set("host.cpu_count", "X")).replace(b'"X"', b"9" * 5000),
     "holds a number that cannot be read"),
    ("2**80 CPUs", facts_with(_set("host.cpu_count", 2**80)), "field 'host.cpu_count': 1208925819614629174706176 "
                                                               "is out of range"),
    ("0 CPUs", facts_with(_set("host.cpu_count", 0)), "field 'host.cpu_count': must be at least 1"),
    ("true as CPUs", facts_with(_set("host.cpu_count", True)), "expected an integer, got a boolean"),
    ("negative GPU memory", facts_with(_set("gpus.0.memory_gb", -1)), "field 'gpus[0].memory_gb': must be at least 0"),
    ("gpus as an object", facts_with(_set("gpus", {})), "field 'gpus': expected a list"),
    ("5000 GPUs", facts_with(lambda d: d.__setitem__("gpus", d["gpus"] * 5000)), "5000 entries; at most 4096"),
    ("glibc 2.99999999 (millions of platform tags)", facts_with(_set("host.glibc", "2.99999999")),
     "is not a glibc version"),
    ("glibc 3.1", facts_with(_set("host.glibc", "3.1")), "is not a glibc version"),
    ("an arch that is not one", facts_with(_set("gpus.0.arch", "sm_90; rm -rf ~")), "unknown arch"),
    ("a package name with shell characters", facts_with(lambda d: d["packages"].__setitem__("x; rm -rf ~", "1.0")),
     "is not a distribution name"),
    ("a version that is not one", facts_with(_set("torch.version", "2.8.0$(id)")), "is not a version"),
    ("a 100000-character GPU name", facts_with(_set("gpus.0.name", "A" * 100_000)), "at most 4096 are read"),
    ("schema version 2", facts_with(_set("schema_version", 2)), "is newer than this attn-install understands"),
    ("a hub endpoint that is not http(s)", facts_with(_set("hub", {"endpoint": "file:///etc", "reachable": True})),
     "is not an http(s) URL"),
]


def _matrix(tmp_path: Path, name: str, edit: Callable[[str], str] | None = None, raw: bytes | None = None,
            special: str | None = None) -> Path:
    d = tmp_path / "matrices"
    if not d.exists():
        shutil.copytree(REPO / "matrices", d)
    p = d / name
    if special == "devzero":
        p.unlink()
        p.symlink_to("/dev/zero")
    elif special == "fifo":
        p.unlink()
        os.mkfifo(p)
    elif special == "missing":
        p.unlink()
    elif raw is not None:
        p.write_bytes(raw)
    elif edit is not None:
        p.write_text(edit(p.read_text()))
    return d


def _first(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


URL = 'url = "https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/'
MATRIX: list[tuple[str, str, dict, str]] = [
    ("backends.toml not UTF-8", "backends.toml", {"raw": b'name = "caf\xe9"\n'}, "is not UTF-8"),
    ("routes.toml UTF-16", "routes.toml", {"raw": "\ufeffa = 1".encode("utf-16-le")}, "is UTF-16"),
    ("gpus.toml 2 MB", "gpus.toml", {"raw": b"#" * (2 << 20)}, "at most 1048576 are read"),
    ("a link to /dev/zero", "ranking.toml", {"special": "devzero"}, "is not a regular file"),
    ("a FIFO", "hints.toml", {"special": "fifo"}, "is not a regular file"),
    ("a file missing", "axolotl.toml", {"special": "missing"}, "no such file"),
    ("not TOML", "torch.toml", {"raw": b"[[torch_build\n"}, "not valid TOML"),
    ("inline tables 5000 deep", "sources.toml", {"raw": b"a = " + b"{b = " * 5000 + b"1" + b"}" * 5000},
     "nests too deeply to read"),
    ("an unbalanced { in the release URL", "flash_attn_wheels.toml", {"edit": _first(URL, URL.replace("{version}/",
                                                                                                   "{version/"))},
     "top-level 'url': not a valid template"),
    ("an unknown placeholder", "flash_attn_wheels.toml", {"edit": _first("v{version}/", "v{verison}/")},
     "unknown placeholder {verison}"),
    ("a conversion in a placeholder", "routes.toml", {"edit": _first("{tag}/{file}", "{tag!r}/{file}")},
     "placeholder {tag} has a conversion or format spec"),
    ("an attribute lookup in a placeholder", "torch.toml", {"edit": _first("{flavour}", "{flavour.__class__}")},
     "unknown placeholder {flavour.__class__}"),
    ("a URL template that is not http(s)", "torch.toml", {"edit": _first("https://download.pytorch.org/whl/",
                                                                          "file:///etc/")},
     "is not an http(s) URL template"),
    ("an unknown placeholder in a farm file name", "routes.toml", {"edit": _first("{machine}.whl", "{arch}.whl")},
     "unknown placeholder {arch}"),
    ("nan minutes", "routes.toml", {"edit": _first("minutes = 1.0", "minutes = nan")}, "nan is not a usable number"),
    ("inf minutes", "routes.toml", {"edit": _first("minutes = 1.0", "minutes = inf")}, "inf is not a usable number"),
    ("a 20-digit compile unit count", "sources.toml", {"edit": _first("compile_units = 293",
                                                                      "compile_units = 99999999999999999999")},
     "99999999999999999999 is out of range"),
    ("a string where a number goes", "routes.toml", {"edit": _first("minutes = 1.0", 'minutes = "1"')},
     "expected a number, got str"),
]

YAML_CASES: list[tuple[str, object, str]] = [
    ("not UTF-8", b"base_model: caf\xe9\n", "is not UTF-8"),
    ("UTF-16", "\ufeffbase_model: x\n".encode("utf-16-le"), "is UTF-16"),
    ("2 MB", b"#" * (2 << 20), "at most 1048576 are read"),
    ("a FIFO", "fifo", "is not a regular file"),
    ("a link to /dev/zero", "devzero", "is not a regular file"),
    ("flow nesting 100000 deep", b"a: " + b"[" * 100_000 + b"]" * 100_000, "nests 100000 levels deep"),
    ("block nesting 1200 deep", "".join(" " * i + f"k{i}:\n" for i in range(1200)).encode(),
     "nests too deeply to read"),
    ("a python object tag", b"base_model: !!python/object/apply:os.system ['id']\n", "not valid YAML"),
    ("a tab indent", b"a:\n\t- b\n", "axolotl.yaml:2:1: not valid YAML"),
    ("a list, not a mapping", b"- a\n- b\n", "the top level is not a mapping"),
]

MODEL_CASES: list[tuple[str, object, str]] = [
    ("not UTF-8", b'{"model_type": "caf\xe9"}', "is not UTF-8"),
    ("UTF-16", '\ufeff{"num_attention_heads": 32}'.encode("utf-16-le"), "is UTF-16"),
    ("17 MB", b" " * (17 << 20), "at most 16777216 are read"),
    ("a FIFO", "fifo", "is not a regular file"),
    ("a link to /dev/zero", "devzero", "is not a regular file"),
    ("nested 100000 deep", DEEP, "nests 100000 levels deep"),
    ("NaN hidden size", b'{"num_attention_heads": 32, "hidden_size": NaN}', "holds NaN"),
    ("Infinity heads", b'{"num_attention_heads": Infinity}', "holds Infinity"),
    ("10**30 head dim", b'{"num_attention_heads": 32, "head_dim": 1000000000000000000000000000000}',
     "field 'head_dim': 1000000000000000000000000000000 is out of range"),
    ("an integer of 5000 digits", b'{"num_attention_heads": ' + b"9" * 5000 + b"}",
     "holds a number that cannot be read"),
    ("32.5 heads", b'{"num_attention_heads": 32.5, "hidden_size": 4096}', "32.5 is not a positive integer"),
    ("-8 heads", b'{"num_attention_heads": -8, "hidden_size": 4096}', "-8 is not a positive integer"),
    ("a list", b"[1]", "not a JSON object"),
]

OPTIONS: list[tuple[str, list[str], str]] = [
    ("--head-dim 0", ["--head-dim", "0"], "--head-dim 0: head dims from 8 to 256"),
    ("--head-dim 100000", ["--head-dim", "100000"], "--head-dim 100000: head dims from 8 to 256"),
    ("--target-arch with shell characters", ["--target-arch", "sm_90;id"], "is not an arch like sm_90"),
    ("--axolotl-version that is not one", ["--axolotl-version", "0.8$(id)"], "is not a version"),
    ("--pytorch-index with an unknown placeholder", ["--pytorch-index", "http://127.0.0.1/whl/{flavor}"],
     "unknown placeholder {flavor}"),
    ("--pytorch-index that is not http(s)", ["--pytorch-index", "file:///etc/{flavour}"], "is not an http(s) URL"),
]


def _place(tmp_path: Path, content: object, name: str) -> Path:
    p = tmp_path / name
    if content == "missing":
        return p
    if content == "dir":
        p.mkdir()
    elif content == "fifo":
        os.mkfifo(p)
    elif content == "devzero":
        p.symlink_to("/dev/zero")
    else:
        assert isinstance(content, bytes)
        p.write_bytes(content)
    return p


def _cli(capsys, monkeypatch, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    code, _out, err = _run(capsys, monkeypatch, args, env)
    return code, err


def _run(capsys, monkeypatch, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ATTN_INSTALL_NO_NVML", "1")
    start = time.monotonic()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert time.monotonic() - start < 20, "took too long"
    got = capsys.readouterr()
    return int(e.value.code or 0), got.out, got.err


def _one_line(err: str, code: int, want_code: int, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == want_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("attn-install: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize(("case", "content", "needle"), FACTS, ids=[c[0] for c in FACTS])
def test_facts_file(tmp_path, capsys, monkeypatch, case, content, needle):
    path = _place(tmp_path, content, "facts.json")
    code, err = _cli(capsys, monkeypatch, ["plan", "--facts", str(path)])
    _one_line(err, code, 5, needle)
    assert str(path) in err


@pytest.mark.parametrize(("case", "name", "how", "needle"), MATRIX, ids=[c[0] for c in MATRIX])
def test_matrix_file(tmp_path, capsys, monkeypatch, case, name, how, needle):
    d = _matrix(tmp_path, name, **how)
    facts = _place(tmp_path, json.dumps(GOOD_FACTS).encode(), "facts.json")
    code, err = _cli(capsys, monkeypatch, ["plan", "--facts", str(facts)], {"ATTN_INSTALL_MATRIX_DIR": str(d)})
    assert code == 4, err
    assert "Traceback" not in err and "internal error" not in err
    assert err.startswith("attn-install: error: ") and "problem" in err and needle in err, err
    assert str(d / name) in err  # every bad row is one line naming file (and line)
    assert all(ln.startswith(("attn-install: error:", "  ")) for ln in err.splitlines() if ln.strip())


@pytest.mark.parametrize(("case", "content", "needle"), YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_axolotl_yaml(tmp_path, capsys, monkeypatch, case, content, needle):
    path = _place(tmp_path, content, "axolotl.yaml")
    code, err = _cli(capsys, monkeypatch, ["verify", "--axolotl-config", str(path)])
    _one_line(err, code, 10, needle)  # the user's training config: ConfigError
    assert str(path) in err


@pytest.mark.parametrize(("case", "content", "needle"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_model_config(tmp_path, capsys, monkeypatch, case, content, needle):
    path = _place(tmp_path, content, "config.json")
    code, err = _cli(capsys, monkeypatch, ["bench", "--model-config", str(path)])
    _one_line(err, code, 2, needle)
    assert str(path) in err


@pytest.mark.parametrize(("case", "args", "needle"), OPTIONS, ids=[c[0] for c in OPTIONS])
def test_plan_option(tmp_path, capsys, monkeypatch, case, args, needle):
    facts = _place(tmp_path, json.dumps(GOOD_FACTS).encode(), "facts.json")
    code, err = _cli(capsys, monkeypatch, ["plan", "--facts", str(facts), *args])
    _one_line(err, code, 2, needle)


ACCEPTED = [
    ("UTF-8 with a BOM", b"\xef\xbb\xbf" + json.dumps(GOOD_FACTS).encode()),
    ("control characters in a GPU name (printed escaped)", facts_with(_set("gpus.0.name", "H200\x1b[2J\r\nx"))),
]


@pytest.mark.parametrize(("case", "content"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_facts_the_reader_takes(tmp_path, capsys, monkeypatch, case, content):
    path = _place(tmp_path, content, "facts.json")
    code, out, err = _run(capsys, monkeypatch, ["plan", "--facts", str(path), "-v"])
    assert code == 0, err
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out + err)


def test_head_dim_100_keeps_the_kernel_that_runs_it(tmp_path, capsys, monkeypatch):
    """--head-dim 100 runs on FA3's 128 kernel: that one is built, not every head dim disabled."""
    facts = _place(tmp_path, json.dumps(GOOD_FACTS).encode(), "facts.json")
    code, out, err = _run(capsys, monkeypatch, ["plan", "--facts", str(facts), "--json", "--allow-source",
                                                "--backend", "flash_attention_3", "--route", "source",
                                                "--head-dim", "100"])
    assert code == 0, err
    plan = json.loads(out)
    fa3 = next(b for b in plan["backends"] if b["name"] == "flash_attention_3")
    env = next(s for s in fa3["steps"] if s["kind"] == "build")["env"]
    assert "FLASH_ATTENTION_DISABLE_HDIM128" not in env
    assert {"FLASH_ATTENTION_DISABLE_HDIM64", "FLASH_ATTENTION_DISABLE_HDIM96", "FLASH_ATTENTION_DISABLE_HDIM192",
            "FLASH_ATTENTION_DISABLE_HDIM256"} <= set(env)


TABLE_SIZE = len(FACTS) + len(MATRIX) + len(YAML_CASES) + len(MODEL_CASES) + len(OPTIONS) + len(ACCEPTED) + 1
