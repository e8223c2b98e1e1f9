"""Faults injected into real installs: real pip into throwaway venvs from the loopback index
(tests/pkgindex.py, tests/installworld.py), with attn-install killed (``kill -9``) or stopped
(SIGTERM, SIGHUP, SIGINT) at chosen points, disks filling up (small tmpfs mounts: root only, else
skipped), a server that stops mid-download without a Content-Length, and corrupted or partial
files in the cache.

"Nothing lost" is checked on the real state, never on what attn-install says: ``pip freeze --all``
plus the sha256 of every file (and the target of every link, every folder) under site-packages
and the scripts folder equal the same listing taken before the first run; no journal is left; no
pip is left running, and the environment does not change after a kill (no orphan finishes the
install unattended).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.installworld import XF, broken_xformers, copy_venv, freeze, good_xformers, run
from tests.pkgindex import build_wheel

pytestmark = pytest.mark.slow  # real pip, venvs, loopback servers, tmpfs mounts

FILES = 1500
"""Modules in the slow-to-write xformers: pip writes and byte-compiles them for a second or more,
the window a kill lands in."""


# ---------------------------------------------------------------------------------------- helpers

def many_files_xformers(out: Path, n: int = FILES, broken: bool = False) -> Path:
    files = {f"xformers/_parts/m{i:04d}.py": f"VALUE = {i}\n" + "# padding\n" * 40 for i in range(n)}
    files["xformers/_parts/__init__.py"] = ""
    if broken:  # imports fail as a wheel built for another torch does: verification fails, rollback runs
        files["xformers/__init__.py"] = ""
        files["xformers/ops.py"] = "raise ImportError('xformers/_C.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n"
        return build_wheel(out, "xformers", XF, files, ("torch==2.8.0", "numpy>=2"))
    files["xformers/__init__.py"] = f"__version__ = {XF!r}\n"
    files["xformers/ops.py"] = "def memory_efficient_attention(q, k, v, attn_bias=None):\n    raise RuntimeError\n"
    return build_wheel(out, "xformers", XF, files, ("torch==2.8.0", "numpy"))


def big_xformers(out: Path, mb: float) -> Path:
    """An xformers wheel holding one incompressible-ish file of *mb* MiB (the wheel is stored, not deflated)."""
    blob = os.urandom(int(mb * 2**20) // 2).hex()
    return build_wheel(out, "xformers", XF, {
        "xformers/__init__.py": f"__version__ = {XF!r}\n",
        "xformers/ops.py": "def memory_efficient_attention(q, k, v, attn_bias=None):\n    raise RuntimeError\n",
        "xformers/_blob.txt": blob,
    }, ("torch==2.8.0", "numpy"))


def prefix_of(w) -> Path:
    return Path(w.py).parent.parent


def site_of(w) -> Path:
    return next(prefix_of(w).glob("lib/python*/site-packages"))


def tree(w) -> dict[str, str]:
    """Every entry under site-packages and bin: a file by its sha256, a link by its target, a folder."""
    out: dict[str, str] = {}
    for root in (site_of(w), prefix_of(w) / "bin"):
        for p in sorted(root.rglob("*")):
            rel = f"{root.name}/{p.relative_to(root)}"
            if p.is_symlink():
                out[rel] = "link " + str(p.readlink())
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def state(w) -> tuple[str, dict[str, str]]:
    return freeze(w), tree(w)


def assert_same(before: tuple[str, dict[str, str]], after: tuple[str, dict[str, str]]) -> None:
    assert after[0] == before[0], f"pip freeze differs:\n{after[0]}\nwas\n{before[0]}"
    added = sorted(set(after[1]) - set(before[1]))
    lost = sorted(set(before[1]) - set(after[1]))
    changed = sorted(k for k in set(before[1]) & set(after[1]) if before[1][k] != after[1][k])
    assert not (added or lost or changed), (f"{len(added)} added {added[:5]}, {len(lost)} lost {lost[:5]}, "
                                            f"{len(changed)} changed {changed[:5]}")


def journal(w) -> Path:
    return prefix_of(w) / ".attn-install.journal"


_LOGS: dict[int, Path] = {}


def _log_of(p: subprocess.Popen[str]) -> str:
    return _LOGS[p.pid].read_text()


def launch(w, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    path = w.tmp / f"run-{time.monotonic_ns()}.out"
    with open(path, "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "attn_installer", *args], env=env or w.env, cwd=w.tmp,
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    _LOGS[p.pid] = path
    return p


def wait_for(p: subprocess.Popen[str], what: str, cond: Callable[[], bool], timeout: float = 120,
             every: float = 0.005) -> None:
    """Poll *cond* until it holds; fail (with the run's output) when the run ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if p.poll() is not None:
            pytest.fail(f"the run ended (exit {p.returncode}) before {what}:\n{_log_of(p)[-3000:]}")
        time.sleep(every)
    p.kill()
    pytest.fail(f"no {what} within {timeout} s:\n{_log_of(p)[-3000:]}")


def pips_of(w) -> list[int]:
    """Live processes running this venv's python (pip), by pid."""
    want = w.py.encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            st = (d / "stat").read_text()
        except OSError:
            continue
        if argv and argv[0] == want and st[st.rfind(")") + 2:][:1] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def kill9_and_check_nothing_runs_on(w, p: subprocess.Popen[str]) -> None:
    """kill -9 the run; no pip of it is left, and the environment does not change after (nothing
    finishes the install unattended)."""
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.monotonic() + 10
    while pips_of(w) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {q: Path(f"/proc/{q}/cmdline").read_bytes().replace(b"\0", b" ")[:300] for q in pips_of(w)}
    assert not left, f"pip kept running after attn-install was killed: {left}"
    at_kill = tree(w)
    time.sleep(2.0)
    assert tree(w) == at_kill, "the environment changed after the kill: something finished the install"


def journal_phase(w) -> str | None:
    try:
        return json.loads(journal(w).read_text()).get("phase")
    except (OSError, ValueError):
        return None


def pip_writing(w) -> bool:
    """pip has started writing xformers' files into site-packages (its dist-info comes last)."""
    return (site_of(w) / "xformers" / "_parts").is_dir()


# ------------------------------------------------------------------------- kill -9 at three points

def after_recover(w, how: str, before) -> str:
    """The next run after a kill: `recover`, or an install (which must restore first). The install
    here is of a broken xformers, so it ends rolled back to what it found: the restored environment."""
    if how == "recover":
        r = run(w, "recover")
        assert r.returncode == 0, r.stdout + r.stderr
        text = r.stdout + r.stderr
        assert "did not finish" in text and "its process is gone" in text
        assert "restored exactly as before" in text or "nothing was changed" in text, text
    else:
        w.idx.remove("xformers")
        w.idx.add(broken_xformers(w.tmp / "broken"))
        r = run(w, "install", "--python", w.py, "--yes")
        text = r.stdout + r.stderr
        assert r.returncode == 8, text
        assert "did not finish" in text and "restoring the environment as it was before that run" in text
        assert "verification of xformers failed" in text
    assert not journal(w).exists(), "the journal outlived an exact restore"
    assert not list((w.tmp / "cache" / "journal").glob("*.json")), "a journal pointer was left behind"
    assert_same(before, state(w))
    return text


@pytest.mark.parametrize("then", ["recover", "install"])
def test_kill9_right_after_the_journal_is_written(world, then):
    world.idx.add(many_files_xformers(world.wheels))
    before = state(world)
    p = launch(world, "install", "--python", world.py, "--yes")
    wait_for(p, "the journal", journal(world).exists)
    kill9_and_check_nothing_runs_on(world, p)
    assert journal(world).exists()
    after_recover(world, then, before)


@pytest.mark.parametrize("then", ["recover", "install"])
def test_kill9_while_pip_writes_the_package(world, then):
    world.idx.add(many_files_xformers(world.wheels))
    before = state(world)
    p = launch(world, "install", "--python", world.py, "--yes")
    wait_for(p, "pip writing xformers", lambda: pip_writing(world))
    kill9_and_check_nothing_runs_on(world, p)
    half = tree(world)
    assert any(k.startswith("site-packages/xformers/") for k in half), "the kill came before pip wrote"
    assert not any(k.startswith(f"site-packages/xformers-{XF}.dist-info/RECORD") for k in half), \
        "the kill came after pip had finished"
    text = after_recover(world, then, before)
    assert "during the step" in text


def test_kill9_during_the_rollback_then_recover(world):
    """A verification fails, the rollback starts (the journal says so), attn-install is killed in
    it; recover finishes the rollback from the journal."""
    world.idx.add(many_files_xformers(world.wheels, broken=True))
    before = state(world)
    p = launch(world, "install", "--python", world.py, "--yes")
    wait_for(p, "the rollback", lambda: journal_phase(world) == "rolling back", every=0.002)
    kill9_and_check_nothing_runs_on(world, p)
    assert journal(world).exists()
    r = run(world, "recover")
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert "it was stopped while rolling back" in text and "restored exactly as before" in text
    assert not journal(world).exists()
    assert_same(before, state(world))


def test_kill9_during_a_download_leaves_a_part_file_the_next_run_removes(world):
    fa = fa2_route(world)
    world.idx.slow[fa.filename] = 0.05
    before = state(world)
    parts = lambda: [q for q in fa.dest.parent.glob(f".{fa.filename}.part*") if q.stat().st_size > 0]  # noqa: E731
    p = launch(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    wait_for(p, "a partial download", lambda: fa.dest.parent.is_dir() and bool(parts()))
    kill9_and_check_nothing_runs_on(world, p)
    assert parts() and not fa.dest.exists(), "the kill left no partial file, or one under the final name"
    assert_same(before, state(world))
    world.idx.slow.clear()
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert "a partial download an interrupted run left" in text and "did not finish" in text
    assert not list(fa.dest.parent.glob(f".{fa.filename}.part*"))
    assert hashlib.sha256(fa.dest.read_bytes()).hexdigest() == fa.sha256
    assert "flash_attn @ file://" in freeze(world)


# ------------------------------------------------------------------ SIGTERM, SIGHUP, SIGINT in pip

@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP"), (signal.SIGINT, 130, "Ctrl-C (SIGINT)")],
    ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_while_pip_writes_restores_and_exits_with_the_signal(world, sig, code, said):
    world.idx.add(many_files_xformers(world.wheels))
    before = state(world)
    p = launch(world, "install", "--python", world.py, "--yes")
    wait_for(p, "pip writing xformers", lambda: pip_writing(world))
    p.send_signal(sig)
    rc = p.wait(timeout=120)
    text = _log_of(p)
    assert rc == code, text
    assert f"stopped by {said}" in text and "restored exactly as before" in text, text[-2000:]
    assert not pips_of(world), "pip kept running after the stop"
    assert not journal(world).exists()
    assert_same(before, state(world))


# ---------------------------------------------------------------------------------- full disks

@contextlib.contextmanager
def tmpfs(path: Path, kib: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs unprivileged): the full-disk cases are skipped")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def kib_used(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def no_space_estimates(w, *kinds: str) -> None:
    """The matrix's free-space estimates of these route kinds set to 0, so the step runs into the
    full disk itself (instead of being refused before it starts)."""
    f = w.matrices / "routes.toml"
    text = f.read_text()
    for kind in kinds:
        text = re.sub(rf'(kind = "{kind}"\n(?:(?!\[\[kind\]\]).*\n)*?)target_mb = [0-9.]+\ndownload_mb = [0-9.]+',
                      r"\1target_mb = 0.0\ndownload_mb = 0.0", text)
    f.write_text(text)


def test_a_full_target_environment_is_exit_8_named_and_restored(world, template_venv):
    """The venv lives on a tmpfs with 3 MiB left; the wheel unpacks to 8 MiB: pip fails with ENOSPC."""
    no_space_estimates(world, "torch_index")
    world.idx.add(big_xformers(world.wheels, 8))
    with tmpfs(world.tmp / "small", kib_used(template_venv) + 3 * 1024) as mnt:
        world.py = copy_venv(template_venv, mnt / "venv")
        before = state(world)
        r = run(world, "install", "--python", world.py, "--yes")
        text = r.stdout + r.stderr
        assert r.returncode == 8, text
        assert f"no space left on the disk of {mnt}" in r.stderr, text
        assert "restored exactly as before" in r.stderr
        assert not journal(world).exists()
        assert_same(before, state(world))


def test_a_target_without_the_space_the_matrix_asks_is_refused_before_pip(world, template_venv):
    world.idx.add(good_xformers(world.wheels))
    with tmpfs(world.tmp / "small", kib_used(template_venv) + 3 * 1024) as mnt:
        world.py = copy_venv(template_venv, mnt / "venv")
        before = state(world)
        r = run(world, "install", "--python", world.py, "--yes")
        assert r.returncode == 8, r.stdout + r.stderr
        assert "not enough free space for 'install xformers" in r.stderr and f"the disk of {mnt}" in r.stderr
        assert_same(before, state(world))
        assert not any("/files/xformers" in q for q in world.idx.requests if q.startswith("GET"))


def test_a_full_cache_during_a_download_is_exit_8_named_and_leaves_no_file(world):
    no_space_estimates(world, "release_asset")
    fa = fa2_route(world, mb=6)
    with tmpfs(world.tmp / "smallcache", 3 * 1024) as mnt:
        env = dict(fa.env, ATTN_INSTALL_CACHE=str(mnt))
        dest = mnt / fa.dest.relative_to(world.tmp / "cache")
        before = state(world)
        r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=env)
        text = r.stdout + r.stderr
        assert r.returncode == 8, text
        assert f"no space left on the disk of {mnt}" in r.stderr, text
        assert not dest.exists() and not list(dest.parent.glob(f".{fa.filename}.part*"))
        assert not journal(world).exists()
        assert_same(before, state(world))


def test_a_full_temp_dir_is_exit_8_named_and_changes_nothing(world):
    """TMPDIR on a 3 MiB tmpfs, an 8 MiB wheel: pip cannot even download it."""
    no_space_estimates(world, "torch_index")
    world.idx.add(big_xformers(world.wheels, 8))
    with tmpfs(world.tmp / "smalltmp", 3 * 1024) as mnt:
        env = dict(world.env, TMPDIR=str(mnt))
        before = state(world)
        r = run(world, "install", "--python", world.py, "--yes", env=env)
        text = r.stdout + r.stderr
        assert r.returncode == 8, text
        assert f"no space left on the disk of {mnt}" in r.stderr, text
        assert not journal(world).exists()
        assert_same(before, state(world))
        assert not list(mnt.iterdir()), f"left in the temp dir: {list(mnt.iterdir())}"


# ------------------------------------------------------------- downloads: cut short, corrupt, partial

class FaRoute:
    filename: str
    dest: Path
    env: dict[str, str]
    sha256: str
    wheel: Path


def fa2_route(w, mb: float = 1.5) -> FaRoute:
    """The FA2 release wheel the plan names for a fake H200, served as a GitHub release asset
    (stored, with a *mb* MiB member so a cut or a flipped byte lands in file data)."""
    env = dict(w.env, FAKE_GPU="h200")
    plan = json.loads(run(w, "plan", "--json", "--python", w.py, "--backend", "flash_attention_2", env=env).stdout)
    fa2 = next(b for b in plan["backends"] if b["name"] == "flash_attention_2")
    assert fa2["method"] == "wheel", fa2["reasons"]
    filename = fa2["download"]["filename"]
    parts = filename[:-4].split("-")
    wheel = build_wheel(w.tmp / "gh", "flash_attn", parts[1], {
        "flash_attn/__init__.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError\n",
        "flash_attn/_blob.txt": os.urandom(int(mb * 2**20) // 2).hex(),
    }, ("torch",), tag="-".join(parts[2:]))
    (w.idx.root / "assets" / filename).write_bytes(wheel.read_bytes())
    fa = FaRoute()
    fa.filename, fa.env, fa.wheel = filename, env, wheel
    fa.dest = Path(w.env["ATTN_INSTALL_CACHE"]) / "downloads" / filename  # plan/steps.py: <cache>/downloads/
    fa.sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return fa


def test_a_download_cut_short_without_a_length_is_refused_and_never_cached(world):
    fa = fa2_route(world)
    world.idx.cut[fa.filename] = fa.wheel.stat().st_size // 2
    before = state(world)
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    text = r.stdout + r.stderr
    assert r.returncode == 8, text
    assert "is not usable" in r.stderr and "the server sent no length" in r.stderr, text
    assert not fa.dest.exists(), "a truncated download was cached under its final name"
    assert not list(fa.dest.parent.glob(f".{fa.filename}.part*"))
    assert_same(before, state(world))
    # the server is whole again: the next run downloads and installs
    world.idx.cut.clear()
    ok = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert hashlib.sha256(fa.dest.read_bytes()).hexdigest() == fa.sha256


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    i = len(data) // 2  # inside the stored member's data
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "flipped-byte"])
@pytest.mark.parametrize("recorded", [False, True], ids=["no-record", "sha-recorded"])
def test_a_corrupt_cached_wheel_is_named_deleted_and_fetched_again(world, damage, recorded):
    fa = fa2_route(world)
    fa.dest.parent.mkdir(parents=True, exist_ok=True)
    fa.dest.write_bytes(damage(fa.wheel.read_bytes()))
    if recorded:  # the sha256 recorded when it was first downloaded
        fa.dest.with_name(fa.dest.name + ".sha256").write_text(fa.sha256 + "\n")
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert f"the cached {fa.dest} is not usable" in text and "deleting it and downloading again" in text
    assert hashlib.sha256(fa.dest.read_bytes()).hexdigest() == fa.sha256
    assert sum(q.startswith("GET /assets/") for q in world.idx.requests) == 1
    assert "flash_attn @ file://" in freeze(world)


def test_a_stale_part_file_is_removed_by_the_next_run(world):
    fa = fa2_route(world)
    fa.dest.parent.mkdir(parents=True, exist_ok=True)
    stale = fa.dest.parent / f".{fa.filename}.part3k2j9x"
    stale.write_bytes(fa.wheel.read_bytes()[:1000])
    r = run(world, "install", "flash_attention_2", "--python", world.py, "--yes", env=fa.env)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert f"removed {stale.name}, a partial download an interrupted run left" in text
    assert not stale.exists() and not list(fa.dest.parent.glob(f".{fa.filename}.part*"))
    assert hashlib.sha256(fa.dest.read_bytes()).hexdigest() == fa.sha256
