"""Golden snapshots: the plan JSON, the plan table and every backend's dry-run step listing for
every machine of tests/machines.py (and the recorded H200), per workload, with and without source
builds. A change to any of them is either a bug or a deliberate change: rewrite them with
``pytest --update-goldens`` and say in the commit what changed and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attn_installer.console import render_facts, render_plan, render_steps
from attn_installer.facts import load_facts
from attn_installer.matrix import load_matrix
from attn_installer.plan import plan_for
from attn_installer.request import Request, Target
from tests.conftest import FIXTURES, validate
from tests.machines import MACHINES

GOLDEN = FIXTURES / "golden" / "plans"
H200 = FIXTURES / "nvidia/h200-device/probe.json"

CASES = [(name, workload, source) for name in sorted(MACHINES) for workload in ("full", "lora", "inference")
         for source in (False, True)]


def snapshot(facts, **request) -> dict:
    p = plan_for(facts, load_matrix(), Request(**request), Target(cache_dir="/cache"))
    d = p.to_dict()
    validate(d, "plan.schema.json")
    return {
        "plan": d,
        "table": render_plan(p, verbose=True).splitlines(),
        "steps": {b.name: render_steps(b) for b in p.backends if b.steps},
    }


def compare(path: Path, got: dict, update: bool) -> None:
    from attn_installer import target

    # the target programs' folder is where this checkout is: the same plan anywhere
    here = json.dumps(str(target.DIR))[1:-1]
    text = json.dumps(got, indent=1, sort_keys=True).replace(here, "<attn_installer/target>")
    got = json.loads(text)
    text += "\n"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"no golden {path.name}: run pytest --update-goldens"
    want = json.loads(path.read_text())
    assert got == want, f"{path.name} changed: compare with `pytest --update-goldens` and git diff"


@pytest.mark.parametrize(("name", "workload", "source"), CASES,
                         ids=[f"{n}-{w}-{'src' if s else 'nosrc'}" for n, w, s in CASES])
def test_plan_golden(name, workload, source, update_goldens):
    got = snapshot(MACHINES[name], workload=workload, allow_source=source)
    compare(GOLDEN / f"{name}-{workload}-{'src' if source else 'nosrc'}.json", got, update_goldens)


@pytest.mark.parametrize("trim", [False, True], ids=["untrimmed", "bf16-hd128"])
def test_recorded_h200_golden(trim, update_goldens):
    facts = load_facts(H200)
    extra = {"head_dims": (128,), "dtypes": ("bf16",)} if trim else {}
    got = snapshot(facts, allow_source=True, **extra)
    got["facts"] = render_facts(facts).splitlines()
    compare(GOLDEN / f"h200-recorded-{'bf16-hd128' if trim else 'untrimmed'}.json", got, update_goldens)
