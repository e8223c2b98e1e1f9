"""The install journal (install/journal.py): written beside the lock, read only when it can be
trusted, and what a dead run left running is stopped by its process group and start time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from attn_installer.errors import InstallError
from attn_installer.install.journal import (
    Journal,
    describe,
    journal_path,
    pointer_path,
    process_start,
    read_journal,
    stop_leftovers,
)
from attn_installer.install.lock import lock_path


def test_the_journal_lives_beside_the_lock(tmp_path):
    prefix = tmp_path / "env"
    prefix.mkdir()
    assert journal_path(lock_path(str(prefix), tmp_path / "locks")) == prefix / ".attn-install.journal"
    prefix.chmod(0o500)
    try:
        if not os.access(prefix, os.W_OK):  # root writes anyway
            assert journal_path(lock_path(str(prefix), tmp_path / "locks")).parent == tmp_path / "locks"
    finally:
        prefix.chmod(0o700)
    assert pointer_path(tmp_path / "journal", "/opt/env").name == "opt_env.json"


def test_written_updated_ended(tmp_path):
    path, pointer = tmp_path / ".attn-install.journal", tmp_path / "journal" / "env.json"
    snap = {"n": 0}

    def snapshot():
        snap["n"] += 1
        return {"backup_dir": "/b", "calls": snap["n"]}

    j = Journal.begin(path, pointer, snapshot, run_id="r1", prefix="/env", python="/env/bin/python",
                      backend="xformers", route="torch_index", log=None)
    data = read_journal(path)
    assert data["run_id"] == "r1" and data["phase"] == "running"
    assert data["rollback"] == {"backup_dir": "/b", "calls": 1}
    assert json.loads(pointer.read_text())["journal"] == str(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    j.update(step="install xformers")
    assert read_journal(path)["step"] == "install xformers" and read_journal(path)["rollback"]["calls"] == 2
    j.end()
    assert read_journal(path) is None and not pointer.exists()


def _journal(tmp_path, **extra):
    path = tmp_path / "j.journal"
    path.write_text(json.dumps({"attn_install_journal": 1, "rollback": {}, **extra}))
    path.chmod(0o600)
    return path


def test_the_pointer_is_written_before_the_journal(tmp_path):
    """A run killed right after its journal is written is still found by `attn-install recover`
    (tests/integration/test_faults.py found the pointer written after, so a kill in between hid it);
    a journal that cannot be written takes its pointer with it."""
    pointer = tmp_path / "journal" / "env.json"
    seen = []

    def snap():
        seen.append(pointer.is_file())
        return {"backup_dir": str(tmp_path)}

    j = Journal.begin(tmp_path / "j", pointer, snap, prefix="/env")
    assert seen[0] is True and j.path.is_file()

    def broken():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        Journal.begin(tmp_path / "k", tmp_path / "journal" / "k.json", broken, prefix="/k")
    assert not (tmp_path / "journal" / "k.json").exists() and not (tmp_path / "k").exists()


@pytest.mark.parametrize(("damage", "why"), [
    ("symlink", "is a symbolic link"),
    ("group-writable", "can be written by others (mode 660)"),
    ("not-json", "is damaged (not valid JSON"),
    ("nan", "is damaged (holds NaN"),
    ("other-version", "is not an attn-install journal of this version"),
    ("fifo", "is not a regular file"),
    ("other-user", "belongs to another user (uid 4242)"),
])
def test_a_journal_that_cannot_be_trusted_is_never_acted_on(tmp_path, monkeypatch, damage, why):
    path = _journal(tmp_path)
    if damage == "symlink":
        (tmp_path / "x").mkdir()
        real = _journal(tmp_path / "x")
        path.unlink()
        path.symlink_to(real)
    elif damage == "group-writable":
        path.chmod(0o660)
    elif damage == "not-json":
        path.write_text("{")
    elif damage == "nan":
        path.write_text('{"attn_install_journal": 1, "rollback": {}, "pid": NaN}')
    elif damage == "other-version":
        path.write_text('{"attn_install_journal": 99, "rollback": {}}')
    elif damage == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif damage == "other-user":
        monkeypatch.setattr(os, "geteuid", lambda: 4242 if os.getuid() != 4242 else 4243)
        why = f"belongs to another user (uid {path.stat().st_uid})"
    with pytest.raises(InstallError) as e:
        read_journal(path)
    assert why in str(e.value) and "it is not used" in str(e.value)


def test_describe_says_what_happened(tmp_path):
    d = {"run_id": "20261201-1-1", "pid": 2**22 + 7, "started": "2026-12-01 10:00:00", "backend": "xformers",
         "route": "torch_index", "step": "install xformers 0.0.32", "log": "/c/logs/x.log"}
    text = describe(d)
    assert text.startswith("attn-install run 20261201-1-1 (pid 4194311, started 2026-12-01 10:00:00, installing "
                           "xformers by torch_index) did not finish: it was stopped during the step 'install xformers")
    assert "its process is gone" in text and "its log: /c/logs/x.log" in text
    assert "while rolling back" in describe({**d, "phase": "rolling back"})
    assert "could not restore everything" in describe({**d, "phase": "not restored"})


def test_what_a_dead_run_left_running_is_stopped(allow_subprocess):
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                              "time.sleep(60)"], start_new_session=True)
    time.sleep(0.5)
    start = process_start(child.pid)
    assert start is not None
    # a recorded start in the future is another process that reused the pid: left alone
    assert stop_leftovers({"pid": child.pid, "start": start + 10**9}, wait=0.1) == []
    assert child.poll() is None
    notes = stop_leftovers({"pid": child.pid, "start": start})
    assert notes and "process group" in notes[0] and "2 process" in notes[0]
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert stop_leftovers({"pid": child.pid, "start": start}) == []
    assert stop_leftovers(None) == [] and stop_leftovers({"pid": "x"}) == []
