"""Turn a Resolution into a plan: exact steps for every viable backend, the recommendation, the
axolotl config. Pure: no I/O, and nothing the resolver decided is decided again here.

    plan = make_plan(resolve(facts, matrix, request), facts, matrix, request, target)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Optional

from attn_installer.axolotl import hub_value, make_config
from attn_installer.errors import UsageError
from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.plan.choice import Choice, decide, packing_blocked_text
from attn_installer.plan.model import BackendPlan, Plan, Step
from attn_installer.plan.rank import measured_reasons, static_order
from attn_installer.plan.steps import Recipe, key_digest, recipe, torch_pins
from attn_installer.request import Request, Target
from attn_installer.resolve import Candidate, Reason, Resolution, resolve
from attn_installer.routes import Route, route_minutes

__all__ = ["BackendPlan", "Plan", "Step", "key_digest", "make_plan", "plan_for", "torch_pins"]


def plan_for(facts: Facts, matrix: Matrix, request: Request, target: Optional[Target] = None) -> Plan:
    """Resolve and plan in one call. With a training config that packs (sample_packing: true) and
    no backend with a varlen path fitting: planned without packing when it may be turned off
    (--allow-no-packing), else the plan says packing is what blocks it."""
    if request.backend is not None and request.backend not in matrix.backend_names:
        raise UsageError(f"unknown backend {request.backend!r}: choose from " + ", ".join(matrix.backend_names))
    target = target or Target()
    res = resolve(facts, matrix, request)
    tr = request.training
    if tr is not None and tr.packing and not res.blockers and not any(c.viable for c in res.candidates):
        loose = replace(request, training=replace(tr, packing=False))
        res_loose = resolve(facts, matrix, loose)
        fits = [c.backend.name for c in res_loose.candidates if c.viable]
        if fits:
            packed = {b.name: b for b in make_plan(res, facts, matrix, request, target).backends}
            text = packing_blocked_text(tr.source, packed, matrix, fits, allowed=tr.allow_no_packing,
                                        gpus=facts.gpus)
            if tr.allow_no_packing:
                request = replace(loose, training=replace(tr, packing=False, packing_off=text))
                res = res_loose
            else:
                request = replace(request, training=replace(tr, packing_blocked=text))
    return make_plan(res, facts, matrix, request, target)


def _backend_plan(c: Candidate, facts: Facts, matrix: Matrix, request: Request, target: Target) -> BackendPlan:
    first = _route_plan(c, c.route, facts, matrix, request, target)
    rest = []
    for r in c.routes[1:] if c.viable else ():
        alt = _route_plan(c, r, facts, matrix, request, target)
        reasons = (*(x for x in c.reasons if x.kind != "route"), Reason("route", r.reason))
        rest.append(replace(alt, reasons=reasons, warnings=r.warnings))
    return replace(first, alternatives=tuple(rest))


def _route_plan(c: Candidate, route: Optional[Route], facts: Facts, matrix: Matrix, request: Request,
                target: Target) -> BackendPlan:
    b = c.backend
    rec = recipe(route, b, facts, matrix, request, target) if route is not None else Recipe(())
    download = None
    if route is not None and route.wheel is not None:
        download = {"url": route.wheel.url, "filename": route.wheel.filename, "sha256": route.wheel.sha256}
    source = route.source if route is not None else None
    impl, packing, hub = b.attn_implementation, b.packing, None
    warnings = c.warnings
    if route is not None and route.hub is not None:
        impl, packing, said = hub_value(route.hub.repo, route.hub.version, facts, matrix, request.axolotl_version)
        hub = {"repo": route.hub.repo, "version": route.hub.version}
        warnings = (*warnings, *said)
    return BackendPlan(
        name=b.name, title=b.title, attn_implementation=impl, viable=c.viable,
        reasons=c.reasons, method=route.method if route is not None else None, steps=rec.steps, warnings=warnings,
        estimate_minutes=route_minutes(route, matrix, rec.units * rec.archs) if route is not None else None,
        installed_version=route.installed_version if route is not None else None, distribution=b.distribution,
        import_name=b.import_name, packing=packing, runtime_env=dict(b.runtime_env), download=download,
        wheel_cache=rec.wheel_cache, key=rec.key, compile_units=rec.units,
        source_dir=source.checkout if source is not None else None, checkout=rec.checkout,
        disk_gb=source.build.disk_gb if source is not None else 0.0,
        verify_rel_tol=b.verify_rel_tol, verify_min_cosine=b.verify_min_cosine,
        route=route.kind if route is not None else None, route_reason=route.reason if route is not None else "",
        shadows=b.shadows, hub=hub)


def make_plan(res: Resolution, facts: Facts, matrix: Matrix, request: Request, target: Target) -> Plan:
    """Assemble the plan from the resolution (pure)."""
    plans = {c.backend.name: _backend_plan(c, facts, matrix, request, target) for c in res.candidates}
    warnings = list(res.warnings)
    order = static_order(facts, matrix)
    if request.measured:
        order, why = measured_reasons(order, {n for n, p in plans.items() if p.viable}, request.measured)
        for name, text in why.items():
            plans[name] = replace(plans[name], reasons=(*plans[name].reasons, Reason("measured", text)))
    recommended: Optional[str] = None
    if request.backend is not None:
        recommended = request.backend if plans[request.backend].viable else None
    elif not res.blockers:
        for name in order:
            p = plans[name]
            if not p.viable:
                continue
            if p.method == "source" and not request.allow_source:
                warnings.append(
                    f"{name} ranks first among viable backends here but needs a source build "
                    f"(about {_minutes(p.estimate_minutes)}); to build it: `attn-install install {name}` "
                    "(or `attn-install --auto --allow-source`)")
                continue
            recommended = name
            break
    tr = request.training
    choice: Optional[Choice] = None
    if tr is not None and tr.packing_blocked:
        recommended = None
        warnings.append(tr.packing_blocked)
        choice = Choice(tr.choice, tr.choice_from, None, False, (tr.packing_blocked,), packing="blocked",
                        packing_reason=tr.packing_blocked)
    elif tr is not None and tr.source and request.backend is None and not res.blockers:
        recommended, choice = decide(plans, recommended, matrix, request, facts.packages)
        state, said = ("off", tr.packing_off) if tr.packing_off else ("on", "") if tr.packing else ("", "")
        choice = replace(choice, packing=state, packing_reason=said)
        if not choice.judged:
            warnings.append(choice.reasons[0])
        if tr.packing_off:
            warnings.append(tr.packing_off)
    ranked = sorted(plans.values(), key=lambda p: (
        p.name != recommended, not p.viable, order.index(p.name) if p.name in order else math.inf))
    config: dict[str, Any] = {}
    comments: list[str] = []
    runtime_env: dict[str, str] = {}
    dtype = None
    if recommended is not None:
        rb = matrix.backend(recommended)
        chosen = plans[recommended]
        packing = chosen.packing and (tr is None or not tr.source or tr.packing)
        config, comments, cfg_warnings = make_config(rb, facts, matrix, request.workload, request.axolotl_version,
                                                     impl=chosen.attn_implementation, packing=packing)
        if tr is not None and tr.packing_off:
            config["sample_packing"] = False
        warnings.extend(cfg_warnings)
        runtime_env = dict(rb.runtime_env)
        dtype = "bf16" if config.get("bf16") else "fp16" if config.get("fp16") else None
    return Plan(recommended=recommended, backends=tuple(ranked), config=config, blockers=res.blockers,
                warnings=tuple(warnings), workload=request.workload, config_comments=tuple(comments),
                runtime_env=runtime_env, dtype=dtype, choice=choice)


def _minutes(m: Optional[float]) -> str:
    if m is None:
        return "unknown time"
    return f"{m:g} min" if m < 120 else f"{m / 60:.1f} h"
