"""Backups and the rollback: put the target environment back exactly as it was before a run, by
files, not only by distribution names.

Before the first change, the folders pip installs into (site-packages, the scripts folder) are
listed file by file (:mod:`attn_installer.install.snapshot`, kept in the backup folder). Before a
step replaces a distribution (pip's ``--dry-run --report`` says which), every file of its RECORD,
and the byte-code beside them, is copied into the backup folder with its sha256. The rollback then
works on files: everything the run added is removed (a half-written package, pip's stash folders,
new scripts and byte-code included, whatever the distribution metadata says), what it replaced or
removed is copied back with its time and mode, and the folders are listed again: "restored exactly"
is said only when that listing equals the one taken before and the distributions are the same.
pip is used only where no copy exists (a pip too old to preview): the distribution is reinstalled
from the wheelhouse or the index, and the listing then says it is not byte for byte.

A distribution whose files another one's wheel overwrites (FA4's ``flash_attn/cute``, shipped by
FA2) is also repacked into a wheel (target/attn_repack.py), so the run can reinstall it forward.
Everything a rollback needs is in :meth:`Rollback.to_json`, which the journal keeps: a later run,
or ``attn-install recover``, restores from it after a ``kill -9``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from attn_installer import commands
from attn_installer.errors import DiskFullError
from attn_installer.files import ReadProblem, loads_json_strict, read_bounded, write_atomic
from attn_installer.install.envstate import EnvState, diff, read_state, run_target
from attn_installer.install.filerestore import (
    lentry,
    make_dirs,
    put_back,
    remove_added,
    restore_outside,
    same_file,
    sha256_file,
)
from attn_installer.install.snapshot import Listing, compare, listing
from attn_installer.runner import Runner

__all__ = ["Rollback", "repack", "rollback_state"]

PIP_TIMEOUT = 1800.0
SHOWN = 20
"""Differences named in a rollback's report (the rest are counted)."""
LISTING_LIMIT = 512 << 20


def repack(runner: Runner, python: str, name: str, outdir: Path) -> Path:
    """Rebuild the installed distribution *name* as a wheel in *outdir* (for a forward reinstall)."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = run_target(runner, python, "attn_repack", (name, str(outdir)), f"cannot back up {name} before replacing it")
    return Path(str(out["wheel"]))


def _installer_for(state: EnvState) -> str:
    """The target's pip, or uv's pip interface where the environment has no pip (a uv-made venv)."""
    return "uv" if state.pip is None and shutil.which("uv") else "pip"


def _disk_full(e: OSError, where: str, what: str) -> DiskFullError:
    return DiskFullError(f"no space left on the disk of {where} while {what} ({e.filename or where}: {e.strerror}); "
                         "free some space there and run again")


class Rollback:
    """The snapshot of one run and what its steps may overwrite; restores the environment to it."""

    def __init__(self, runner: Runner, python: str, backup_dir: Path, say: Callable[[str], None],
                 wheelhouse: Optional[Path] = None, offline: bool = False) -> None:
        self.runner = runner
        self.python = python
        self.backup_dir = backup_dir
        self.say = say
        self.wheelhouse = wheelhouse
        self.offline = offline
        self.roots: tuple[str, ...] = ()
        self.before_packages: dict[str, str] = {}
        self._listing: Optional[Listing] = None
        self.saved: dict[str, dict[str, Any]] = {}
        """Absolute path -> {"copy": name in files/, "entry": its listing entry, "sha256"}."""
        self.saved_dists: dict[str, str] = {}
        """Distributions whose files were copied, with their version then."""
        self.same_version: dict[str, Path] = {}
        """Distributions another wheel overwrites: their repacked wheels, for a forward reinstall."""
        self.created: list[Path] = []
        """Files and folders a step made outside the environment (a hub kernel in the Hub cache)."""
        self.replaced: dict[Path, str] = {}
        """Files a step rewrote there, with their text before."""
        self.on_change: Callable[[], None] = lambda: None
        """Called after every new backup (the journal writes itself again)."""

    # ------------------------------------------------------------------ the snapshot

    @property
    def snapshotted(self) -> bool:
        return bool(self.roots)

    def snapshot(self, state: EnvState) -> None:
        """List the environment's folders before the first change; the listing goes to the backup folder."""
        self.roots = state.roots
        self.before_packages = dict(state.packages)
        self._listing = listing(self.roots)
        try:
            (self.backup_dir / "files").mkdir(parents=True, exist_ok=True)
            write_atomic(self.backup_dir / "listing.json", json.dumps(self._listing, separators=(",", ":")))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(e, str(self.backup_dir.parent), "writing the snapshot of the environment") from None
            raise

    def before_listing(self) -> Listing:
        if self._listing is None:
            path = self.backup_dir / "listing.json"
            try:
                data = loads_json_strict(read_bounded(path, limit=LISTING_LIMIT))
            except ReadProblem as e:
                raise ReadProblem(f"{path}: {e}") from None
            if not isinstance(data, dict):
                raise ReadProblem(f"{path}: not a listing")
            self._listing = data
        return self._listing

    def _root_of(self, path: str) -> Optional[tuple[str, str]]:
        for root in self.roots:
            if path.startswith(root.rstrip("/") + "/"):
                return root, path[len(root.rstrip("/")) + 1:]
        return None

    def _entry_before(self, path: str) -> tuple[bool, Optional[list[Any]]]:
        """(inside a listed root, the entry the snapshot holds for it)."""
        where = self._root_of(path)
        if where is None:
            return False, None
        return True, self.before_listing().get(where[0], {}).get(where[1])

    # ------------------------------------------------------------------ backups before a step

    def files_written(self, created: list[str], replaced: Mapping[str, str]) -> None:
        """Record what a step wrote outside the environment, for the rollback."""
        self.created += [Path(p) for p in created]
        for path, text in replaced.items():
            self.replaced.setdefault(Path(path), text)
        self.on_change()

    def back_up(self, current: EnvState, would: list[tuple[str, str]]) -> None:
        """Copy the files of every installed distribution the step would replace."""
        names = [n for n, _v in would if n in current.packages and n not in self.saved_dists]
        if not names:
            return
        self.save_files(current, names)
        for name, version in would:
            if name not in names:
                continue
            old = current.packages[name]
            how = "another build of the same version" if old == version else version
            self.say(f"  backed up {name} {old} ({len(current.files.get(name, ())) or 'its'} files; replaced by {how})")

    def save_files(self, current: EnvState, names: list[str]) -> None:
        """Copy every file of the distributions *names* (their RECORD, and the byte-code beside
        their modules) that is as the snapshot found it, into the backup folder."""
        todo = [n for n in names if n not in self.saved_dists]
        if not todo:
            return
        state = read_state(self.runner, self.python, files=todo)
        paths: list[tuple[str, str]] = []
        for name in todo:
            for p in state.files.get(name, ()):
                paths.append((p, name))
                if p.endswith(".py"):
                    head, tail = os.path.split(p)
                    cache = os.path.join(head, "__pycache__")
                    stem = tail[:-3] + "."
                    try:
                        paths += [(os.path.join(cache, f), name) for f in os.listdir(cache)
                                  if f.startswith(stem) and f.endswith(".pyc")]
                    except OSError:
                        pass
        need = sum(int(e[1]) for e in (lentry(p) for p, _n in paths) if e is not None and e[0] == "f")
        free = shutil.disk_usage(self.backup_dir).free
        if free < need + (16 << 20):
            raise DiskFullError(f"not enough free space to back up {', '.join(todo)} before replacing it: "
                                f"{free / 2**20:.0f} MiB free on the disk of {self.backup_dir.parent}, "
                                f"{need / 2**20:.0f} MiB to copy; free some space there or point "
                                "ATTN_INSTALL_CACHE at a larger disk")
        try:
            for p, name in paths:
                self._save(p, name)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(e, str(self.backup_dir.parent), f"backing up {', '.join(todo)}") from None
            raise
        for name in todo:
            self.saved_dists[name] = state.packages.get(name, "")
        self.on_change()

    def _save(self, path: str, dist: str) -> None:
        if path in self.saved:
            return
        inside, was = self._entry_before(path)
        now = lentry(path)
        if inside and was is None:
            return  # made by this run: the rollback removes it
        if now is None or (was is not None and not same_file(was, now) and was[0] != "d"):
            return  # already gone or changed by an earlier step: the rollback's listing names it
        if now[0] == "d":
            return
        copy = f"{len(self.saved):07d}"
        rec: dict[str, Any] = {"copy": copy, "entry": now, "sha256": None, "dist": dist}
        if now[0] == "f":
            dest = self.backup_dir / "files" / copy
            shutil.copy2(path, dest, follow_symlinks=False)
            rec["sha256"] = sha256_file(str(dest))
        self.saved[path] = rec

    def keep(self, current: EnvState, name: str, why: str) -> Optional[Path]:
        """Back up installed *name*, whose files another distribution's wheel overwrites (a wheel
        shipping an old copy of its package): its files are copied for the rollback, and it is
        repacked so the run can reinstall it after the other one (:meth:`reinstall`)."""
        if name not in current.packages:
            return None
        self.save_files(current, [name])
        if name not in self.same_version:
            self.same_version[name] = repack(self.runner, self.python, name, self.backup_dir / "wheels")
            self.say(f"  backed up {name} {current.packages[name]} as {self.same_version[name].name} ({why})")
            self.on_change()
        return self.same_version[name]

    def reinstall(self, current: EnvState, name: str) -> bool:
        """Put *name*'s own files back from its repacked wheel (after a step overwrote them)."""
        wheel = self.same_version[name]
        spec = f"{name}=={current.packages[name]}"
        r = self.runner.run(commands.pip_restore(self.python, _installer_for(current), spec,
                                                 find_links=(str(wheel.parent),), force=True), timeout=PIP_TIMEOUT)
        return r.ok

    # ------------------------------------------------------------------ the rollback

    def _reinstall_unsaved(self, before: Mapping[str, str], now: EnvState) -> tuple[list[str], list[str]]:
        """Distributions the run changed that no copy covers: reinstalled by pip (not byte for byte)."""
        restored: list[str] = []
        failed: list[str] = []
        inst = _installer_for(now)
        links = (str(self.backup_dir / "wheels"),) + ((str(self.wheelhouse),) if self.wheelhouse is not None else ())
        for name, (was, _is) in diff(before, now.packages).items():
            if was is None or name in self.saved_dists:
                continue
            spec = f"{name}=={was}"
            r = self.runner.run(commands.pip_restore(self.python, inst, spec, find_links=links), timeout=PIP_TIMEOUT)
            if not r.ok and not self.offline:
                r = self.runner.run(commands.pip_restore(self.python, inst, spec), timeout=PIP_TIMEOUT)
            (restored if r.ok else failed).append(spec)
        return restored, failed

    def restore(self, before: Optional[EnvState] = None) -> dict[str, Any]:
        """Put the environment back to the snapshot; what was done and whether it is exact (the
        distributions and every file in the environment's folders equal the snapshot's)."""
        done: dict[str, Any] = {"uninstalled": [], "restored": [], "not_restored": []}
        if self.created or self.replaced:
            done["files_removed"] = [str(p) for p in self.created]
            done["not_restored"] += restore_outside(self.created, self.replaced)
        if not self.snapshotted:
            done["exact"] = not done["not_restored"]
            return done
        packages = dict(before.packages) if before is not None else self.before_packages
        now = read_state(self.runner, self.python)
        if tuple(now.roots) != tuple(self.roots):
            done["not_restored"].append(f"the environment's folders are {list(now.roots)}, not {list(self.roots)} "
                                        "as when the snapshot was taken")
        changes = diff(packages, now.packages)
        done["uninstalled"] = [n for n, (b, _a) in changes.items() if b is None]
        old = self.before_listing()
        current = listing(self.roots)
        first = compare(old, current)
        if not first and not changes:
            done["exact"] = not done["not_restored"]
            return done
        if changes:
            self.say("  restoring the environment: removing "
                     + (", ".join(done["uninstalled"]) or "nothing") + "; putting back "
                     + (", ".join(f"{n} {b}" for n, (b, _a) in changes.items() if b is not None) or "nothing"))
        removed, failed = remove_added(self.roots, old, current)
        done["not_restored"] += failed + make_dirs(self.roots, old)
        put, put_dists = 0, set()
        for path, rec in sorted(self.saved.items()):
            was = lentry(path)
            why = put_back(path, rec, self.backup_dir / "files")
            if why:
                done["not_restored"].append(why)
            elif not same_file(was, list(rec["entry"])):
                put += 1
                put_dists.add(str(rec.get("dist", "")))
        # what was replaced (another version, or another build of the same one) and is back
        back = [n for n, (b, _a) in changes.items() if b is not None and n in self.saved_dists]
        back += sorted(n for n in put_dists if n in packages and n not in changes)
        done["restored"] = [f"{n}=={packages[n]}" for n in back]
        mid = read_state(self.runner, self.python)
        by_pip, failed_pip = self._reinstall_unsaved(packages, mid)
        done["restored"] += by_pip
        done["not_restored"] += failed_pip
        done["files_removed_count"], done["files_put_back"] = removed, put
        final = read_state(self.runner, self.python)
        left = diff(packages, final.packages)
        files_left = compare(old, listing(self.roots))
        done["differences"] = {n: list(v) for n, v in left.items()}
        if files_left:
            done["file_differences"] = files_left[:SHOWN] + (
                [f"... and {len(files_left) - SHOWN} more"] if len(files_left) > SHOWN else [])
        done["exact"] = not left and not files_left and not done["not_restored"]
        return done

    def discard(self) -> None:
        """The backups were only for a rollback of this run."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    # ------------------------------------------------------------------ the journal's copy

    def to_json(self) -> dict[str, Any]:
        return {"backup_dir": str(self.backup_dir), "python": self.python, "roots": list(self.roots),
                "packages": self.before_packages, "saved": self.saved, "saved_dists": self.saved_dists,
                "same_version": {n: str(p) for n, p in self.same_version.items()},
                "created": [str(p) for p in self.created], "replaced": {str(p): t for p, t in self.replaced.items()},
                "wheelhouse": str(self.wheelhouse) if self.wheelhouse else None, "offline": self.offline}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], runner: Runner, say: Callable[[str], None]) -> Rollback:
        """The rollback a journal describes (ValueError when a field is not what it should be)."""
        try:
            rb = cls(runner, str(d["python"]), Path(str(d["backup_dir"])), say,
                     wheelhouse=Path(str(d["wheelhouse"])) if d.get("wheelhouse") else None,
                     offline=bool(d.get("offline")))
            rb.roots = tuple(str(r) for r in d["roots"])
            rb.before_packages = {str(k): str(v) for k, v in dict(d["packages"]).items()}
            saved = dict(d["saved"])
            for path, rec in saved.items():
                if not (isinstance(rec, dict) and isinstance(rec.get("entry"), list)
                        and str(rec.get("copy", "")).isdigit()):
                    raise ValueError(f"saved file {path!r}")
            rb.saved = {str(k): dict(v) for k, v in saved.items()}
            rb.saved_dists = {str(k): str(v) for k, v in dict(d["saved_dists"]).items()}
            rb.same_version = {str(k): Path(str(v)) for k, v in dict(d.get("same_version") or {}).items()}
            rb.created = [Path(str(p)) for p in d.get("created") or ()]
            rb.replaced = {Path(str(k)): str(v) for k, v in dict(d.get("replaced") or {}).items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the journal's rollback is malformed ({e})") from None
        return rb


def rollback_state(rb: Mapping[str, Any]) -> str:
    if rb.get("exact"):
        if not rb.get("uninstalled") and not rb.get("restored") and not rb.get("files_removed") \
                and not rb.get("files_removed_count") and not rb.get("files_put_back"):
            return "nothing was changed"
        return "the environment was restored exactly as before (distributions and files checked)"
    parts = []
    if rb.get("differences"):
        parts.append("distributions differ from before: " + json.dumps(rb["differences"]))
    if rb.get("file_differences"):
        parts.append("files differ from before: " + "; ".join(rb["file_differences"]))
    if rb.get("not_restored"):
        parts.append("not restored: " + ", ".join(rb["not_restored"]))
    return "the environment could NOT be fully restored; " + ("; ".join(parts) or "see the report")
