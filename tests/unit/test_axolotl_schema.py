"""The keys and values attn-install writes are ones axolotl's config schema accepts, per version.

tests/fixtures/axolotl/schema.json is read from axolotl's source (git tags and PyPI sdists) by
extract_schema.py beside it: each key's annotation in src/axolotl/utils/schemas/config.py and
CANONICAL_ATTN_IMPLS in enums.py, with the tag, commit or sdist hash they came from.
"""

from __future__ import annotations

import ast
import json

import pytest
from packaging.version import Version

from attn_installer.matrix import load_matrix
from tests.conftest import FIXTURES
from tests.machines import MACHINES, planned

SCHEMA = json.loads((FIXTURES / "axolotl/schema.json").read_text())
VERSIONS = {v["version"]: v for v in SCHEMA["versions"]}
MACHINE_NAMES = ["a100", "h100", "h200_torch211", "rtx4090", "b200", "colab_t4", "mi300x", "rx7900xtx"]


def accepts(annotation: str, value: object) -> bool:
    """Whether a value fits an annotation like ``Literal['auto'] | bool | None``."""
    for part in (p.strip() for p in annotation.split("|")):
        if part.startswith("Literal["):
            literals = ast.literal_eval(f"({part[len('Literal['):-1]},)")
            if any(type(value) is type(v) and value == v for v in literals):
                return True
        elif part in ("bool", "str", "None"):
            if type(value).__name__ == ("NoneType" if part == "None" else part):
                return True
        else:
            raise AssertionError(f"annotation part {part!r} is not understood by this test")
    return False


def configs(version: str):
    """(machine, backend, workload, plan) for every backend each machine can take."""
    matrix = load_matrix()
    for machine in MACHINE_NAMES:
        for backend in matrix.backend_names:
            for workload in ("full", "lora"):
                p = planned(MACHINES[machine], cache_dir="/cache", backend=backend, workload=workload,
                            allow_source=True, axolotl_version=version)
                if p.recommended is not None:
                    yield machine, backend, workload, p


def test_fixture_records_where_each_version_came_from():
    assert len(VERSIONS) >= 10
    for v in SCHEMA["versions"]:
        assert v["file"] == "src/axolotl/utils/schemas/config.py"
        assert ("tag" in v and len(v["commit"]) == 40) or len(v["sha256"]) == 64, v["version"]


@pytest.mark.parametrize("version", list(VERSIONS))
def test_written_keys_and_values_are_in_that_versions_schema(version):
    schema = VERSIONS[version]
    keys, values = schema["keys"], schema["attn_implementation_values"]
    legacy = {f.flag for f in load_matrix().legacy_flags}
    seen = set()
    for machine, backend, workload, p in configs(version):
        where = f"axolotl {version}, {machine}, {backend}, {workload}: {p.config}"
        for key, value in p.config.items():
            assert key in keys, f"{where}: {key} is not a field"
            assert accepts(keys[key]["annotation"], value), f"{where}: {key}={value!r} vs {keys[key]}"
        impl = p.config.get("attn_implementation")
        if values is not None and impl is not None and impl not in values:
            assert any("does not accept attn_implementation" in w for w in p.warnings), where
        if values is not None:  # 0.17+: a truthy boolean beside attn_implementation is a ValueError
            assert not (impl and any(p.config.get(f) for f in legacy)), where
        seen.add(impl or next(k for k in p.config if k in legacy or k == "bf16"))
    assert len(seen) >= 4, seen


def test_matrix_attn_implementation_values_match_the_source():
    rows = load_matrix().attn_impl_values
    for version, schema in VERSIONS.items():
        row = next((r for r in rows if r.axolotl.contains(Version(version))), None)
        if schema["attn_implementation_values"] is None:
            assert row is None, version
        else:
            assert row is not None and sorted(row.values) == schema["attn_implementation_values"], version


def test_matrix_legacy_flags_exist_where_the_matrix_says():
    m = load_matrix()
    for flag in (*m.legacy_flags, *m.retired_flags):
        for version, schema in VERSIONS.items():
            if flag.axolotl.contains(Version(version)):
                assert flag.flag in schema["keys"], f"{flag.flag} @ {version}"
    # and each boolean appears exactly from the version the matrix names
    assert "flex_attention" not in VERSIONS["0.8.0"]["keys"] and "flex_attention" in VERSIONS["0.8.1"]["keys"]
    assert "sage_attention" not in VERSIONS["0.14.0"]["keys"] and "sage_attention" in VERSIONS["0.15.0"]["keys"]
    assert "attn_implementation" not in VERSIONS["0.10.0"]["keys"]
    assert "attn_implementation" in VERSIONS["0.12.0"]["keys"]


def test_validates_with_axolotls_own_model_when_installed():
    pytest.importorskip("axolotl")
    from importlib.metadata import version

    from axolotl.utils.schemas.config import AxolotlInputConfig

    ver = version("axolotl")
    base = {"base_model": "HuggingFaceTB/SmolLM2-135M", "datasets": [{"path": "mhenrichsen/alpaca_2k_test",
            "type": "alpaca"}], "micro_batch_size": 1, "gradient_accumulation_steps": 1,
            "num_epochs": 1, "learning_rate": 1e-4, "sequence_len": 1024, "output_dir": "./out"}
    for _, _, _, p in configs(ver):
        if not any(w.startswith("axolotl ") for w in p.warnings):  # no key for this backend there
            AxolotlInputConfig.model_validate({**base, **p.config})
