"""The facts JSON round trip and every kind of bad --facts file."""

from __future__ import annotations

import json

import pytest

from attn_installer.errors import FactsError
from attn_installer.facts import Facts, load_facts
from tests.conftest import FIXTURES, validate
from tests.machines import MACHINES


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_round_trip_and_contract(name):
    d = MACHINES[name].to_dict()
    validate(d, "facts.schema.json")
    assert Facts.from_dict(json.loads(json.dumps(d))).to_dict() == d


def test_hub_reach_round_trips_and_bad_endpoints_are_named(tmp_path):
    from dataclasses import replace

    from attn_installer.facts import HubReach

    f = replace(MACHINES["h200_torch211"], hub=HubReach("https://huggingface.co", False, "HF_HUB_OFFLINE is set"))
    d = f.to_dict()
    validate(d, "facts.schema.json")
    assert Facts.from_dict(json.loads(json.dumps(d))) == f
    d["hub"]["endpoint"] = "file:///etc/passwd"
    with pytest.raises(FactsError, match=r"hub.endpoint.*not an http\(s\) URL"):
        Facts.from_dict(d)


def test_recorded_h200_probe_matches_contract():
    data = json.loads((FIXTURES / "nvidia/h200-device/probe.json").read_text())
    validate(data, "facts.schema.json")
    f = Facts.from_dict(data)
    assert f.gpus[0].arch == "sm_90" and f.torch.cxx11abi is True


def _write(tmp_path, data):
    p = tmp_path / "facts.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def good():
    return MACHINES["a100"].to_dict()


def mutate(path, value):
    d = good()
    cur = d
    for key in path[:-1]:
        cur = cur[key]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


@pytest.mark.parametrize(("data", "message"), [
    ("", "the file is empty"),
    ("{not json", "not valid JSON (line 1, column 2"),
    ("[]", "field '(top level)': expected an object"),
    (mutate(["schema_version"], 2), "field 'schema_version': 2 is newer than this attn-install understands"),
    (mutate(["host"], KeyError), "field 'host': missing"),
    (mutate(["host", "cpu_count"], "16"), "field 'host.cpu_count': expected an integer, got a string"),
    (mutate(["host", "memory_gb"], 0), "field 'host.memory_gb': must be above 0"),
    (mutate(["host", "os"], "freebsd"), "field 'host.os': 'freebsd' is not one of"),
    (mutate(["gpus", 0, "arch"], "ampere"), "field 'gpus[0].arch': unknown arch 'ampere'"),
    (mutate(["gpus", 0, "vendor"], "intel"), "field 'gpus[0].vendor': 'intel' is not nvidia or amd"),
    (mutate(["torch", "version"], "two.eight"), "field 'torch.version': 'two.eight' is not a version"),
    (mutate(["driver", "version"], 550), "field 'driver.version': expected a string, got an integer"),
    (mutate(["torch", "cxx11abi"], KeyError), "field 'torch.cxx11abi': missing"),
    (mutate(["packages"], {"xformers": "latest"}), "field 'packages.xformers': 'latest' is not a version"),
])
def test_bad_facts_files(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(FactsError) as e:
        load_facts(path)
    assert str(e.value).startswith(str(path))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FactsError, match="no such file"):
        load_facts(tmp_path / "nope.json")
