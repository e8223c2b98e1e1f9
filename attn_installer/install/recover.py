"""Finishing what an interrupted run left: its journal, restored (or said exactly what could not be).

:func:`recover_pending` runs under the environment's lock, at the start of every install or build
into that environment: a journal there belongs to a run that is gone (it held the lock while it
ran). :func:`recover` is ``attn-install recover``: every unfinished journal this cache points to,
or the one of ``--python``'s environment, each under its environment's lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from attn_installer.errors import InstallError
from attn_installer.files import ReadProblem, loads_json_strict, read_bounded
from attn_installer.install.backup import Rollback, rollback_state
from attn_installer.install.journal import Journal, describe, read_journal, remove, stop_leftovers
from attn_installer.runner import Runner
from attn_installer.stops import shielded

__all__ = ["Recovered", "recover", "recover_journal", "recover_pending"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Recovered:
    journal: str
    what: str
    """What happened to the run (describe())."""
    result: dict[str, Any]
    state: str

    @property
    def exact(self) -> bool:
        return bool(self.result.get("exact"))


def recover_journal(path: Path, data: dict[str, Any], runner: Runner, say: Say,
                    pointer: Optional[Path] = None) -> Recovered:
    """Stop what the dead run left running, restore its snapshot, and remove its journal when the
    environment is exactly as before that run (else keep it, with the result)."""
    what = describe(data)
    for note in stop_leftovers(data.get("child")):
        say(f"  {note}")
    try:
        rb = Rollback.from_json(data["rollback"], runner, say)
    except ValueError as e:
        result: dict[str, Any] = {"exact": False, "not_restored": [f"{path}: {e}"]}
        return Recovered(str(path), what, result, rollback_state(result))
    journal = Journal(path, pointer, data, rb.to_json)
    with shielded():
        try:
            journal.update(phase="rolling back", reason="recovering after the run was interrupted", child=None)
        except OSError:
            pass
        try:
            result = rb.restore()
        except (InstallError, ReadProblem, OSError) as e:
            result = {"exact": False, "uninstalled": [], "restored": [], "not_restored": [f"the rollback failed: {e}"]}
        if result.get("exact"):
            remove(path, pointer)
            rb.discard()
        else:
            try:
                journal.update(phase="not restored", result=result)
            except OSError:
                pass
    return Recovered(str(path), what, result, rollback_state(result))


def recover_pending(path: Path, runner: Runner, say: Say) -> None:
    """Under the lock, before a run changes anything: finish an earlier run's journal. Raises
    InstallError when the environment cannot be put back exactly (nothing is installed over it)."""
    data = read_journal(path)
    if data is None:
        return
    say(f"{describe(data)}: restoring the environment as it was before that run ...")
    done = recover_journal(path, data, runner, say, _pointer_of(data))
    say(f"  {done.state}")
    if not done.exact:
        raise InstallError(f"the environment still holds what an interrupted run changed: {done.state}. "
                           f"The journal {path} keeps its snapshot: fix what is named and run "
                           "`attn-install recover`, or `attn-install recover --forget` to keep the environment "
                           "as it is")


def _pointer_of(data: dict[str, Any]) -> Optional[Path]:
    p = data.get("pointer")
    return Path(p) if isinstance(p, str) else None


def _pointers(journals_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for p in sorted(journals_dir.glob("*.json")) if journals_dir.is_dir() else ():
        try:
            d = loads_json_strict(read_bounded(p, limit=1 << 16))
        except ReadProblem:
            continue
        if isinstance(d, dict) and isinstance(d.get("journal"), str):
            out.append((p, d))
    return out


def recover(journals_dir: Path, locks_dir: Path, runner: Runner, say: Say, *, prefix: Optional[str],
            forget: bool, lock_wait: float) -> list[Recovered]:
    """``attn-install recover``: each unfinished journal (of *prefix*'s environment, or every one
    this cache points to), under its environment's lock: restored, or with --forget removed."""
    from attn_installer.install.journal import journal_path, pointer_path  # noqa: PLC0415
    from attn_installer.install.lock import EnvLock, lock_path  # noqa: PLC0415

    if prefix is not None:
        targets = [(journal_path(lock_path(prefix, locks_dir)), pointer_path(journals_dir, prefix), prefix)]
    else:
        targets = []
        for pointer, d in _pointers(journals_dir):
            # a pointer whose journal is missing is removed only under its environment's lock below: a
            # run may hold that lock, its pointer written and its journal not yet
            targets.append((Path(d["journal"]), pointer, str(d.get("prefix") or "")))
    out = []
    for journal, pointer, env_prefix in targets:
        with EnvLock(env_prefix, locks_dir, lock_wait, say) if env_prefix else _nothing():
            data = read_journal(journal)
            if data is None:
                pointer.unlink(missing_ok=True)
                continue
            if forget:
                remove(journal, pointer)
                backup = (data.get("rollback") or {}).get("backup_dir")
                result = {"exact": False, "forgotten": True}
                note = f"forgotten: the environment is kept as it is (the backups stay in {backup})"
                out.append(Recovered(str(journal), describe(data), result, note))
                continue
            say(f"{describe(data)}: restoring the environment as it was before that run ...")
            out.append(recover_journal(journal, data, runner, say, pointer))
    return out


class _nothing:  # noqa: N801 - a null context manager on Python 3.9
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def as_json(done: list[Recovered]) -> str:
    return json.dumps([{"journal": d.journal, "what": d.what, "state": d.state, "result": d.result}
                       for d in done], indent=2)
