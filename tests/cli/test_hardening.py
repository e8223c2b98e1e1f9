"""Security probes and hard stops outside an install, in real processes: the runner's private working
directory (nothing in the caller's directory shadows pip), relative executables, the log opened
without following links, SIGTERM / SIGHUP turned into a clean exit (no temp dirs left), the cache
refused when it is another user's or others can write to it, facts strings printed escaped; a link
planted as the lock, the pins, the journal or a partial download is never written or read through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attn_installer.errors import CacheError
from attn_installer.paths import Paths
from attn_installer.runner import SubprocessRunner
from attn_installer.stops import Stopped, shielded
from tests.cli.conftest import cli, fake_bin


def live_in_group(pgid: int) -> list[int]:
    """Processes of process group *pgid* that still run (zombies have ended)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            text = (p / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(p.name))
    return out


def test_nothing_in_the_callers_directory_shadows_pip(tmp_path, monkeypatch, allow_subprocess):
    trap = tmp_path / "caller"
    (trap / "pip").mkdir(parents=True)
    (trap / "pip" / "__main__.py").write_text("print('HIJACKED')\n")
    (trap / "pip" / "__init__.py").write_text("")
    (trap / "pip.py").write_text("print('HIJACKED')\n")
    monkeypatch.chdir(trap)
    plain = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    assert "HIJACKED" in plain.stdout  # the hole the runner closes
    done = SubprocessRunner().run([sys.executable, "-m", "pip", "--version"], timeout=60)
    assert done.ok and "HIJACKED" not in done.output and done.stdout.startswith("pip ")
    # a relative interpreter path still works (made absolute before the private directory is entered)
    (trap / "py").symlink_to(sys.executable)
    rel = SubprocessRunner().run(["./py", "-c", "import os; print(os.getcwd())"], timeout=30)
    assert rel.ok and Path(rel.stdout.strip()) != trap and "attn-install-cwd-" in rel.stdout
    assert not Path(rel.stdout.strip()).exists()  # removed after the command


def test_the_log_is_not_written_through_a_planted_link(tmp_path, allow_subprocess):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    log = tmp_path / "run.log"
    log.symlink_to(victim)
    runner = SubprocessRunner(log)
    done = runner.run(["true"], timeout=10)
    assert done.ok and victim.read_text() == "keep me\n"
    assert runner.log_problem is not None and runner.log_problem.filename == str(log)


def test_an_interruption_stops_the_command_and_its_children(tmp_path, allow_subprocess):
    """The runner kills the command's process group on any interruption (here: the line callback raising
    as a SIGTERM handler would), and says its pid to on_spawn first."""
    pids = []
    runner = SubprocessRunner()
    runner.on_spawn = pids.append
    script = "sh -c 'sleep 60' & echo started; wait"

    def stop(line):
        raise Stopped(signal.SIGTERM)

    with pytest.raises(Stopped):
        runner.run(["sh", "-c", script], timeout=30, on_line=stop)
    (pid,) = pids
    time.sleep(0.2)
    assert live_in_group(pid) == [], "the command's group outlived the interruption"


def test_shielded_holds_signals_off(monkeypatch):
    with shielded() as got:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
    assert got == [signal.SIGTERM, signal.SIGHUP]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_stopped_probe_exits_with_the_signal_and_leaves_no_temp_dirs(tmp_path, allow_subprocess, sig, code):
    bindir = fake_bin(tmp_path, "nvidia-smi", "sleep 30\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ATTN_INSTALL_NO_NVML": "1", "HOME": str(tmp_path),
           "TMPDIR": str(tmp), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-m", "attn_installer", "probe"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not list(tmp.glob("attn-install-*")):
        time.sleep(0.02)  # the probe is inside a command (its private working directory exists)
    time.sleep(0.1)
    p.send_signal(sig)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == code, err
    assert ("stopped by SIG" in err) if sig != signal.SIGINT else ("aborted" in err or "interrupted" in err)
    assert list(tmp.iterdir()) == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if str(bindir / "nvidia-smi").encode() in _read(p) and live_in_group(int(p.parent.name))]


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


def test_an_ignored_sighup_stays_ignored(tmp_path, allow_subprocess):
    """nohup: SIGHUP is ignored by the caller, so attn-install does not stop on it."""
    bindir = fake_bin(tmp_path, "nvidia-smi", "sleep 1\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ATTN_INSTALL_NO_NVML": "1", "HOME": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "attn_installer", "probe", "--json"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGHUP,
                                                                                             signal.SIG_IGN))
    time.sleep(0.5)
    p.send_signal(signal.SIGHUP)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert json.loads(out)["schema_version"] == 1


def test_the_cache_is_made_private_and_refused_when_others_can_plant_in_it(tmp_path, monkeypatch):
    fresh = Paths(tmp_path / "new" / "cache").checked()
    assert oct(fresh.cache.stat().st_mode & 0o777) == "0o700"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CacheError) as e:
        Paths(shared).checked()
    assert "can be written by others (mode 777)" in str(e.value) and f"chmod 700 {shared}" in str(e.value)
    shared.chmod(0o755)
    Paths(shared).checked()  # read-only for others: fine
    monkeypatch.setattr(os, "geteuid", lambda: shared.stat().st_uid + 1)
    with pytest.raises(CacheError) as e:
        Paths(shared).checked()
    assert "belongs to another user" in str(e.value) and CacheError.exit_code == 12
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheError, match="is not a directory"):
        Paths(tmp_path / "file").checked()
    assert Paths(tmp_path / "absent").checked(create=False).cache == tmp_path / "absent"
    assert not (tmp_path / "absent").exists()


def test_a_world_writable_cache_stops_an_install_with_exit_12(tmp_path, colab_t4):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    r = cli({**colab_t4, "ATTN_INSTALL_CACHE": str(cache)}, "install", "--yes", "--python", sys.executable)
    assert r.returncode == 12, r.stderr
    assert "can be written by others" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_facts_strings_are_printed_escaped(tmp_path, colab_t4):
    """A support ticket's facts file cannot move the cursor, retitle the terminal or forge plan lines."""
    facts = json.loads(cli(colab_t4, "probe", "--json").stdout)
    evil = "Tesla T4\x1b]0;owned\x07\x1b[2J\r\nrecommended: evil"
    facts["gpus"][0]["name"] = evil
    facts["python"]["executable"] = "/usr/bin/python3\x1b[1A\x1b[K"
    facts["host"]["machine"] = "x86_64\u202e"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(facts))
    shown = ""
    for args in (("plan", "--facts", str(path)), ("plan", "--facts", str(path), "-v"),
                 ("plan", "--facts", str(path), "--json"),
                 ("config", "--facts", str(path), "-o", str(tmp_path / "c.yaml"))):
        r = cli(colab_t4, *args)
        assert r.returncode == 0, r.stderr
        text = r.stdout + r.stderr + ((tmp_path / "c.yaml").read_text() if (tmp_path / "c.yaml").exists() else "")
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
        assert "\nrecommended: evil" not in text
        shown += text
    assert "Tesla T4\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x0arecommended: evil" in shown


def test_a_link_planted_as_the_lock_is_refused_and_its_target_kept(tmp_path):
    from attn_installer.errors import InstallError
    from attn_installer.install.lock import EnvLock

    prefix = tmp_path / "env"
    prefix.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (prefix / ".attn-install.lock").symlink_to(victim)
    with pytest.raises(InstallError, match="is a symbolic link; refusing to use it as the lock"), \
            EnvLock(str(prefix), tmp_path / "locks", 0):
        pass
    assert victim.read_text() == "keep me\n"


def test_the_pins_and_the_journal_are_never_written_through_a_planted_link(tmp_path):
    from attn_installer.files import write_atomic

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    for name in ("constraints-run1.txt", ".attn-install.journal"):
        planted = tmp_path / name
        planted.symlink_to(victim)
        write_atomic(planted, "torch==2.8.0\n", mode=0o600)
        assert not planted.is_symlink() and planted.read_text() == "torch==2.8.0\n"
    assert victim.read_text() == "keep me\n"


def test_a_planted_partial_download_link_is_removed_not_followed(tmp_path):
    from attn_installer.install.download import clean_partials

    victim = tmp_path / "victim.whl"
    victim.write_bytes(b"keep me")
    dest = tmp_path / "downloads" / "flash_attn-2.8.3-cp311-cp311-linux_x86_64.whl"
    dest.parent.mkdir()
    link = dest.parent / f".{dest.name}.partXYZ"
    link.symlink_to(victim)
    assert clean_partials(dest) == [link]
    assert not link.is_symlink() and victim.read_bytes() == b"keep me"
