"""The JSON contracts live in schemas/ (shipped in the wheel) and are the shared ones, unchanged."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, SCHEMAS

SHARED = REPO.parent / "shared" / "contracts"


@pytest.mark.parametrize("name", ["facts.schema.json", "plan.schema.json"])
def test_schema_is_valid_json_schema(name):
    import jsonschema

    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/contracts beside this checkout")
@pytest.mark.parametrize("name", ["facts.schema.json", "plan.schema.json"])
def test_schemas_equal_the_shared_contracts(name):
    assert (SCHEMAS / name).read_bytes() == (SHARED / name).read_bytes()
