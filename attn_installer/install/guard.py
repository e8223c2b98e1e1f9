"""The safety net of one backend's run: before the first change the snapshot and a journal beside
the environment's lock (so `attn-install recover` or the next run can restore after a hard kill);
on any failure, interrupt or bug the rollback with Ctrl-C / SIGTERM / SIGHUP held off until it is
done, then the typed error that says what state the environment is in."""

from __future__ import annotations

from typing import Any, Optional

from attn_installer.errors import (
    AttnInstallError,
    DiskFullError,
    InstallError,
    InstallInterruptedError,
    InternalInstallError,
    StepFailedError,
)
from attn_installer.install.backup import Rollback, rollback_state
from attn_installer.install.envstate import EnvState
from attn_installer.install.journal import Journal, journal_path, pointer_path
from attn_installer.install.lock import EnvLock
from attn_installer.install.records import Failed, Options, Outcome, Say, Services
from attn_installer.install.space import folder_of, full
from attn_installer.plan.model import BackendPlan
from attn_installer.stops import Stopped, describe, shielded, signum_of

__all__ = ["RunGuard"]


class RunGuard:
    """The rollback of one run and its journal."""

    def __init__(self, bp: BackendPlan, svc: Services, opts: Options, say: Say) -> None:
        self.bp, self.svc, self.opts, self.say = bp, svc, opts, say
        self.rollback = Rollback(svc.runner, opts.python, svc.paths.backup(f"{svc.run_id}-{bp.name}"), say,
                                 wheelhouse=opts.wheelhouse, offline=opts.offline)
        self.journal: Optional[Journal] = None

    def begin(self, lock: EnvLock, before: EnvState) -> None:
        """Before the first change: the snapshot, and the journal beside the lock."""
        if not self.bp.steps:
            return
        svc = self.svc
        self.rollback.snapshot(before)
        try:
            self.journal = Journal.begin(
                journal_path(lock.path), pointer_path(svc.paths.journal, before.prefix), self.rollback.to_json,
                run_id=svc.run_id, prefix=before.prefix, python=self.opts.python, backend=self.bp.name,
                route=self.bp.route, log=str(svc.log_path) if svc.log_path else None)
        except OSError as e:
            if full(e):
                raise Failed(f"no space left on the disk of {folder_of(str(e.filename or lock.path))} (writing the "
                              "install journal); free some space there and run again", disk=True) from None
            raise
        self.rollback.on_change = self.journal.write

    def note(self, **fields: Any) -> None:
        """Update the journal during a rollback; a full disk leaves the last one written (still valid)."""
        if self.journal is not None:
            try:
                self.journal.update(**fields)
            except OSError:
                pass

    def clean_end(self) -> None:
        if self.journal is not None:
            self.journal.end()
            self.journal = None
        self.rollback.discard()

    def guarded_rollback(self, before: EnvState, reason: str) -> tuple[dict[str, Any], list[int]]:
        """The rollback, with Ctrl-C, SIGTERM and SIGHUP held off until it is done (each recorded)."""
        with shielded() as got:
            self.note(phase="rolling back", reason=reason, child=None)
            try:
                rb = self.rollback.restore(before)
            except Exception as e:  # noqa: BLE001 - the rollback must report, whatever broke it
                rb = {"exact": False, "uninstalled": [], "restored": [],
                      "not_restored": [f"the rollback itself failed ({type(e).__name__}: {e})"]}
            if rb.get("exact"):
                try:
                    self.clean_end()
                except OSError:
                    pass
            else:
                self.note(phase="not restored", result=rb)
                if self.journal is not None:
                    rb["journal"] = str(self.journal.path)
        return rb, got

    def rolled_back(self, e: BaseException, before: EnvState, out: Outcome) -> AttnInstallError:
        """Roll back after *e*; the typed error to raise, saying the state the environment is in."""
        signum: Optional[int] = signum_of(e) if isinstance(e, (KeyboardInterrupt, Stopped)) else None
        if signum is not None:
            reason = f"stopped by {describe(signum)}"
            self.say(f"{reason}: restoring the environment (signals are held off until it is done) ...")
        elif isinstance(e, OSError) and full(e):
            reason = f"no space left on the disk of {folder_of(str(e.filename or self.svc.paths.cache))}"
        elif isinstance(e, (Failed, InstallError)):
            reason = str(e).split("\n")[0]
        else:
            reason = f"internal error: {type(e).__name__}: {e}"
        rb, late = self.guarded_rollback(before, reason)
        out.rollback = rb
        out.state = rollback_state(rb)
        if not rb.get("exact") and rb.get("journal"):
            out.state += (f" (the snapshot stays in {rb['journal']}: `attn-install recover` tries again, "
                          "and the next install into this environment first)")
        if signum is None and late:
            signum = late[0]
        if signum is not None:
            what = f"stopped by {describe(signum)}" + (f" after: {reason}" if not reason.startswith("stopped") else "")
            return InstallInterruptedError(f"{what}; {out.state}", signum)
        if isinstance(e, OSError) and full(e):
            out.message = f"{reason} ({e.filename or ''}: {e.strerror}); free some space there and run again"
            return DiskFullError(out.message, outcome=out)
        if isinstance(e, (Failed, InstallError)):
            out.message = str(e)
            out.hint = getattr(e, "hint", "")
            if getattr(e, "disk", False) or isinstance(e, DiskFullError):
                return DiskFullError(out.message, hint=out.hint, outcome=out)
            return StepFailedError(out.message, hint=out.hint, outcome=out)
        out.message = reason
        return InternalInstallError(f"{reason} (run with --debug for the traceback); {out.state}")
