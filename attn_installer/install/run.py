"""One install run, as `attn-install install`, `build` and `--auto` ask for it: probe, plan, the
dry-run listing or the installs (each through the step loop), the config, the report, the summary.

Takes a typed :class:`InstallRequest` and a :class:`Host` (what the run talks to: the probe, the
matrix, the runner, the paths, the terminal), so the CLI only turns options into a request.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Protocol

from attn_installer import console
from attn_installer.errors import DiskFullError, InstallError, NoViableBackendError, StepFailedError, UsageError
from attn_installer.facts import Facts
from attn_installer.files import write_atomic
from attn_installer.install.checkout import tree_digest
from attn_installer.install.loop import Options, Outcome, Services, install_backend
from attn_installer.matrix import Matrix
from attn_installer.paths import Paths, run_id
from attn_installer.plan.model import BackendPlan, Plan
from attn_installer.request import MeasuredSpeed, Request, Target, Training
from attn_installer.runner import Runner

__all__ = ["Host", "InstallRequest", "run_install", "write_config"]


class Host(Protocol):
    paths: Paths

    def matrix(self) -> Matrix: ...
    def probe(self, python: Optional[str]) -> Facts: ...
    def runner(self, log_path: Optional[Path] = None) -> Runner: ...
    def out(self, text: str = "") -> None: ...
    def say(self, text: str) -> None: ...
    def confirm(self, question: str) -> None: ...
    def interactive(self) -> bool: ...
    def measured(self, facts: Facts, workload: str, *, quiet: bool, training: Optional[Training] = None
                 ) -> tuple[MeasuredSpeed, ...]: ...
    def torch_index_template(self) -> Optional[str]: ...
    def merge_config(self, plan: Plan, path: Path, facts: Facts, *, dry_run: bool = False) -> None: ...


@dataclass(frozen=True)
class InstallRequest:
    """What an install run was asked to do."""

    names: tuple[str, ...] = ()
    """Backends to install (default: the recommended one)."""
    request: Request = field(default_factory=Request)
    python: Optional[str] = None
    installer: str = "pip"
    wheelhouse: Optional[Path] = None
    offline: bool = False
    source_dir: Optional[Path] = None
    dry_run: bool = False
    yes: bool = False
    verify: bool = True
    lock_wait: float = 600.0
    report_file: Optional[Path] = None
    auto: bool = False
    """Print the facts and the plan first; write the config after."""
    output: Optional[Path] = None
    """Where the config goes (--auto)."""
    merge: Optional[Path] = None
    """--auto --merge FILE: the user's axolotl config the installed backend's keys are merged into."""
    force: bool = False
    """-o may replace a file attn-install did not write (backed up first)."""
    measured: bool = False
    build_only: bool = False
    export: Optional[Path] = None
    """`build --wheelhouse`: leave the built wheels there."""


def write_config(host: Host, plan: Plan, output: Path, version: str, *, force: bool = False) -> Optional[Path]:
    """The fragment at *output* (and the run-time .env beside it); a file attn-install did not write is
    refused unless *force* (config.write_fragment). The backup of a replaced file, or None."""
    from attn_installer.config import render_yaml  # noqa: PLC0415
    from attn_installer.configfile import write_fragment  # noqa: PLC0415

    header = [f"written by attn-install {version}: {plan.recommended} for {plan.workload}"]
    backup = write_fragment(output, render_yaml(plan.config, plan.config_comments, header), force=force)
    if plan.runtime_env:
        env_file = output.with_suffix(".env")
        write_fragment(env_file, f"# written by attn-install {version}: run-time environment of {plan.recommended}\n"
                       + "".join(f"export {k}={v}\n" for k, v in plan.runtime_env.items()), force=force)
        host.out(f"wrote {env_file}: environment the backend needs at run time (source it)")
    return backup


NOTHING_TO_INSTALL = ("no GPU and no torch here: nothing needs installing until torch and a GPU are present "
                      "(`attn-install torch` then names the build); the config selects sdpa, torch's own attention")


def _no_gpu_no_torch(req: InstallRequest, host: Host, facts: Facts, version: str) -> None:
    """`--auto` where neither torch nor a GPU is: say so, and write the config for SDPA."""
    from attn_installer.axolotl import make_config  # noqa: PLC0415
    from attn_installer.config import render_yaml  # noqa: PLC0415

    matrix = host.matrix()
    config, comments, _warn = make_config(matrix.backend("sdpa"), facts, matrix, req.request.workload,
                                          req.request.axolotl_version)
    host.out(NOTHING_TO_INSTALL)
    if req.output is None:
        return
    text = render_yaml(config, [*comments, "no GPU and no torch were found when this was written"],
                       [f"written by attn-install {version}: sdpa for {req.request.workload}"])
    if req.dry_run:
        host.out(f"would write {req.output}:")
        host.out(text.rstrip())
        return
    from attn_installer.configfile import write_fragment  # noqa: PLC0415

    write_fragment(req.output, text, force=req.force)
    host.out(f"config: {req.output} (sdpa)")


def _check(req: InstallRequest, host: Host) -> InstallRequest:
    from dataclasses import replace  # noqa: PLC0415

    if req.offline and req.wheelhouse is None:
        req = replace(req, wheelhouse=host.paths.wheelhouse)
    if req.wheelhouse is not None and not req.dry_run and not req.build_only and not req.wheelhouse.is_dir():
        raise UsageError(f"--wheelhouse: {req.wheelhouse} is not a directory")
    if req.source_dir is not None and not req.source_dir.is_dir():
        raise UsageError(f"--source: {req.source_dir} is not a directory")
    if req.source_dir is not None and len(req.names) != 1:
        raise UsageError("--source DIR builds one backend from that checkout: name it, "
                         "e.g. `attn-install install sage --source DIR`")
    if req.installer == "uv" and shutil.which("uv") is None:
        raise UsageError("--installer uv: uv is not on PATH (pip install uv, or use --installer pip)")
    return req


def _make_plan(req: InstallRequest, host: Host, facts: Facts) -> Plan:
    from dataclasses import replace  # noqa: PLC0415

    from attn_installer.plan import plan_for  # noqa: PLC0415

    names = req.names
    speeds = host.measured(facts, req.request.workload, quiet=not req.measured, training=req.request.training) \
        if (req.measured or req.auto) and not names else ()
    source = str(req.source_dir.resolve()) if req.source_dir else None
    request = replace(req.request, backend=names[0] if len(names) == 1 else None,
                      allow_source=req.request.allow_source or bool(names), measured=speeds or req.request.measured,
                      source_dir=source,
                      source_digest=tree_digest(req.source_dir) if req.source_dir else None)
    target = Target(cache_dir=str(host.paths.cache), python=req.python, installer=req.installer,
                    wheelhouse=str(req.wheelhouse.resolve()) if req.wheelhouse else None,
                    torch_index=host.torch_index_template())
    return plan_for(facts, host.matrix(), request, target)


def _known(req: InstallRequest, plan: Plan) -> None:
    known = {b.name for b in plan.backends}
    unknown = [n for n in req.names if n not in known]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}: choose from " + ", ".join(sorted(known)))


def _chosen(req: InstallRequest, plan: Plan) -> list[BackendPlan]:
    chosen = req.names or ((plan.recommended,) if plan.recommended else ())
    if not chosen:
        packing = plan.choice.packing_reason if plan.choice is not None and plan.choice.packing == "blocked" else ""
        raise NoViableBackendError("no backend can be recommended: "
                                   + "; ".join(plan.blockers or [packing or "see `attn-install plan`"]))
    plans = [plan.backend(n) for n in chosen]
    for bp in plans:
        if not bp.viable:
            raise NoViableBackendError(f"{bp.name} does not fit this machine: " + "; ".join(bp.reason_texts))
        if req.build_only and bp.method != "source":
            raise UsageError(f"{bp.name} is not built from source here ({bp.method}: {bp.reason_texts[-1]}); "
                             "attn-install build builds source backends only (uninstall it first to rebuild)")
    return plans


def _restored(out: Outcome) -> bool:
    """The failed install left the environment exactly as it was (so another backend may be tried)."""
    return bool(out.rollback is None or out.rollback.get("exact"))


def _fallbacks(plan: Plan, req: InstallRequest) -> list[BackendPlan]:
    """The other viable backends in the plan's order (no source build unless allowed)."""
    return [bp for bp in plan.backends if bp.viable and bp.name != plan.recommended
            and (bp.method != "source" or req.request.allow_source)]


def _recommend(plan: Plan, bp: BackendPlan, facts: Facts, matrix: Matrix, req: InstallRequest) -> Plan:
    """The plan with *bp* as the backend installed: its config keys, comments and run-time env."""
    from attn_installer.axolotl import make_config  # noqa: PLC0415

    config, comments, _ = make_config(matrix.backend(bp.name), facts, matrix, plan.workload,
                                      req.request.axolotl_version, impl=bp.attn_implementation, packing=bp.packing)
    return replace(plan, recommended=bp.name, config=config, config_comments=tuple(comments),
                   runtime_env=dict(bp.runtime_env))


def _config_as_installed(plan: Plan, outcomes: list[Outcome], facts: Facts, matrix: Matrix,
                         req: InstallRequest) -> Plan:
    """The plan's config for the route that was installed (a later route can be a hub kernel, named
    by its path and pinned to the commit fetched), not the one first planned."""
    from attn_installer.axolotl import hub_value, make_config  # noqa: PLC0415

    out = next((o for o in outcomes if o.backend == plan.recommended and o.ok), None)
    if out is None or out.impl is None:
        return plan
    impl, packing = out.impl, bool(out.packing)
    if out.hub is not None:
        impl, packing, _ = hub_value(str(out.hub["repo"]), int(out.hub["version"]), facts, matrix,
                                     req.request.axolotl_version, revision=str(out.hub["revision"]))
    assert plan.recommended is not None
    config, comments, _ = make_config(matrix.backend(plan.recommended), facts, matrix, plan.workload,
                                      req.request.axolotl_version, impl=impl, packing=packing)
    return replace(plan, config=config, config_comments=tuple(comments))


def _route_allowed(bp: BackendPlan, req: InstallRequest) -> bool:
    """A source build is tried only when asked for (--allow-source, a named backend, build)."""
    return bp.method != "source" or req.request.allow_source or bool(req.names) or req.build_only


def _walk_routes(bp: BackendPlan, req: InstallRequest, host: Host, svc: Services, opts: Options, exe: str
                 ) -> tuple[Outcome, Optional[StepFailedError]]:
    """Install *bp* by its first route; when that fails (rolled back exactly), by the next one.
    The outcome of the route that worked, or of the last one tried, with every attempt in it."""
    candidates = [c for c in bp.candidates if _route_allowed(c, req)] or [bp]
    attempts: list[Outcome] = []
    for i, cand in enumerate(candidates):
        via = f", {cand.route}" if cand.route and len(candidates) > 1 else ""
        host.say(f"{'building' if req.build_only else 'installing'} {bp.name} ({cand.method}{via}) into {exe}")
        try:
            done = install_backend(cand, svc, opts)
        except StepFailedError as e:
            out = e.outcome if isinstance(e.outcome, Outcome) else Outcome(bp.name, message=str(e))
            out.route = cand.route
            attempts.append(out)
            if i + 1 < len(candidates) and not isinstance(e, DiskFullError):  # a full disk fills for the next too
                nxt = candidates[i + 1]
                why = out.message.split("\n")[0]
                host.say(f"{bp.name} by {cand.route or cand.method} failed: {why} ({out.state}); "
                         f"trying the next route: {nxt.route or nxt.method}")
                continue
            out.attempts = [a.summary() for a in attempts]
            return out, e
        done.route = cand.route
        done.impl, done.packing = cand.attn_implementation, cand.packing
        done.attempts = [a.summary() for a in attempts] + [done.summary()]
        return done, None
    raise AssertionError("no route was tried")  # pragma: no cover - candidates is never empty


def _order(plans: list[BackendPlan]) -> list[BackendPlan]:
    """A backend whose files another one's wheel overwrites is installed after that one (FA4 after FA2)."""
    shadowed = {d for bp in plans for d in bp.shadows}
    return sorted(plans, key=lambda bp: bp.distribution in shadowed)


def run_install(req: InstallRequest, host: Host, version: str) -> None:
    """Do the run; raises the typed error of the first failure (after restoring the environment)."""
    req = _check(req, host)
    facts = host.probe(req.python)
    if req.auto or req.dry_run:
        host.out(console.render_facts(facts))
        host.out()
    if req.auto and facts.torch is None and not facts.gpus and not req.names:
        _no_gpu_no_torch(req, host, facts, version)
        return
    plan = _make_plan(req, host, facts)
    _known(req, plan)
    if req.auto or req.dry_run:
        host.out(console.render_plan(plan))
        host.out()
    plans = _order(_chosen(req, plan))
    if req.dry_run:
        for line in console.render_dry_run(plans, plan, req.output if req.auto and req.merge is None else None):
            host.out(line)
        if req.auto and req.merge is not None:
            host.merge_config(plan, req.merge, facts, dry_run=True)
        return
    needs_change = [bp for bp in plans if bp.steps]
    if needs_change and not req.yes and host.interactive():
        host.confirm("Install " + ", ".join(f"{bp.name} ({bp.method})" for bp in needs_change)
                     + f" into {facts.python.executable}?")
    host.paths.checked()
    rid = run_id()
    log_path = host.paths.log_file(rid, "-".join(bp.name for bp in plans))
    svc = Services(runner=host.runner(log_path), paths=host.paths, matrix=host.matrix(), say=host.say,
                   run_id=rid, log_path=log_path)
    exe = req.python or facts.python.executable or "python"
    outcomes: list[Outcome] = []
    failure: Optional[StepFailedError] = None
    tr = req.request.training
    opts = Options(python=exe, verify=req.verify and not req.build_only, dtype=plan.dtype or "bf16",
                   model=tr.model if tr is not None else None,
                   gpus=facts.gpus, lock_wait=req.lock_wait, wheelhouse=req.wheelhouse, offline=req.offline,
                   export_wheelhouse=req.export, build_only=req.build_only)
    for bp in plans:
        outcome, failure = _walk_routes(bp, req, host, svc, opts, exe)
        outcomes.append(outcome)
        if failure is not None:
            break
    if failure is not None and req.auto and not req.names and _restored(outcomes[-1]) \
            and not isinstance(failure, DiskFullError):
        # --auto: the best backend could not be installed by any route (and nothing changed): the
        # next one that fits, rather than nothing
        for nxt in _fallbacks(plan, req):
            last = outcomes[-1]
            why = (last.message or "").split("\n")[0]
            by = f" (last, {last.route}: {why})" if last.route and why else (f" ({why})" if why else "")
            host.say(f"{last.backend} could not be installed by any route{by}; --auto tries the next "
                     f"backend that fits: {nxt.name} ({nxt.method})")
            outcome, failure = _walk_routes(nxt, req, host, svc, opts, exe)
            outcomes.append(outcome)
            if failure is None:
                plan = _recommend(plan, nxt, facts, host.matrix(), req)
                break
            if not _restored(outcome):
                break
    config_written = None
    ok = failure is None and bool(outcomes) and outcomes[-1].ok
    if ok and req.auto and req.merge is not None and plan.recommended:
        plan = _config_as_installed(plan, outcomes, facts, host.matrix(), req)
        host.merge_config(plan, req.merge, facts)
        config_written = str(req.merge)
    elif ok and req.auto and req.output is not None and plan.recommended:
        plan = _config_as_installed(plan, outcomes, facts, host.matrix(), req)
        write_config(host, plan, req.output, version, force=req.force)
        config_written = str(req.output)
    if req.report_file is not None:
        report: dict[str, Any] = {"schema_version": 1, "ok": ok, "facts": facts.to_dict(), "plan": plan.to_dict(),
                                  "results": [o.to_dict() for o in outcomes], "config": config_written,
                                  "log": str(log_path)}
        write_atomic(req.report_file, json.dumps(report, indent=2) + "\n")
    host.out()
    for line in console.render_outcomes(outcomes, req.export):
        host.out(line)
    if config_written:
        host.out(f"config: {config_written} ({plan.recommended}, {plan.dtype or 'dtype unknown'})")
    if req.report_file is not None:
        host.out(f"report: {req.report_file}")
    if failure is not None:
        bad = next((o for o in outcomes if not o.ok), None)
        msg = str(failure) + (f"\n  state: {bad.state}" if bad else "")
        if failure.hint:
            msg += f"\n  hint: {failure.hint}"
        raise (DiskFullError if isinstance(failure, DiskFullError) else InstallError)(msg)
