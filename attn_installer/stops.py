"""SIGTERM and SIGHUP handled like Ctrl-C.

A Slurm job at its time limit and ``docker stop`` send SIGTERM, a closed SSH session SIGHUP; by
default either ends Python at once, in the middle of whatever it was doing. :func:`install_handlers`
(called by the CLI) turns both into :class:`Stopped`, raised in the main thread wherever it is,
exactly as SIGINT raises KeyboardInterrupt: the command running is stopped by the runner, the step
loop rolls back, and the CLI exits 128 + the signal (143, 129; 130 for Ctrl-C). A signal the caller
set to be ignored (``nohup``) stays ignored.

:func:`shielded` holds all three off while a rollback runs: they are recorded, not raised, so the
rollback is never cut short by a second Ctrl-C or the SIGTERM that follows a SIGHUP.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["STOP_SIGNALS", "Stopped", "describe", "install_handlers", "restore_handlers", "shielded", "signum_of"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_NAMES: dict[int, str] = {
    signal.SIGINT: "Ctrl-C (SIGINT)",
    signal.SIGTERM: "SIGTERM (a job time limit, `docker stop`, `kill`)",
    signal.SIGHUP: "SIGHUP (the terminal or SSH session closed)",
}


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived (a BaseException, like KeyboardInterrupt: ``except Exception``
    never swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def describe(signum: int) -> str:
    return _NAMES.get(signum, f"signal {signum}")


def signum_of(exc: BaseException) -> int:
    """The signal an interruption came from (KeyboardInterrupt: SIGINT)."""
    return exc.signum if isinstance(exc, Stopped) else int(signal.SIGINT)


def _raise(signum: int, _frame: Any) -> None:
    raise Stopped(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install_handlers() -> dict[int, Any]:
    """SIGTERM / SIGHUP raise Stopped in the main thread (unless the caller ignores them); the
    handlers they had, for :func:`restore_handlers`."""
    old: dict[int, Any] = {}
    if not _main_thread():
        return old
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            old[sig] = signal.signal(sig, _raise)
    return old


def restore_handlers(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


@contextmanager
def shielded() -> Iterator[list[int]]:
    """Within the block SIGINT, SIGTERM and SIGHUP are recorded (the list yielded), not raised; an
    ignored signal stays ignored. Afterwards the handlers are what they were."""
    got: list[int] = []
    if not _main_thread():
        yield got
        return
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def note(signum: int, _frame: Any) -> None:
        got.append(signum)

    for s, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, note)
    try:
        yield got
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
