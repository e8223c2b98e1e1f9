"""The only module that spawns processes.

Every command is an argv list (never a shell string), runs with a timeout, and is logged
(argv, exit code, duration, output) to the log file when one is given. A missing executable
is a result (exit 127), not an exception: probes treat "no nvidia-smi" as a fact.

A command runs in a process group of its own (a terminal's Ctrl-C reaches attn-install, which stops
the command and rolls back), and on Linux it is killed when attn-install dies, even by ``kill -9``:
pip never finishes an install unattended. Any interruption of attn-install while a command runs
(Ctrl-C, SIGTERM, SIGHUP: :mod:`attn_installer.stops`) kills the command's whole process group before
it propagates. ``on_spawn`` (when set) is told each command's pid, which is its process group: the
install journal records it, so a later run can stop what a ``kill -9`` left running.

A command given no working directory runs from a fresh private one (``mkdtemp``, mode 0700, removed
after it): ``python -m pip`` puts its working directory first on sys.path, so nothing in the caller's
directory (a ``pip/`` folder, a ``torch.py``) can shadow what it imports. A relative executable path
is made absolute first. The log is opened without following symbolic links; a log that cannot be
written (a full disk) stops the logging, not the command, and is kept in ``log_problem``.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Optional, Protocol, Sequence

__all__ = ["Completed", "Runner", "SubprocessRunner", "format_argv"]

NOT_FOUND = 127
TIMED_OUT = 124


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    not_found: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, n: int = 1) -> list[str]:
        """The last *n* non-empty lines of the output (stderr's when it has any)."""
        text = self.stderr if self.stderr.strip() else self.stdout
        return [ln for ln in text.splitlines() if ln.strip()][-n:]

    @property
    def last_line(self) -> str:
        """The last non-empty output line, or what happened when there is none."""
        lines = self.tail(1)
        if lines:
            return lines[0].strip()
        return "timed out" if self.timed_out else f"exit {self.returncode}, no output"


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Path] = None,
        on_line: Optional[Callable[[str], None]] = None,
        on_idle: Optional[Callable[[float], None]] = None,
        idle_seconds: float = 600.0,
    ) -> Completed: ...


_prctl: Optional[Callable[..., int]] = None


def _preexec() -> Optional[Callable[[], None]]:
    """Linux: what the child runs between fork and exec so that it is SIGKILLed when attn-install
    dies (prctl PR_SET_PDEATHSIG). libc's prctl is looked up here, in the parent, so the child does
    no import; and a parent that died before the prctl took effect (a ``kill -9`` landing between
    fork and prctl) is caught by comparing the parent pid, so no command outlives attn-install."""
    global _prctl  # noqa: PLW0603 - looked up once
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        try:
            import ctypes  # noqa: PLC0415

            _prctl = ctypes.CDLL(None).prctl
        except (OSError, AttributeError):  # no libc prctl: the command still runs
            return None
    prctl, parent = _prctl, os.getpid()

    def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:  # the parent is already gone: the signal will never come
            os._exit(137)

    return die_with_parent


def format_argv(argv: Sequence[str]) -> str:
    """The argv as a copy-pasteable shell line (for logs and dry runs only)."""
    return " ".join(shlex.quote(a) for a in argv)


class SubprocessRunner:
    """Runs commands for real. ``log`` receives one record per command."""

    def __init__(self, log_path: Optional[Path] = None) -> None:
        self.log_path = log_path
        self.log_problem: Optional[OSError] = None
        """Why the log stopped being written (ENOSPC, a planted link), or None."""
        self.on_spawn: Optional[Callable[[int], None]] = None
        """Told the pid (= process group) of each command as it starts."""

    def _log(self, text: str) -> None:
        if self.log_path is None or self.log_problem is not None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(self.log_path, flags, 0o600)
            try:
                data = text.encode("utf-8", "replace")
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        except OSError as e:
            if e.filename is None:
                e.filename = str(self.log_path)
            self.log_problem = e

    def _spawned(self, pid: int) -> None:
        if self.on_spawn is not None:
            self.on_spawn(pid)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Path] = None,
        on_line: Optional[Callable[[str], None]] = None,
        on_idle: Optional[Callable[[float], None]] = None,
        idle_seconds: float = 600.0,
    ) -> Completed:
        """Run argv; with ``on_line`` stream merged output line by line, and call ``on_idle`` each
        time ``idle_seconds`` pass without output. Ctrl-C kills the command's process group."""
        if cwd is not None:
            return self._run(argv, timeout, env, cwd, on_line, on_idle, idle_seconds)
        try:
            private = tempfile.mkdtemp(prefix="attn-install-cwd-")
        except OSError:
            # no temp dir to be had (a full disk): / is writable by root alone, who needs no shadowing
            return self._run(argv, timeout, env, Path("/"), on_line, on_idle, idle_seconds)
        try:
            return self._run(argv, timeout, env, Path(private), on_line, on_idle, idle_seconds)
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def _run(
        self,
        argv: Sequence[str],
        timeout: float,
        env: Optional[Mapping[str, str]],
        cwd: Path,
        on_line: Optional[Callable[[str], None]],
        on_idle: Optional[Callable[[float], None]],
        idle_seconds: float,
    ) -> Completed:
        args = tuple(argv)
        path = (env or os.environ).get("PATH")
        exe = os.path.abspath(args[0]) if os.sep in args[0] else shutil.which(args[0], path=path)
        start = time.monotonic()
        if exe is None or not os.path.exists(exe):
            done = Completed(args, NOT_FOUND, "", f"{args[0]}: command not found\n", 0.0,
                             not_found=True)
            self._log(f"+ {format_argv(args)}\n")
            self._record(done, streamed=False)
            return done
        full_env = dict(env) if env is not None else None
        self._log(f"+ {format_argv(args)}\n" + "".join(
            f"  env {k}={v}\n" for k, v in (env or {}).items() if os.environ.get(k) != v))
        if on_line is None:
            try:
                proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                    (exe, *args[1:]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL, text=True, errors="replace", env=full_env, cwd=cwd,
                    start_new_session=True, preexec_fn=_preexec(),  # noqa: PLW1509 - prctl only
                )
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                done = Completed(args, NOT_FOUND, "", f"{args[0]}: {e.strerror}\n",
                                 time.monotonic() - start, not_found=True)
            else:
                try:
                    self._spawned(proc.pid)
                    out, err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    out, err = proc.communicate()
                    done = Completed(args, TIMED_OUT, out or "", err or "", time.monotonic() - start,
                                     timed_out=True)
                except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: the command goes first
                    self._interrupted(proc)
                    raise
                else:
                    done = Completed(args, proc.returncode, out, err, time.monotonic() - start)
        else:
            done = self._stream(args, exe, timeout, full_env, cwd, on_line, start, on_idle, idle_seconds)
        self._record(done, streamed=on_line is not None)
        return done

    def _stream(
        self,
        args: tuple[str, ...],
        exe: str,
        timeout: float,
        env: Optional[dict[str, str]],
        cwd: Optional[Path],
        on_line: Callable[[str], None],
        start: float,
        on_idle: Optional[Callable[[float], None]] = None,
        idle_seconds: float = 600.0,
    ) -> Completed:
        """Run with merged stdout/stderr delivered line by line (long installs and builds)."""
        import selectors

        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            (exe, *args[1:]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True, errors="replace", bufsize=1,
            start_new_session=True, preexec_fn=_preexec(),  # noqa: PLW1509 - prctl only
        )
        assert proc.stdout is not None
        try:
            self._spawned(proc.pid)
        except BaseException:
            self._interrupted(proc)
            raise
        lines: list[str] = []
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        timed_out = False
        stream: IO[str] = proc.stdout
        last_output = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                remaining = timeout - (now - start)
                if remaining <= 0:
                    timed_out = True
                    _kill_group(proc)
                    break
                if not sel.select(timeout=min(remaining, 1.0)):
                    if proc.poll() is not None:
                        break
                    if on_idle is not None and time.monotonic() - last_output >= idle_seconds:
                        on_idle(time.monotonic() - last_output)
                        last_output = time.monotonic()  # report again after another idle period
                    continue
                line = stream.readline()
                if not line:
                    break
                last_output = time.monotonic()
                lines.append(line)
                self._log("  | " + line)
                on_line(line.rstrip("\n"))
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP (or a failing callback): the command goes first
            self._interrupted(proc)
            raise
        rc = proc.wait()
        sel.close()
        stream.close()
        return Completed(args, TIMED_OUT if timed_out else rc, "".join(lines), "",
                         time.monotonic() - start, timed_out=timed_out)

    def _interrupted(self, proc: subprocess.Popen[str]) -> None:
        """Ctrl-C: the command runs in its own session, so it and its children are ended here."""
        _kill_group(proc)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take 30 s
            pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._log("  [interrupted]\n")

    def _record(self, done: Completed, streamed: bool) -> None:
        if self.log_path is None:
            return
        status = "timed out" if done.timed_out else f"exit {done.returncode}"
        body = "" if streamed else "".join(f"  | {line}\n" for line in done.output.splitlines())
        self._log(body + f"  [{status}, {done.seconds:.2f}s]\n")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the command and everything it started (a shell's children hold the pipes open)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()

