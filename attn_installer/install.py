"""Turn a backend's plan into a working install: run its steps, keep torch where it is, verify,
and restore the environment exactly when anything fails.

Order of work for one backend:
  lock the target environment -> snapshot its distributions -> for each step: write its files,
  download (HEAD check, cache, sha256), preview what pip would change (``--dry-run --report``) and
  repack every distribution it would replace, run it, check torch & co. did not move ->
  verify with a real kernel call -> on any failure or Ctrl-C: uninstall what was added and put back
  what was replaced, then say what state the environment is in.
Source builds use the same loop: a wheel already built for the same build key (cache or
``--wheelhouse``) skips fetch and build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from packaging.version import Version

from attn_installer.download import DownloadError, check_exists, fetch, sha256_of
from attn_installer.envstate import EnvLock, EnvState, canonical, diff, read_state, repack
from attn_installer.errors import InstallError, InterruptedError_
from attn_installer.matrix import Hint
from attn_installer.plan import PINNED, BackendPlan, Step, key_digest
from attn_installer.runner import Completed, Runner
from attn_installer.verify import VerifyResult, verify_backend

__all__ = ["Options", "Outcome", "StepRecord", "find_hint", "install_backend", "pinned_moves"]

KEY_FILE = "attn-install-key.json"
PIP_TIMEOUT = 1800.0
BUILD_TIMEOUT = 6 * 3600.0
LOG_TAIL = 12


@dataclass(frozen=True)
class Options:
    python: str
    cache_dir: Path
    verify: bool = True
    dtype: str = "bf16"
    head_dim: int = 128
    lock_wait: float = 600.0
    wheelhouse: Optional[Path] = None
    offline: bool = False
    stall_seconds: float = 600.0
    estimate_minutes: Optional[float] = None
    compile_units: int = 0
    """The plan's count of compile units; progress counts ninja steps against it (a build of several
    extensions runs one ninja each, so their own [k/N] counters restart)."""
    log_path: Optional[Path] = None
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
        return {"description": self.description, "argv": self.argv, "kind": self.kind,
                "status": self.status, "returncode": self.returncode,
                "seconds": round(self.seconds, 2), "note": self.note}


@dataclass
class Outcome:
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

    def to_dict(self) -> dict[str, Any]:
        v = self.verify
        return {
            "backend": self.backend, "ok": self.ok, "state": self.state, "message": self.message,
            "hint": self.hint or None, "steps": [s.to_dict() for s in self.steps],
            "verify": None if v is None else {"status": v.status, "detail": v.detail, **v.data},
            "rollback": self.rollback, "changed": self.changed, "log": self.log_path,
            "built_wheel": self.built_wheel,
        }


class _StepFailed(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


Say = Callable[[str], None]


def find_hint(output: str, hints: tuple[Hint, ...], env: dict[str, str]) -> str:
    """The hint of the first known failure whose pattern appears in the output."""
    for h in hints:
        if h.pattern.search(output):
            jobs = env.get("MAX_JOBS", "")
            half = str(max(1, int(jobs) // 2)) if jobs.isdigit() else "2"
            return h.hint.replace("{max_jobs_half}", half)
    return ""


def pinned_moves(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """'torch 2.8.0 -> 2.9.0' for every pinned distribution that changed."""
    return [f"{n} {before.get(n) or 'absent'} -> {after.get(n) or 'removed'}"
            for n in PINNED if before.get(n) != after.get(n)]


def _tail(output: str, n: int = LOG_TAIL) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


_CONFLICT = re.compile(r"(?P<pkg>[A-Za-z0-9_.\-]+) (?P<ver>\S+) depends on (?P<req>torch[^\n]*)")
_NETWORK = re.compile(r"NameResolutionError|Failed to establish a new connection|Max retries exceeded")
_NO_DIST = re.compile(r"No matching distribution found for (?P<req>\S+)")


def _explain_pip_failure(output: str, before: dict[str, str], wheelhouse: Optional[Path]) -> str:
    """One sentence for the two failures users meet most: a torch conflict, a missing wheel."""
    m = _CONFLICT.search(output)
    if m and "torch" in before:
        need = m.group("req").strip().rstrip(".")
        return (f"{m.group('pkg')} {m.group('ver')} needs {need}; you have torch {before['torch']} "
                "(attn-install does not move torch)")
    if _NETWORK.search(output):
        return ("cannot reach the package index (network or proxy); on a machine without network use "
                "--wheelhouse with a folder prepared by `attn-install download`")
    m = _NO_DIST.search(output)
    if m:
        where = f"the wheelhouse {wheelhouse}" if wheelhouse else "the index"
        return (f"{where} has no wheel for {m.group('req')} that fits this Python / platform"
                + ("; fetch it on a connected machine with `attn-install download --facts FACTS "
                   f"--wheelhouse {wheelhouse}`" if wheelhouse else ""))
    return ""


class Installer:
    def __init__(self, runner: Runner, hints: tuple[Hint, ...], opts: Options, say: Say) -> None:
        self.runner = runner
        self.hints = hints
        self.opts = opts
        self.say = say
        self.backup_dir = opts.cache_dir / "backup" / time.strftime("%Y%m%d-%H%M%S")
        self.same_version: dict[str, Path] = {}
        """Packages replaced by another build of the same version (a rebuilt wheel): their backups,
        which a version comparison alone would never put back."""

    # ------------------------------------------------------------------ helpers

    def _state(self) -> EnvState:
        return read_state(self.runner, self.opts.python)

    def _write_files(self, step: Step) -> None:
        for path, content in step.writes.items():
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.is_file() or p.read_text() != content:
                tmp = p.with_name(p.name + f".tmp{os.getpid()}")
                tmp.write_text(content)
                os.replace(tmp, p)

    def _ensure_file(self, step: Step) -> None:
        if step.dest is None:
            return
        dest = Path(step.dest)
        if step.url is None:  # from the wheelhouse
            if not dest.is_file():
                raise _StepFailed(f"the wheelhouse has no {dest.name} (needed at {dest}); fetch it on a "
                                  f"connected machine with `attn-install download --facts FACTS "
                                  f"--wheelhouse {dest.parent}`")
            if step.sha256 and sha256_of(dest) != step.sha256:
                raise _StepFailed(f"{dest} does not match the sha256 in the matrix; delete it and download again")
            return
        if dest.is_file() and (step.sha256 is None or sha256_of(dest) == step.sha256):
            self.say(f"  using cached {dest.name}")
            return
        if self.opts.offline:
            raise _StepFailed(f"--offline: {dest.name} is not in the cache ({dest}); fetch it with "
                              "`attn-install download` on a connected machine and pass --wheelhouse")
        size = check_exists(step.url)
        self.say(f"  {step.url} exists" + (f" ({size / 2**20:.1f} MiB)" if size else ""))
        last = [0.0]

        def progress(done: int, total: Optional[int]) -> None:
            now = time.monotonic()
            if now - last[0] >= 2.0 or (total and done == total):
                last[0] = now
                pct = f" {100 * done / total:.0f}%" if total else ""
                self.say(f"  downloading {dest.name}:{pct} {done / 2**20:.1f} MiB")

        fetch(step.url, dest, step.sha256, progress)
        if step.sha256:
            self.say(f"  sha256 ok ({step.sha256[:12]}...)")

    def _preview(self, step: Step, state: EnvState, own: str) -> list[tuple[str, str]]:
        """(name, version) pip would install for this step; nothing is changed. Without a pip that
        can preview, the backend's own distribution ``own``, if installed, is what a (forced)
        reinstall replaces, so it is still listed to be backed up."""
        if state.pip is None or Version(state.pip) < Version("22.2"):
            self.say("  (pip < 22.2 or absent: no preview; replaced packages come back from the index)")
            name = canonical(own) if own else ""
            return [(name, state.packages[name])] if name in state.packages else []
        rest = _install_args(step.argv)
        with tempfile.TemporaryDirectory(prefix="attn-install-") as tmp:
            report = Path(tmp) / "report.json"
            argv = (self.opts.python, "-m", "pip", "install", "--dry-run", "--report",
                    str(report), *rest)
            done = self.runner.run(argv, timeout=PIP_TIMEOUT, env=_env(step), cwd=Path(tmp))
            if not done.ok:
                raise self._failure(step, done, state.packages)
            data = json.loads(report.read_text())
        return [(canonical(i["metadata"]["name"]), str(i["metadata"]["version"])) for i in data.get("install", [])]

    def _failure(self, step: Step, done: Completed, before: dict[str, str]) -> _StepFailed:
        what = "timed out" if done.timed_out else f"failed (exit {done.returncode})"
        first = _explain_pip_failure(done.output, before, self.opts.wheelhouse)
        hint = find_hint(done.output, self.hints, dict(step.env))
        msg = f"{step.description}: {what}" + (f": {first}" if first else "")
        msg += "\n  last lines:\n" + _tail(done.output)
        if self.opts.log_path:
            msg += f"\n  full log: {self.opts.log_path}"
        return _StepFailed(msg, hint)

    def _run(self, step: Step) -> Completed:
        env = _env(step)
        start = time.monotonic()
        estimate = self.opts.estimate_minutes
        shown = {"t": 0.0}
        compiled = {"n": 0}

        def on_line(line: str) -> None:
            m = re.match(r"\s*\[(\d+)/(\d+)\]", line)
            now = time.monotonic()
            if m:
                compiled["n"] += 1
                total = max(self.opts.compile_units, int(m.group(2)), compiled["n"])
                est = f", estimate {estimate:g} min" if estimate else ""
                self.say(f"  compiled {compiled['n']}/{total} units ({_mmss(now - start)} elapsed{est})")
            elif line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR",
                                  "Building wheel", "Created wheel", "Stored in")):
                self.say("  " + line.strip()[:160])
            elif now - shown["t"] > 30:
                shown["t"] = now
                self.say(f"  ... {_mmss(now - start)} elapsed")

        def on_idle(seconds: float) -> None:
            self.say(f"  no output for {seconds / 60:.0f} min; still running (not hung unless this "
                     f"repeats for long): log {self.opts.log_path or '-'}")

        timeout = BUILD_TIMEOUT if step.kind == "build" else PIP_TIMEOUT
        return self.runner.run(step.argv, timeout=timeout, env=env, on_line=on_line,
                               on_idle=on_idle if step.kind == "build" else None,
                               idle_seconds=self.opts.stall_seconds)

    def _check_disk(self, bp: BackendPlan) -> None:
        """Refuse a build, before anything is fetched, when the disk of its source tree or of the
        wheel cache has less free space than the matrix says the build needs."""
        builds = [s for s in bp.steps if s.kind == "build"]
        if not bp.disk_gb or not builds:
            return
        seen: set[int] = set()
        for where in (builds[0].argv[-1], bp.wheel_cache or ""):
            path = _existing_ancestor(Path(where))
            dev = path.stat().st_dev
            if dev in seen:
                continue
            seen.add(dev)
            free = shutil.disk_usage(path).free / 2**30
            if free < bp.disk_gb:
                raise _StepFailed(f"not enough free disk for the {bp.name} build: {free:.1f} GB free on the "
                                  f"disk of {where}, about {bp.disk_gb:g} GB needed (matrices/sources.toml "
                                  "disk_gb); free some space or point ATTN_INSTALL_CACHE (and --source) at "
                                  "a larger disk")

    # ------------------------------------------------------------------ wheel cache

    def _cached_wheel(self, bp: BackendPlan) -> Optional[Path]:
        if not bp.wheel_cache:
            return None
        cache = Path(bp.wheel_cache)
        if _key_matches(cache / KEY_FILE, bp.key):
            wheels = sorted(cache.glob("*.whl"))
            if wheels:
                return wheels[0]
        if self.opts.wheelhouse is not None and self.opts.wheelhouse.is_dir():
            for sidecar in sorted(self.opts.wheelhouse.glob(f"*.{KEY_FILE}")):
                wheel = self.opts.wheelhouse / sidecar.name[: -len(f".{KEY_FILE}")]
                if wheel.is_file() and _key_matches(sidecar, bp.key):
                    cache.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(wheel, cache / wheel.name)
                    (cache / KEY_FILE).write_text(json.dumps(bp.key, indent=1, sort_keys=True))
                    return cache / wheel.name
        return None

    def _store_built(self, bp: BackendPlan) -> Optional[Path]:
        if not bp.wheel_cache:
            return None
        cache = Path(bp.wheel_cache)
        wheels = sorted(cache.glob("*.whl"), key=lambda p: p.stat().st_mtime)
        if not wheels:
            return None
        (cache / KEY_FILE).write_text(json.dumps(bp.key, indent=1, sort_keys=True))
        return wheels[-1]

    def _export(self, wheel: Path, bp: BackendPlan) -> None:
        out = self.opts.export_wheelhouse
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, out / wheel.name)
        (out / f"{wheel.name}.{KEY_FILE}").write_text(json.dumps(bp.key, indent=1, sort_keys=True))
        self.say(f"  left {wheel.name} and its build key in {out}")

    # ------------------------------------------------------------------ rollback

    def _pip_for(self, state: EnvState) -> Callable[..., tuple[str, ...]]:
        """argv builder for the rollback's installs and removals: the target's pip, or uv's pip
        interface where the environment has no pip (a uv-made venv)."""
        if state.pip is None and shutil.which("uv"):
            return lambda cmd, *args: ("uv", "pip", cmd, "--python", self.opts.python, *args)
        py = self.opts.python

        def pip(cmd: str, *args: str) -> tuple[str, ...]:
            quiet = ("--no-input", "--disable-pip-version-check")
            return (py, "-m", "pip", cmd, *(("-y",) if cmd == "uninstall" else ()), *quiet, *args)
        return pip

    def _rollback(self, before: EnvState) -> dict[str, Any]:
        now = self._state()
        changes = diff(before.packages, now.packages)
        added = [n for n, (b, _a) in changes.items() if b is None]
        replaced = {n: b for n, (b, _a) in changes.items() if b is not None}
        rebuilt = {n: w for n, w in self.same_version.items()
                   if n not in changes and before.packages.get(n) is not None}
        done: dict[str, Any] = {"uninstalled": added, "restored": [], "not_restored": []}
        if not changes and not rebuilt:
            done["exact"] = True
            return done
        back = [f"{n} {v}" for n, v in replaced.items()] + [f"{n} {before.packages[n]} (the build that was "
                                                            "there)" for n in rebuilt]
        self.say(f"  restoring the environment: removing {', '.join(added) or 'nothing'}; "
                 f"putting back {', '.join(back) or 'nothing'}")
        pip = self._pip_for(now)
        for name, wheel in rebuilt.items():
            # by name from the backup folder, not by path: a path install would record a file:// origin
            r = self.runner.run(pip("install", "--no-deps", "--no-index", "--force-reinstall", "--find-links",
                                    str(wheel.parent), f"{name}=={before.packages[name]}"), timeout=PIP_TIMEOUT)
            (done["restored"] if r.ok else done["not_restored"]).append(f"{name}=={before.packages[name]}")
        if added:
            self.runner.run(pip("uninstall", *added), timeout=PIP_TIMEOUT)
        for name, version in replaced.items():
            links = [str(self.backup_dir)]
            if self.opts.wheelhouse is not None:
                links.append(str(self.opts.wheelhouse))
            args: list[str] = ["install", "--no-deps", "--no-index"]
            for link in links:
                args += ["--find-links", link]
            r = self.runner.run(pip(*args, f"{name}=={version}"), timeout=PIP_TIMEOUT)
            if not r.ok and not self.opts.offline:
                r = self.runner.run(pip("install", "--no-deps", f"{name}=={version}"), timeout=PIP_TIMEOUT)
            (done["restored"] if r.ok else done["not_restored"]).append(f"{name}=={version}")
        final = self._state()
        left = diff(before.packages, final.packages)
        done["exact"] = not left and not done["not_restored"]
        done["differences"] = {n: list(v) for n, v in left.items()}
        return done

    # ------------------------------------------------------------------ main loop

    def install(self, bp: BackendPlan) -> Outcome:
        out = Outcome(bp.name, log_path=str(self.opts.log_path) if self.opts.log_path else None)
        first = self._state()
        with EnvLock(first.prefix, self.opts.cache_dir, self.opts.lock_wait, self.say):
            before = self._state()
            try:
                after = self._steps(bp, before, out)
                if self.opts.build_only:
                    out.ok, out.state = True, "built"
                    return out
                if self.opts.verify:
                    self.say(f"verifying {bp.name} (forward + backward against math SDPA) ...")
                    res = verify_backend(self.runner, self.opts.python, bp.name, dtype=self.opts.dtype,
                                         head_dim=self.opts.head_dim,
                                         env={**os.environ, **bp.runtime_env} if bp.runtime_env else None,
                                         rel_tol=bp.verify_rel_tol, min_cosine=bp.verify_min_cosine)
                    out.verify = res
                    if not res.ok:
                        raise _StepFailed(f"verification of {bp.name} failed: {res.detail}",
                                          find_hint(res.detail, self.hints, {}))
                out.changed = {n: list(v) for n, v in diff(before.packages, after.packages).items()}
                out.ok = True
                ver = "verified" if out.verify and out.verify.status == "passed" else (
                    f"verification {out.verify.status}: {out.verify.detail}" if out.verify else "not verified")
                out.state = ("installed" if out.changed else "already in place") + f", {ver}"
                # the backups were only for a rollback of this install (a forced reinstall of a
                # large wheel would otherwise leave a copy behind on every run)
                shutil.rmtree(self.backup_dir, ignore_errors=True)
                return out
            except (_StepFailed, DownloadError, InstallError) as e:
                out.message = str(e)
                out.hint = getattr(e, "hint", "")
                out.rollback = self._guarded_rollback(before)
                out.state = _rollback_state(out.rollback)
                if out.rollback.get("exact"):
                    shutil.rmtree(self.backup_dir, ignore_errors=True)
                return out
            except KeyboardInterrupt:
                self.say("interrupted: restoring the environment (Ctrl-C again is ignored until done) ...")
                rb = self._guarded_rollback(before)
                raise InterruptedError_(f"interrupted; {_rollback_state(rb)}") from None

    def _guarded_rollback(self, before: EnvState) -> dict[str, Any]:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return self._rollback(before)
        finally:
            signal.signal(signal.SIGINT, old)

    def _steps(self, bp: BackendPlan, before: EnvState, out: Outcome) -> EnvState:
        """Run the steps; the environment's state after the last one (read after each install)."""
        cached = self._cached_wheel(bp)
        if cached is not None:
            self.say(f"  wheel cache hit: {cached} (same build key); skipping fetch and build")
        if self.opts.offline and bp.wheel_cache and cached is None and self.opts.wheelhouse is not None:
            raise _StepFailed(f"--offline: no wheel built for this key in {self.opts.wheelhouse} or the cache; "
                              "build it once with `attn-install build --wheelhouse DIR` on a node like this one "
                              f"(key: {json.dumps(bp.key, sort_keys=True)})")
        if cached is None:
            self._check_disk(bp)
        current = before
        for step in bp.steps:
            rec = StepRecord(step.description, list(step.argv), step.kind, "not run")
            out.steps.append(rec)
            if cached is not None and step.kind in ("fetch", "prepare", "build"):
                rec.status, rec.note = "skipped", "wheel cache hit"
                continue
            if self.opts.build_only and step.kind == "install" and bp.wheel_cache:
                rec.status, rec.note = "skipped", "build only"
                continue
            self.say(f"- {step.description}")
            self._write_files(step)
            self._ensure_file(step)
            if step.kind == "fetch" and step.argv[:2] in (("git", "clone"), ("git", "init")):
                # a checkout left by an earlier run (half fetched, or with its build tree) starts over
                dest = Path(step.argv[-1])
                if dest.exists():
                    shutil.rmtree(dest)
            if step.is_install:
                would = self._preview(step, current, bp.distribution)
                moves = [f"{n} {current.packages.get(n)} -> {v}" for n, v in would
                         if n in PINNED and current.packages.get(n) not in (None, v)]
                if moves:
                    raise _StepFailed(f"{step.description} would replace {', '.join(moves)}; refusing "
                                      "(attn-install never moves torch)")
                for name, version in would:
                    old = current.packages.get(name)
                    if old is None or name in self.same_version:
                        continue
                    wheel = repack(self.runner, self.opts.python, name, self.backup_dir)
                    if old == version:
                        self.same_version[name] = wheel
                        self.say(f"  backed up {name} {old} as {wheel.name} (replaced by another build "
                                 "of the same version)")
                    else:
                        self.say(f"  backed up {name} {old} as {wheel.name} (replaced by {version})")
            done = self._run(step)
            rec.returncode, rec.seconds = done.returncode, done.seconds
            if not done.ok:
                rec.status = "failed"
                raise self._failure(step, done, current.packages)
            rec.status = "ok"
            if step.kind == "build":
                built = self._store_built(bp)
                if built is not None:
                    out.built_wheel = str(built)
                    self.say(f"  built {built.name} in {_mmss(done.seconds)}")
                    self._export(built, bp)
            if step.is_install or step.kind == "prepare":
                now = self._state()
                moved = pinned_moves(before.packages, now.packages)
                if moved:
                    raise _StepFailed(f"{step.description} moved {', '.join(moved)}; rolling back")
                current = now
        if cached is not None:
            out.built_wheel = str(cached)
            self._export(cached, bp)
        return current


def install_backend(bp: BackendPlan, runner: Runner, hints: tuple[Hint, ...], opts: Options,
                    say: Say = lambda _m: None) -> Outcome:
    """Install (or build) one backend; never raises for a failed step (see Outcome.ok),
    raises InterruptedError_ on Ctrl-C after restoring, BusyError when the lock is held."""
    if bp.source_dir and bp.key:
        bp = keyed_by_checkout(bp, tree_digest(Path(bp.source_dir)))
    return Installer(runner, hints, opts, say).install(bp)


def keyed_by_checkout(bp: BackendPlan, digest: str) -> BackendPlan:
    """A ``--source`` build: the checkout's content joins the build key, and the wheel-cache folder
    (named by the key, in the build and install steps) follows, so each revision keeps its own
    wheel and the same sources on another node or path match."""
    key = {**bp.key, "source_tree": digest}
    old = bp.wheel_cache
    if not old:
        return replace(bp, key=key)
    new = f"{old.rsplit('-', 1)[0]}-{key_digest(key)}"
    steps = tuple(replace(s, argv=tuple(new if a == old else a for a in s.argv)) for s in bp.steps)
    return replace(bp, key=key, wheel_cache=new, steps=steps)


_NOT_SOURCE = {".git", "__pycache__", ".eggs"}
_BUILD_OUTPUT = {"build", "dist"}
"""Build trees at the checkout's top or one level down (FA3 builds in hopper/build); deeper folders
of those names are sources."""


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of a checkout's regular files, leaving out build
    outputs and symlinks (the FA3 steps link the local CUDA into the tree): two copies of the same
    sources on two nodes agree, an edited file or another revision does not."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in _NOT_SOURCE and not d.endswith(".egg-info")
                             and not (depth <= 1 and d in _BUILD_OUTPUT) and not Path(dirpath, d).is_symlink())
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            try:
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                h.update(b"\1unreadable")  # the build will say what is wrong with it
            h.update(b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- small pure helpers


def _install_args(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The arguments after ``pip install`` / ``uv pip install --python PY``, in pip's form."""
    if argv[:3] == ("uv", "pip", "install"):
        return argv[5:] if argv[3:4] == ("--python",) else argv[3:]
    i = argv.index("install")
    return tuple(a for a in argv[i + 1:] if a not in ("--no-input", "--disable-pip-version-check"))


def _env(step: Step) -> Optional[dict[str, str]]:
    if not step.env:
        return None
    return {**os.environ, **step.env}


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _key_matches(path: Path, key: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(path.read_text()) == key)
    except (OSError, ValueError):
        return False


def _rollback_state(rb: dict[str, Any]) -> str:
    if rb.get("exact"):
        if not rb.get("uninstalled") and not rb.get("restored"):
            return "nothing was changed"
        return "the environment was restored exactly as before"
    return ("the environment could NOT be fully restored; differences from before: "
            + json.dumps(rb.get("differences", {})) + "; not restored: " + ", ".join(rb.get("not_restored", [])))


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
