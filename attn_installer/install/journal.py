"""The journal of an install run: what a later run needs to restore the environment when this one
never got to (``kill -9``, the OOM killer, a power cut, a rollback cut short).

Before the first change to an environment the run writes its journal beside the environment's lock
(``<prefix>/.attn-install.journal``, or ``<cache>/locks/<prefix>.journal`` when the prefix is not
writable), with a pointer to it in ``<cache>/journal/`` so ``attn-install recover`` finds it from
the cache. It holds the snapshot (the distributions, the listing of the environment's folders in
the backup folder, every file copied before a step could overwrite it with its sha256), the step
running and the process group of the command running it. It is rewritten atomically as the run
goes and removed only when the run ends cleanly: installed, or rolled back exactly.

Whoever next takes the lock (an install, a build, ``attn-install recover``) finds an unfinished
journal, says what happened, stops what the dead run left running (its process group, recognised
by the start time recorded), restores the snapshot and removes the journal, or says exactly what it
could not restore and keeps it. A journal is read only when it is a regular file of this user that
no one else can write, not a symbolic link, at most :data:`LIMIT` bytes of strict JSON.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Optional

from attn_installer.errors import InstallError
from attn_installer.files import ReadProblem, loads_json_strict, write_atomic

__all__ = ["VERSION", "Journal", "describe", "journal_path", "pointer_path", "process_start", "read_journal",
           "stop_leftovers"]

VERSION = 1
LIMIT = 64 << 20


def journal_path(lock: Path) -> Path:
    """The journal beside a lock file (``.attn-install.lock`` -> ``.attn-install.journal``)."""
    return lock.with_name(re.sub(r"\.lock$", "", lock.name) + ".journal")


def pointer_path(journals_dir: Path, prefix: str) -> Path:
    digest = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_") or "root"
    return journals_dir / f"{digest}.json"


def process_start(pid: int) -> Optional[int]:
    """The start time of process *pid* (clock ticks since boot, /proc/PID/stat field 22), None
    when there is no such process, it has ended (a zombie), or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    if fields[:1] in (["Z"], ["X"]):
        return None  # a zombie: it has ended, only its exit status is left
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _group_of(pid: int) -> Optional[tuple[int, int]]:
    """(process group, start time) of *pid*."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
        fields = text[text.rfind(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[2]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def stop_leftovers(child: Any, wait: float = 10.0) -> list[str]:
    """Kill what a dead run's command left running: every process of its process group that started
    no earlier than the command did (so a reused pid or group is never hit). What was stopped."""
    if not isinstance(child, dict):
        return []
    try:
        pgid, start = int(child["pid"]), int(child["start"])
    except (KeyError, TypeError, ValueError):
        return []
    if pgid <= 1 or pgid == os.getpgrp():
        return []
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        g = _group_of(pid)
        if g is not None and g[0] == pgid and g[1] >= start:
            found.append(pid)
    if not found:
        return []
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(process_start(p) is not None for p in found):
        time.sleep(0.05)
    return [f"stopped {len(found)} process(es) the interrupted run left running (process group {pgid}: "
            f"pid {', '.join(str(p) for p in found)})"]


def read_journal(path: Path) -> Optional[dict[str, Any]]:
    """The unfinished journal at *path*, or None when there is none. InstallError when one is there
    but cannot be trusted or read (it is never acted on then)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror})"
        raise _untrusted(path, why) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _untrusted(path, "is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise _untrusted(path, f"belongs to another user (uid {st.st_uid})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _untrusted(path, f"can be written by others (mode {stat.S_IMODE(st.st_mode):o})")
        if st.st_size > LIMIT:
            raise _untrusted(path, f"is {st.st_size} bytes (at most {LIMIT} are read)")
        chunks, total = [], 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            total += len(block)
            if total > LIMIT:
                raise _untrusted(path, f"is larger than {LIMIT} bytes")
            chunks.append(block)
    finally:
        os.close(fd)
    try:
        data = loads_json_strict(b"".join(chunks).decode("utf-8"))
    except (ReadProblem, UnicodeDecodeError) as e:
        raise _untrusted(path, f"is damaged ({e})") from None
    if not isinstance(data, dict) or data.get("attn_install_journal") != VERSION:
        raise _untrusted(path, "is not an attn-install journal of this version")
    if not isinstance(data.get("rollback"), dict):
        raise _untrusted(path, "holds no snapshot")
    return data


def _untrusted(path: Path, why: str) -> InstallError:
    return InstallError(f"the install journal {path} {why}: it is not used. Check the environment, then move "
                        "the file away (attn-install refuses to install while it is there)")


def describe(data: dict[str, Any]) -> str:
    """What happened to the run a journal belongs to, in one sentence."""
    who = f"attn-install run {data.get('run_id', '?')} (pid {data.get('pid', '?')}"
    if data.get("host") and data.get("host") != socket.gethostname():
        who += f" on {data['host']}"
    who += f", started {data.get('started', '?')}"
    what = f"installing {data.get('backend', '?')}" + (f" by {data['route']}" if data.get("route") else "")
    phase = data.get("phase")
    if phase == "not restored":
        how = "its rollback could not restore everything"
    elif phase == "rolling back":
        how = "it was stopped while rolling back" + (f" ({data['reason']})" if data.get("reason") else "")
    elif data.get("step"):
        how = f"it was stopped during the step '{data['step']}'"
    else:
        how = "it was stopped before its first step finished"
    alive = isinstance(data.get("pid"), int) and process_start(int(data["pid"])) is not None
    end = "" if alive else " (its process is gone: killed, out of memory, or the machine restarted)"
    log = f"; its log: {data['log']}" if data.get("log") else ""
    return f"{who}, {what}) did not finish: {how}{end}{log}"


class Journal:
    """The journal of the run in progress (written at once, rewritten by :meth:`update`)."""

    def __init__(self, path: Path, pointer: Optional[Path], data: dict[str, Any],
                 snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.pointer = pointer
        self.data = data
        self._snapshot = snapshot

    @classmethod
    def begin(cls, path: Path, pointer: Optional[Path], snapshot: Callable[[], dict[str, Any]],
              **fields: Any) -> Journal:
        data = {"attn_install_journal": VERSION, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "phase": "running", "step": None, "child": None,
                "pointer": str(pointer) if pointer is not None else None, **fields}
        j = cls(path, pointer, data, snapshot)
        if pointer is not None:  # the pointer first: a run killed right after its journal is written is found
            import json  # noqa: PLC0415

            pointer.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(pointer, json.dumps({"journal": str(path), "prefix": fields.get("prefix"),
                                              "python": fields.get("python"), "run_id": fields.get("run_id")}) + "\n")
        try:
            j.write()
        except BaseException:
            if pointer is not None:
                pointer.unlink(missing_ok=True)
            raise
        return j

    def write(self) -> None:
        import json  # noqa: PLC0415

        self.data["rollback"] = self._snapshot()
        self.data["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_atomic(self.path, json.dumps(self.data, separators=(",", ":")) + "\n", mode=0o600)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def child(self, pid: int) -> None:
        """The command just started (its pid is its process group)."""
        self.update(child={"pid": pid, "start": process_start(pid) or 0})

    def end(self) -> None:
        """The run ended cleanly: nothing left to recover."""
        remove(self.path, self.pointer)


def remove(path: Path, pointer: Optional[Path]) -> None:
    path.unlink(missing_ok=True)
    if pointer is not None:
        pointer.unlink(missing_ok=True)
