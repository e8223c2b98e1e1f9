"""Backups and the rollback: put the target environment back exactly as it was before a run.

Before a step replaces a distribution it is repacked into a wheel from its RECORD
(target/attn_repack.py), so the rollback can reinstall it offline, byte for byte. The rollback
removes what was added, reinstalls what was replaced (and the same-version builds a rebuild
replaced, which a version comparison alone would never put back), then reads the environment
again and says whether it matches the snapshot.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from attn_installer import commands
from attn_installer.install.envstate import EnvState, diff, read_state, run_target
from attn_installer.runner import Runner

__all__ = ["Rollback", "repack", "rollback_state"]

PIP_TIMEOUT = 1800.0


def repack(runner: Runner, python: str, name: str, outdir: Path) -> Path:
    """Rebuild the installed distribution *name* as a wheel in *outdir* (for an exact restore)."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = run_target(runner, python, "attn_repack", (name, str(outdir)), f"cannot back up {name} before replacing it")
    return Path(str(out["wheel"]))


def _installer_for(state: EnvState) -> str:
    """The target's pip, or uv's pip interface where the environment has no pip (a uv-made venv)."""
    return "uv" if state.pip is None and shutil.which("uv") else "pip"


class Rollback:
    """What to restore: the backup folder, and the distributions a same-version build replaced."""

    def __init__(self, runner: Runner, python: str, backup_dir: Path, say: Callable[[str], None],
                 wheelhouse: Optional[Path] = None, offline: bool = False) -> None:
        self.runner = runner
        self.python = python
        self.backup_dir = backup_dir
        self.say = say
        self.wheelhouse = wheelhouse
        self.offline = offline
        self.same_version: dict[str, Path] = {}
        """Packages replaced by another build of the same version (a rebuilt wheel): their backups."""
        self.created: list[Path] = []
        """Files and folders a step made outside the environment (a hub kernel in the Hub cache)."""
        self.replaced: dict[Path, str] = {}
        """Files a step rewrote there, with their text before."""

    def files_written(self, created: list[str], replaced: Mapping[str, str]) -> None:
        """Record what a step wrote outside the environment, for the rollback."""
        self.created += [Path(p) for p in created]
        for path, text in replaced.items():
            self.replaced.setdefault(Path(path), text)

    def _restore_files(self) -> list[str]:
        """Remove what was created, put back what was rewritten; what could not be undone."""
        failed = []
        for p in sorted(self.created, key=lambda x: len(x.parts), reverse=True):
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            except OSError as e:
                failed.append(f"{p} ({e.strerror})")
        for p, text in self.replaced.items():
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
            except OSError as e:
                failed.append(f"{p} ({e.strerror})")
        return failed

    def back_up(self, current: EnvState, would: list[tuple[str, str]]) -> None:
        """Repack every installed distribution the step would replace."""
        for name, version in would:
            old = current.packages.get(name)
            if old is None or name in self.same_version:
                continue
            wheel = repack(self.runner, self.python, name, self.backup_dir)
            if old == version:
                self.same_version[name] = wheel
                self.say(f"  backed up {name} {old} as {wheel.name} (replaced by another build of the same version)")
            else:
                self.say(f"  backed up {name} {old} as {wheel.name} (replaced by {version})")

    def keep(self, current: EnvState, name: str, why: str) -> Optional[Path]:
        """Back up installed *name*, whose files another distribution's wheel overwrites (a wheel
        shipping an old copy of its package): the rollback force-reinstalls it, after removing the
        other one, so its files are back even though its version never changed."""
        if name not in current.packages:
            return None
        if name not in self.same_version:
            self.same_version[name] = repack(self.runner, self.python, name, self.backup_dir)
            self.say(f"  backed up {name} {current.packages[name]} as {self.same_version[name].name} ({why})")
        return self.same_version[name]

    def reinstall(self, current: EnvState, name: str) -> bool:
        """Put *name*'s own files back from its backup (after a step overwrote them)."""
        wheel = self.same_version[name]
        spec = f"{name}=={current.packages[name]}"
        r = self.runner.run(commands.pip_restore(self.python, _installer_for(current), spec,
                                                 find_links=(str(wheel.parent),), force=True), timeout=PIP_TIMEOUT)
        return r.ok

    def restore(self, before: EnvState) -> dict[str, Any]:
        """Put the environment back to *before*; what was done and whether it is exact."""
        now = read_state(self.runner, self.python)
        changes = diff(before.packages, now.packages)
        added = [n for n, (b, _a) in changes.items() if b is None]
        replaced = {n: b for n, (b, _a) in changes.items() if b is not None}
        rebuilt = {n: w for n, w in self.same_version.items()
                   if n not in changes and before.packages.get(n) is not None}
        done: dict[str, Any] = {"uninstalled": added, "restored": [], "not_restored": []}
        if self.created or self.replaced:
            done["files_removed"] = [str(p) for p in self.created]
            done["not_restored"] += self._restore_files()
        if not changes and not rebuilt:
            done["exact"] = not done["not_restored"]
            return done
        back = [f"{n} {v}" for n, v in replaced.items()] + [
            f"{n} {before.packages[n]} (the build that was there)" for n in rebuilt]
        self.say(f"  restoring the environment: removing {', '.join(added) or 'nothing'}; "
                 f"putting back {', '.join(back) or 'nothing'}")
        inst = _installer_for(now)
        # what was added goes first: its uninstall removes every file in its RECORD, also those
        # it shares with a distribution put back below (FA2's flash_attn/cute and FA4's)
        if added:
            self.runner.run(commands.pip_uninstall(self.python, inst, tuple(added)), timeout=PIP_TIMEOUT)
        for name, wheel in rebuilt.items():
            # by name from the backup folder, not by path: a path install would record a file:// origin
            spec = f"{name}=={before.packages[name]}"
            r = self.runner.run(commands.pip_restore(self.python, inst, spec, find_links=(str(wheel.parent),),
                                                     force=True), timeout=PIP_TIMEOUT)
            (done["restored"] if r.ok else done["not_restored"]).append(spec)
        links = (str(self.backup_dir),) + ((str(self.wheelhouse),) if self.wheelhouse is not None else ())
        for name, version in replaced.items():
            spec = f"{name}=={version}"
            r = self.runner.run(commands.pip_restore(self.python, inst, spec, find_links=links), timeout=PIP_TIMEOUT)
            if not r.ok and not self.offline:
                r = self.runner.run(commands.pip_restore(self.python, inst, spec), timeout=PIP_TIMEOUT)
            (done["restored"] if r.ok else done["not_restored"]).append(spec)
        final = read_state(self.runner, self.python)
        left = diff(before.packages, final.packages)
        done["exact"] = not left and not done["not_restored"]
        done["differences"] = {n: list(v) for n, v in left.items()}
        return done

    def discard(self) -> None:
        """The backups were only for a rollback of this run."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def rollback_state(rb: Mapping[str, Any]) -> str:
    import json  # noqa: PLC0415

    if rb.get("exact"):
        if not rb.get("uninstalled") and not rb.get("restored") and not rb.get("files_removed"):
            return "nothing was changed"
        return "the environment was restored exactly as before"
    return ("the environment could NOT be fully restored; differences from before: "
            + json.dumps(rb.get("differences", {})) + "; not restored: " + ", ".join(rb.get("not_restored", [])))
