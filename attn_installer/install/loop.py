"""The step loop of one backend: run its steps, keep torch where it is, verify, and restore the
environment exactly when anything fails.

    lock the target environment -> snapshot its distributions -> for each step: write its files,
    have its file (download: HEAD check, cache, sha256), preview what pip would change
    (``--dry-run --report``) and repack every distribution it would replace, run it, check torch & co.
    did not move -> verify with a real kernel call -> on any failure or interrupt: uninstall what was
    added, put back what was replaced, say what state the environment is in.

Source builds use the same loop: a wheel already built for the same build key (cache or
``--wheelhouse``) skips fetch and build. A failure raises StepFailedError carrying the record of
the attempt (steps, verification, rollback); Ctrl-C raises InstallInterruptedError after restoring.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from packaging.version import Version

from attn_installer import commands
from attn_installer.errors import InstallError, InstallInterruptedError, StepFailedError
from attn_installer.facts import Gpu
from attn_installer.install import wheelcache
from attn_installer.install.backup import Rollback, rollback_state
from attn_installer.install.diagnose import explain, find_hint, pinned_moves
from attn_installer.install.envstate import EnvState, canonical, diff, read_state
from attn_installer.install.files import ensure_file, write_step_files
from attn_installer.install.lock import EnvLock
from attn_installer.install.progress import Progress, mmss
from attn_installer.matrix import Matrix
from attn_installer.modelconfig import ModelAttention
from attn_installer.paths import Paths
from attn_installer.plan.model import BackendPlan, Step, TargetProgram
from attn_installer.runner import Completed, Runner
from attn_installer.verify import (
    DEFAULT_HEAD_DIMS,
    VerifyResult,
    math_only,
    per_gpu_model,
    save_record,
    verify_backend,
)

__all__ = ["Options", "Outcome", "Services", "StepRecord", "install_backend"]

PIP_TIMEOUT = 1800.0
BUILD_TIMEOUT = 6 * 3600.0
LOG_TAIL = 12

Say = Callable[[str], None]


@dataclass(frozen=True)
class Services:
    """What the loop talks to; built once by the caller (the CLI's App), replaced in tests."""

    runner: Runner
    paths: Paths
    matrix: Matrix
    say: Say
    run_id: str
    log_path: Optional[Path] = None


@dataclass(frozen=True)
class Options:
    python: str
    verify: bool = True
    dtype: str = "bf16"
    head_dims: tuple[int, ...] = DEFAULT_HEAD_DIMS
    model: Optional[ModelAttention] = None
    """The training's model (--axolotl-config): verification checks its head dims and head counts."""
    gpus: tuple[Gpu, ...] = ()
    """The GPUs visible: verification runs once on each distinct model."""
    lock_wait: float = 600.0
    wheelhouse: Optional[Path] = None
    offline: bool = False
    stall_seconds: float = 600.0
    export_wheelhouse: Optional[Path] = None
    """`attn-install build --wheelhouse`: leave the built wheel (and its key) there."""
    build_only: bool = False


@dataclass
class StepRecord:
    description: str
    argv: list[str]
    kind: str
    status: str
    """ok, failed, skipped (cache hit), or not run."""
    returncode: Optional[int] = None
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "argv": self.argv, "kind": self.kind, "status": self.status,
                "returncode": self.returncode, "seconds": round(self.seconds, 2), "note": self.note}


@dataclass
class Outcome:
    """The record of one backend's install, for the report and the summary."""

    backend: str
    ok: bool = False
    state: str = ""
    message: str = ""
    hint: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    verify: Optional[VerifyResult] = None
    rollback: Optional[dict[str, Any]] = None
    changed: dict[str, list[Optional[str]]] = field(default_factory=dict)
    log_path: Optional[str] = None
    built_wheel: Optional[str] = None
    built: bool = False
    """A build-only run: the wheel was built, nothing was installed."""
    route: Optional[str] = None
    hub: Optional[dict[str, Any]] = None
    """A hub kernel fetched: repo, version, revision (the commit), variant, path, cache."""
    impl: Optional[str] = None
    """attn_implementation of the route installed (a hub kernel path for hub_kernel)."""
    packing: Optional[bool] = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Every route tried for this backend, in order, with how it ended."""

    def summary(self) -> dict[str, Any]:
        return {"route": self.route, "ok": self.ok, "state": self.state, "message": self.message.split("\n")[0],
                "verify": None if self.verify is None else {"status": self.verify.status, "detail": self.verify.detail}}

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "attempts": self.attempts, "hub": self.hub,
            "backend": self.backend, "ok": self.ok, "state": self.state, "message": self.message,
            "hint": self.hint or None, "steps": [s.to_dict() for s in self.steps],
            "verify": None if self.verify is None else self.verify.to_dict(),
            "rollback": self.rollback, "changed": self.changed, "log": self.log_path, "built_wheel": self.built_wheel,
        }


class _Failed(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _tail(output: str, n: int = LOG_TAIL) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


class _Loop:
    def __init__(self, bp: BackendPlan, svc: Services, opts: Options) -> None:
        self.bp, self.svc, self.opts = bp, svc, opts
        self.say = svc.say
        self.out = Outcome(bp.name, log_path=str(svc.log_path) if svc.log_path else None)
        self.rollback = Rollback(svc.runner, opts.python, svc.paths.backup(svc.run_id), self.say,
                                 wheelhouse=opts.wheelhouse, offline=opts.offline)
        self.shadowed: list[str] = []
        """Installed distributions whose files this backend's wheel overwrites; reinstalled after it."""
        self.workdir = Path(tempfile.mkdtemp(prefix="attn-install-run-"))
        """Every command runs from here: nothing in the caller's directory can shadow pip."""

    def _state(self) -> EnvState:
        return read_state(self.svc.runner, self.opts.python)

    # ------------------------------------------------------------------ running one step

    def _run(self, step: Step) -> Completed:
        import os  # noqa: PLC0415

        env = {**os.environ, **step.env} if step.env else None
        progress = Progress(self.say, units=self.bp.compile_units, estimate_minutes=self.bp.estimate_minutes,
                            log_path=str(self.svc.log_path) if self.svc.log_path else None)
        build = step.kind == "build"
        return self.svc.runner.run(step.argv, timeout=BUILD_TIMEOUT if build else PIP_TIMEOUT, env=env,
                                   cwd=self.workdir, on_line=progress.on_line,
                                   on_idle=progress.on_idle if build else None,
                                   idle_seconds=self.opts.stall_seconds)

    def _failure(self, step: Step, done: Completed, before: EnvState) -> _Failed:
        what = "timed out" if done.timed_out else f"failed (exit {done.returncode})"
        wh = str(self.opts.wheelhouse) if self.opts.wheelhouse else None
        first = explain(done.output, self.svc.matrix, before.packages.get("torch"), wh)
        hint = find_hint(done.output, self.svc.matrix, step.env)
        msg = f"{step.description}: {what}" + (f": {first}" if first else "")
        msg += "\n  last lines:\n" + _tail(done.output)
        if self.svc.log_path:
            msg += f"\n  full log: {self.svc.log_path}"
        return _Failed(msg, hint)

    def _preview(self, step: Step, state: EnvState) -> list[tuple[str, str]]:
        """(name, version) pip would install for this step; nothing is changed. Without a pip that
        can preview, the backend's own distribution, if installed, is what a (forced) reinstall
        replaces, so it is still listed to be backed up."""
        p = step.installs
        assert p is not None
        if state.pip is None or Version(state.pip) < Version("22.2"):
            self.say("  (pip < 22.2 or absent: no preview; replaced packages come back from the index)")
            name = canonical(self.bp.distribution) if self.bp.distribution else ""
            return [(name, state.packages[name])] if name in state.packages else []
        report = self.workdir / "report.json"
        import os  # noqa: PLC0415

        done = self.svc.runner.run(commands.pip_preview(p, str(report)), timeout=PIP_TIMEOUT,
                                   env={**os.environ, **step.env} if step.env else None, cwd=self.workdir)
        if not done.ok:
            raise self._failure(step, done, state)
        data = json.loads(report.read_text())
        report.unlink()
        return [(canonical(i["metadata"]["name"]), str(i["metadata"]["version"])) for i in data.get("install", [])]

    def _check_disk(self) -> None:
        """Refuse a build, before anything is fetched, when the disk of its source tree or of the
        wheel cache has less free space than the matrix says the build needs."""
        bp = self.bp
        if not bp.disk_gb or not bp.checkout:
            return
        seen: set[int] = set()
        for where in (bp.checkout, bp.wheel_cache or ""):
            path = _existing_ancestor(Path(where))
            dev = path.stat().st_dev
            if dev in seen:
                continue
            seen.add(dev)
            free = shutil.disk_usage(path).free / 2**30
            if free < bp.disk_gb:
                raise _Failed(f"not enough free disk for the {bp.name} build: {free:.1f} GB free on the "
                              f"disk of {where}, about {bp.disk_gb:g} GB needed (matrices/sources.toml "
                              "disk_gb); free some space or point ATTN_INSTALL_CACHE (and --source) at a larger disk")

    # ------------------------------------------------------------------ the loop

    def steps(self, before: EnvState) -> EnvState:
        bp, opts, out = self.bp, self.opts, self.out
        cache = Path(bp.wheel_cache) if bp.wheel_cache else None
        cached = wheelcache.cached_wheel(cache, bp.key, opts.wheelhouse) if cache is not None else None
        if cached is not None:
            self.say(f"  wheel cache hit: {cached} (same build key); skipping fetch and build")
        if opts.offline and cache is not None and cached is None and opts.wheelhouse is not None:
            raise _Failed(f"--offline: no wheel built for this key in {opts.wheelhouse} or the cache; "
                          "build it once with `attn-install build --wheelhouse DIR` on a node like this one "
                          f"(key: {json.dumps(dict(bp.key), sort_keys=True)})")
        if cached is None:
            self._check_disk()
        current = before
        pinned = self.svc.matrix.pinned
        shadowed = self.shadowed = self._shadowed(before)
        for step in bp.steps:
            rec = StepRecord(step.description, list(step.argv), step.kind, "not run")
            out.steps.append(rec)
            if cached is not None and step.kind in ("fetch", "prepare", "build"):
                rec.status, rec.note = "skipped", "wheel cache hit"
                continue
            if opts.build_only and step.kind == "install" and cache is not None:
                rec.status, rec.note = "skipped", "build only"
                continue
            self.say(f"- {step.description}")
            write_step_files(step)
            try:
                ensure_file(step, offline=opts.offline, say=self.say)
            except InstallError as e:
                raise _Failed(str(e)) from None
            creates = getattr(step.action, "creates", None)
            if creates and Path(creates).exists():
                shutil.rmtree(creates)  # a checkout left by an earlier run (half fetched, or built) starts over
            if step.installs is not None:
                would = self._preview(step, current)
                moves = [f"{n} {current.packages.get(n)} -> {v}" for n, v in would
                         if n in pinned and current.packages.get(n) not in (None, v)]
                if moves:
                    raise _Failed(f"{step.description} would replace {', '.join(moves)}; refusing "
                                  "(attn-install never moves torch)")
                self.rollback.back_up(current, would)
            done = self._run(step)
            rec.returncode, rec.seconds = done.returncode, done.seconds
            if isinstance(step.action, TargetProgram) and step.action.module == "attn_hubfetch":
                self._hub_fetched(step, done, rec)
                continue
            if not done.ok:
                rec.status = "failed"
                raise self._failure(step, done, current)
            rec.status = "ok"
            if step.kind == "build" and cache is not None:
                built = wheelcache.store_built(cache, bp.key)
                if built is not None:
                    out.built_wheel = str(built)
                    self.say(f"  built {built.name} in {mmss(done.seconds)}")
                    if opts.export_wheelhouse is not None:
                        wheelcache.export(built, bp.key, opts.export_wheelhouse, self.say)
            if step.installs is not None or step.kind == "prepare":
                now = self._state()
                moved = pinned_moves(pinned, before.packages, now.packages)
                if moved:
                    raise _Failed(f"{step.description} moved {', '.join(moved)}; rolling back")
                current = now
        if cached is not None:
            out.built_wheel = str(cached)
            if opts.export_wheelhouse is not None:
                wheelcache.export(cached, bp.key, opts.export_wheelhouse, self.say)
        if shadowed and not opts.build_only and any(s.installs is not None for s in bp.steps):
            for name in shadowed:
                self.say(f"- reinstall {name} {current.packages[name]} over the files {bp.distribution} overwrote")
                if not self.rollback.reinstall(current, name):
                    raise _Failed(f"reinstalling {name} after {bp.distribution} failed; rolling back")
            current = self._state()
        return current

    def _hub_fetched(self, step: Step, done: Completed, rec: StepRecord) -> None:
        """The hub kernel's fetch: what it wrote (for the rollback), the commit and the variant."""
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        try:
            data = json.loads(lines[-1])
        except (IndexError, ValueError):
            rec.status = "failed"
            raise _Failed(f"{step.description}: failed (exit {done.returncode}) without a result:\n"
                          + _tail(done.output)) from None
        self.rollback.files_written(list(data.get("created", [])), dict(data.get("replaced", {})))
        if not done.ok or "error" in data:
            rec.status = "failed"
            hint = find_hint(str(data.get("error", "")), self.svc.matrix, {})
            raise _Failed(f"{step.description}: {data.get('error', f'exit {done.returncode}')}", hint)
        rec.status = "ok"
        self.out.hub = {k: data.get(k) for k in ("repo", "version", "revision", "variant", "path", "cache")}
        self.say(f"  {data['repo']} v{data['version']} = {str(data['revision'])[:12]}, variant {data['variant']}")

    def _shadowed(self, before: EnvState) -> list[str]:
        """Installed distributions whose files this backend's wheel overwrites (FA2 ships an old
        flash_attn/cute, FA4's package): backed up now, reinstalled after the steps, verified."""
        names = [canonical(d) for d in self.bp.shadows if canonical(d) in before.packages]
        if self.opts.build_only or not any(s.installs is not None for s in self.bp.steps):
            return []
        for name in names:
            self.rollback.keep(before, name, f"{self.bp.distribution}'s wheel overwrites its files")
        return names

    def verify(self) -> None:
        """Verify on one GPU of each distinct model visible (a mixed host checks each arch); each
        verdict is recorded for the installed build."""
        bp, opts = self.bp, self.opts
        import os  # noqa: PLC0415
        from datetime import datetime, timezone  # noqa: PLC0415

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        results: list[tuple[str, VerifyResult]] = []
        hub = self.out.hub
        for label, extra in per_gpu_model(opts.gpus, os.environ):
            on = f" on {label}" if label else ""
            self.say(f"verifying {bp.name}{on} (forward + backward against fp32 attention: GQA, MQA, packed) ...")
            env = {**os.environ, **bp.runtime_env, **extra} if bp.runtime_env or extra else None
            if hub is not None:  # the kernel as an offline node loads it: from the cache, by its commit
                env = {**(env or os.environ), "HF_HUB_OFFLINE": "1", "KERNELS_CACHE": str(hub["cache"])}
            res = verify_backend(self.svc.runner, opts.python, self.svc.matrix.backend(bp.name), dtype=opts.dtype,
                                 head_dims=opts.head_dims, model=opts.model, env=env,
                                 hub=f"{hub['repo']}@{hub['revision']}" if hub is not None else None,
                                 math_only=math_only(opts.gpus, self.svc.matrix))
            if hub is None:
                save_record(self.svc.paths.cache, res, created)
            results.append((label, res))
            if not res.ok:
                self.out.verify = res
                raise _Failed(f"verification of {bp.name}{on} failed: {res.detail}",
                              find_hint(res.detail, self.svc.matrix, {}))
        for other in (b for b in self.svc.matrix.backends
                      if b.distribution and canonical(b.distribution) in self.shadowed):
            self.say(f"verifying {other.name} too (its files were reinstalled after {bp.distribution}'s) ...")
            again = verify_backend(self.svc.runner, opts.python, other, dtype=opts.dtype, head_dims=opts.head_dims,
                                   model=opts.model)
            if not again.ok:
                raise _Failed(f"{other.name} no longer works after installing {bp.name}: {again.detail}",
                              find_hint(again.detail, self.svc.matrix, {}))
        if len(results) == 1:
            self.out.verify = results[0][1]
            return
        first = results[0][1]
        self.out.verify = VerifyResult(bp.name, first.status, "; ".join(f"{label}: {r.detail}" for label, r in results),
                                       {"gpus": [{"gpu": label, **r.to_dict()} for label, r in results]})

    def guarded_rollback(self, before: EnvState) -> dict[str, Any]:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return self.rollback.restore(before)
        finally:
            signal.signal(signal.SIGINT, old)

    def run(self) -> Outcome:
        svc, opts, out = self.svc, self.opts, self.out
        first = self._state()
        try:
            with EnvLock(first.prefix, svc.paths.locks, opts.lock_wait, self.say):
                before = self._state()
                try:
                    after = self.steps(before)
                    if opts.build_only:
                        out.ok, out.built, out.state = True, True, "built"
                        return out
                    if opts.verify:
                        self.verify()
                    out.changed = {n: list(v) for n, v in diff(before.packages, after.packages).items()}
                    out.ok = True
                    v = out.verify
                    ver = "verified" if v and v.status == "passed" else (
                        f"verification {v.status}: {v.detail}" if v else "not verified")
                    out.state = ("installed" if out.changed else "already in place") + f", {ver}"
                    self.rollback.discard()
                    return out
                except (_Failed, InstallError) as e:
                    out.message = str(e)
                    out.hint = getattr(e, "hint", "")
                    out.rollback = self.guarded_rollback(before)
                    out.state = rollback_state(out.rollback)
                    if out.rollback.get("exact"):
                        self.rollback.discard()
                    raise StepFailedError(out.message, hint=out.hint, outcome=out) from None
                except KeyboardInterrupt:
                    self.say("interrupted: restoring the environment (Ctrl-C again is ignored until done) ...")
                    rb = self.guarded_rollback(before)
                    raise InstallInterruptedError(f"interrupted; {rollback_state(rb)}") from None
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def install_backend(bp: BackendPlan, svc: Services, opts: Options) -> Outcome:
    """Install (or build) one backend. Raises StepFailedError after restoring the environment,
    InstallInterruptedError on Ctrl-C after restoring, BusyError when the lock is held."""
    return _Loop(bp, svc, opts).run()


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path

