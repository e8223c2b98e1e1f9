"""The step loop of one backend: run its steps, keep torch where it is, verify, and restore the
environment exactly when anything fails.

    lock the target environment -> finish an earlier run's journal if one is there -> snapshot the
    environment (distributions, and every file of the folders pip writes to) into a journal beside
    the lock -> for each step: check free space, write its files, have its file (download: HEAD
    check, cache, sha256), preview what pip would change (``--dry-run --report``) and copy the
    files of every distribution it would replace, run it, check torch & co. did not move -> verify
    with a real kernel call -> on any failure, interrupt (Ctrl-C, SIGTERM, SIGHUP) or bug: remove
    what was added, put back what was replaced, file by file, check the folders equal the snapshot,
    say what state the environment is in -> remove the journal when the run ended cleanly.

Source builds use the same loop: a wheel already built for the same build key (cache or
``--wheelhouse``, its sha256 checked against the key) skips fetch and build and is installed by its
path. A failure raises StepFailedError carrying the record of the attempt (steps, verification,
rollback), a full disk DiskFullError naming the folder, Ctrl-C / SIGTERM / SIGHUP
InstallInterruptedError, a bug InternalInstallError: each after the rollback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from packaging.version import Version

from attn_installer import commands
from attn_installer.errors import (
    DiskFullError,
    InstallError,
)
from attn_installer.install import wheelcache
from attn_installer.install.diagnose import explain, find_hint, pinned_moves
from attn_installer.install.envstate import EnvState, canonical, diff, read_state
from attn_installer.install.files import ensure_file, write_step_files
from attn_installer.install.guard import RunGuard
from attn_installer.install.journal import journal_path
from attn_installer.install.lock import EnvLock
from attn_installer.install.progress import Progress, mmss
from attn_installer.install.records import Failed, Options, Outcome, Say, Services, StepRecord
from attn_installer.install.recover import recover_pending
from attn_installer.install.space import (
    NO_SPACE,
    NO_SPACE_PATH,
    check_build_disk,
    check_step_space,
    folder_of,
    full,
    fullest,
)
from attn_installer.plan.model import BackendPlan, Step, TargetProgram
from attn_installer.runner import Completed
from attn_installer.verify import (
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

def _robust(say: Say) -> Say:
    """A say() that a gone terminal (SIGHUP, a closed pipe) cannot make fail mid-rollback."""
    def tell(text: str) -> None:
        try:
            say(text)
        except (OSError, ValueError):
            pass

    return tell


def _tail(output: str, n: int = LOG_TAIL) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


class _Loop:
    def __init__(self, bp: BackendPlan, svc: Services, opts: Options) -> None:
        self.bp, self.svc, self.opts = bp, svc, opts
        self.say = _robust(svc.say)
        self.out = Outcome(bp.name, log_path=str(svc.log_path) if svc.log_path else None)
        self.guard = RunGuard(bp, svc, opts, self.say)
        self.rollback = self.guard.rollback
        self.shadowed: list[str] = []
        """Installed distributions whose files this backend's wheel overwrites; reinstalled after it."""
        self.workdir = Path("/nonexistent")
        """Every command runs from here (made by run()): nothing in the caller's directory can shadow pip."""
        self.roots: tuple[str, ...] = ()

    def _state(self) -> EnvState:
        return read_state(self.svc.runner, self.opts.python)

    # ------------------------------------------------------------------ running one step

    def _run(self, step: Step, argv: tuple[str, ...]) -> Completed:
        env = {**os.environ, **step.env} if step.env else None
        progress = Progress(self.say, units=self.bp.compile_units, estimate_minutes=self.bp.estimate_minutes,
                            log_path=str(self.svc.log_path) if self.svc.log_path else None)
        build = step.kind == "build"
        runner = self.svc.runner
        journal = self.guard.journal
        hooked = journal is not None and hasattr(runner, "on_spawn")
        if hooked:
            assert journal is not None
            journal.update(step=step.description, child=None)
            runner.on_spawn = journal.child  # type: ignore[attr-defined]
        try:
            return runner.run(argv, timeout=BUILD_TIMEOUT if build else PIP_TIMEOUT, env=env,
                              cwd=self.workdir, on_line=progress.on_line,
                              on_idle=progress.on_idle if build else None,
                              idle_seconds=self.opts.stall_seconds)
        finally:
            if hooked:
                runner.on_spawn = None  # type: ignore[attr-defined]
        # the journal keeps the last child: a later run stops it if it is still there

    def _failure(self, step: Step, done: Completed, before: EnvState) -> Failed:
        what = "timed out" if done.timed_out else f"failed (exit {done.returncode})"
        wh = str(self.opts.wheelhouse) if self.opts.wheelhouse else None
        first = explain(done.output, self.svc.matrix, before.packages.get("torch"), wh)
        hint = find_hint(done.output, self.svc.matrix, step.env)
        msg = f"{step.description}: {what}" + (f": {first}" if first else "")
        disk = bool(NO_SPACE.search(done.output))
        if disk:
            m = NO_SPACE_PATH.search(done.output)
            where = folder_of(m.group(1)) if m else self._fullest()
            msg = (f"no space left on the disk of {where}: {step.description} {what}; "
                   "free some space there and run again")
        msg += "\n  last lines:\n" + _tail(done.output)
        if self.svc.log_path:
            msg += f"\n  full log: {self.svc.log_path}"
        return Failed(msg, hint, disk=disk)

    def _fullest(self) -> str:
        return fullest(self.roots, self.svc.paths.cache)

    def _check_space(self, step: Step) -> None:
        check_step_space(self.svc.matrix, self.bp.route, step, self.roots)

    def _check_disk(self) -> None:
        check_build_disk(self.bp)

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
        done = self.svc.runner.run(commands.pip_preview(p, str(report)), timeout=PIP_TIMEOUT,
                                   env={**os.environ, **step.env} if step.env else None, cwd=self.workdir)
        if not done.ok:
            raise self._failure(step, done, state)
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError) as e:
            raise Failed(f"{step.description}: pip's --dry-run --report wrote no readable report ({e})") from None
        report.unlink()
        return [(canonical(i["metadata"]["name"]), str(i["metadata"]["version"])) for i in data.get("install", [])]

    # ------------------------------------------------------------------ the loop

    def steps(self, before: EnvState) -> EnvState:
        bp, opts, out = self.bp, self.opts, self.out
        cache = Path(bp.wheel_cache) if bp.wheel_cache else None
        cached = wheelcache.cached_wheel(cache, bp.key, opts.wheelhouse, self.say) if cache is not None else None
        if cached is not None:
            self.say(f"  wheel cache hit: {cached} (same build key, sha256 checked); skipping fetch and build")
        if opts.offline and cache is not None and cached is None and opts.wheelhouse is not None:
            raise Failed(f"--offline: no wheel built for this key in {opts.wheelhouse} or the cache; "
                          "build it once with `attn-install build --wheelhouse DIR` on a node like this one "
                          f"(key: {json.dumps(dict(bp.key), sort_keys=True)})")
        if cached is None:
            self._check_disk()
        built: Optional[Path] = cached
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
            self._check_space(step)
            write_step_files(step)
            try:
                ensure_file(step, offline=opts.offline, say=self.say)
            except InstallError as e:
                raise Failed(str(e), disk=isinstance(e, DiskFullError)) from None
            creates = getattr(step.action, "creates", None)
            if creates and Path(creates).exists():
                shutil.rmtree(creates)  # a checkout left by an earlier run (half fetched, or built) starts over
            run_step = step
            if step.installs is not None and step.installs.local_wheels and cache is not None:
                run_step = self._by_path(step, cache, built)
                rec.argv = list(run_step.argv)
            if run_step.installs is not None:
                would = self._preview(run_step, current)
                moves = [f"{n} {current.packages.get(n)} -> {v}" for n, v in would
                         if n in pinned and current.packages.get(n) not in (None, v)]
                if moves:
                    raise Failed(f"{step.description} would replace {', '.join(moves)}; refusing "
                                  "(attn-install never moves torch)")
                self.rollback.back_up(current, would)
            done = self._run(run_step, run_step.argv)
            self._log_ok()
            rec.returncode, rec.seconds = done.returncode, done.seconds
            if isinstance(step.action, TargetProgram) and step.action.module == "attn_hubfetch":
                self._hub_fetched(step, done, rec)
                continue
            if not done.ok:
                rec.status = "failed"
                raise self._failure(step, done, current)
            rec.status = "ok"
            if step.kind == "build" and cache is not None:
                built = wheelcache.store_built(cache, bp.key, self.say)
                if built is None:
                    raise Failed(f"{step.description}: the build left no usable wheel in {cache}")
                out.built_wheel = str(built)
                self.say(f"  built {built.name} in {mmss(done.seconds)}")
                if opts.export_wheelhouse is not None:
                    wheelcache.export(built, bp.key, cache.name, opts.export_wheelhouse, self.say)
            if step.installs is not None or step.kind == "prepare":
                now = self._state()
                moved = pinned_moves(pinned, before.packages, now.packages)
                if moved:
                    raise Failed(f"{step.description} moved {', '.join(moved)}; rolling back")
                current = now
        if cached is not None and cache is not None:
            out.built_wheel = str(cached)
            if opts.export_wheelhouse is not None:
                wheelcache.export(cached, bp.key, cache.name, opts.export_wheelhouse, self.say)
        if shadowed and not opts.build_only and any(s.installs is not None for s in bp.steps):
            for name in shadowed:
                self.say(f"- reinstall {name} {current.packages[name]} over the files {bp.distribution} overwrote")
                if not self.rollback.reinstall(current, name):
                    raise Failed(f"reinstalling {name} after {bp.distribution} failed; rolling back")
            current = self._state()
        return current

    def _by_path(self, step: Step, cache: Path, wheel: Optional[Path]) -> Step:
        """The install of a built wheel, naming that one file (never a version resolved over a folder),
        after its sha256 is checked against the build key's record."""
        from dataclasses import replace  # noqa: PLC0415

        p = step.installs
        assert p is not None
        if wheel is None:
            raise Failed(f"{step.description}: no wheel was built for this key in {cache}")
        why = wheelcache.problem(cache, self.bp.key, wheel)
        if why is not None:
            raise Failed(f"{step.description}: {wheel} is not the wheel built for this key ({why}); nothing was "
                          "installed; run again to build it again")
        action = replace(p, requirements=(str(wheel),), local_wheels=None, wheelhouse=None, index_url=None)
        return replace(step, action=action)

    def _log_ok(self) -> None:
        """A run log that could not be written because its disk is full stops the run (and rolls it back)."""
        problem = getattr(self.svc.runner, "log_problem", None)
        if isinstance(problem, OSError) and full(problem):
            raise Failed(f"no space left on the disk of {folder_of(str(problem.filename or self.svc.paths.logs))} "
                          "(the run log could not be written); free some space there and run again", disk=True)

    def _hub_fetched(self, step: Step, done: Completed, rec: StepRecord) -> None:
        """The hub kernel's fetch: what it wrote (for the rollback), the commit and the variant."""
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        try:
            data = json.loads(lines[-1])
        except (IndexError, ValueError):
            rec.status = "failed"
            raise Failed(f"{step.description}: failed (exit {done.returncode}) without a result:\n"
                          + _tail(done.output)) from None
        self.rollback.files_written(list(data.get("created", [])), dict(data.get("replaced", {})))
        if not done.ok or "error" in data:
            rec.status = "failed"
            hint = find_hint(str(data.get("error", "")), self.svc.matrix, {})
            raise Failed(f"{step.description}: {data.get('error', f'exit {done.returncode}')}", hint)
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
        from datetime import datetime, timezone  # noqa: PLC0415

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        results: list[tuple[str, VerifyResult]] = []
        hub = self.out.hub
        backend = self.svc.matrix.backend(bp.name)
        what = "forward + backward" if backend.call.backward else "forward (no backward kernel)"
        packed = ", packed" if backend.call.varlen else ""
        for label, extra in per_gpu_model(opts.gpus, os.environ):
            on = f" on {label}" if label else ""
            self.say(f"verifying {bp.name}{on} ({what} against fp32 attention: GQA, MQA{packed}) ...")
            env = {**os.environ, **bp.runtime_env, **extra} if bp.runtime_env or extra else None
            if hub is not None:  # the kernel as an offline node loads it: from the cache, by its commit
                env = {**(env or os.environ), "HF_HUB_OFFLINE": "1", "KERNELS_CACHE": str(hub["cache"])}
            res = verify_backend(self.svc.runner, opts.python, backend, dtype=opts.dtype,
                                 head_dims=opts.head_dims, model=opts.model, env=env,
                                 hub=f"{hub['repo']}@{hub['revision']}" if hub is not None else None,
                                 math_only=math_only(opts.gpus, self.svc.matrix))
            if hub is None:
                save_record(self.svc.paths.cache, res, created)
            results.append((label, res))
            if not res.ok:
                self.out.verify = res
                raise Failed(f"verification of {bp.name}{on} failed: {res.detail}",
                              find_hint(res.detail, self.svc.matrix, {}))
        for other in (b for b in self.svc.matrix.backends
                      if b.distribution and canonical(b.distribution) in self.shadowed):
            self.say(f"verifying {other.name} too (its files were reinstalled after {bp.distribution}'s) ...")
            again = verify_backend(self.svc.runner, opts.python, other, dtype=opts.dtype, head_dims=opts.head_dims,
                                   model=opts.model)
            if not again.ok:
                raise Failed(f"{other.name} no longer works after installing {bp.name}: {again.detail}",
                              find_hint(again.detail, self.svc.matrix, {}))
        if len(results) == 1:
            self.out.verify = results[0][1]
            return
        first = results[0][1]
        self.out.verify = VerifyResult(bp.name, first.status, "; ".join(f"{label}: {r.detail}" for label, r in results),
                                       {"gpus": [{"gpu": label, **r.to_dict()} for label, r in results]})

    # ------------------------------------------------------------------ snapshot, journal, rollback

    def _begin(self, lock: EnvLock, before: EnvState) -> None:
        self.roots = before.roots
        self.guard.begin(lock, before)

    def _clean_end(self) -> None:
        self.guard.clean_end()

    def run(self) -> Outcome:
        svc, opts, out = self.svc, self.opts, self.out
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="attn-install-run-"))
        except OSError as e:
            if full(e):
                raise DiskFullError(f"no space left in the temp dir {tempfile.gettempdir()} (making a working "
                                    "folder); free some space there, or point TMPDIR at another disk") from None
            raise
        try:
            first = self._state()
            with EnvLock(first.prefix, svc.paths.locks, opts.lock_wait, self.say) as lock:
                recover_pending(journal_path(lock.path), svc.runner, self.say)
                before = self._state()
                try:
                    self._begin(lock, before)
                    after = self.steps(before)
                    if opts.build_only:
                        out.ok, out.built, out.state = True, True, "built"
                        self._clean_end()
                        return out
                    if opts.verify:
                        self.verify()
                    out.changed = {n: list(v) for n, v in diff(before.packages, after.packages).items()}
                    out.ok = True
                    v = out.verify
                    ver = "verified" if v and v.status == "passed" else (
                        f"verification {v.status}: {v.detail}" if v else "not verified")
                    out.state = ("installed" if out.changed else "already in place") + f", {ver}"
                    self._clean_end()
                    return out
                except BaseException as e:  # every path, an unexpected one included, rolls back first
                    out.ok = False
                    cause = e if not isinstance(e, (Failed, InstallError)) else None
                    raise self.guard.rolled_back(e, before, out) from cause
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def install_backend(bp: BackendPlan, svc: Services, opts: Options) -> Outcome:
    """Install (or build) one backend. Raises StepFailedError after restoring the environment,
    InstallInterruptedError on Ctrl-C after restoring, BusyError when the lock is held."""
    return _Loop(bp, svc, opts).run()
