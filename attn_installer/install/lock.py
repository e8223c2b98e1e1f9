"""An exclusive lock on the target environment, so two attn-install runs never interleave pip
operations in one environment.

The lock file is ``<prefix>/.attn-install.lock``, or a file under the cache's ``locks/`` when the
prefix is not writable. It is opened without following symlinks (``O_NOFOLLOW``): a link planted
there is refused, never truncated through. The holder (pid, time) is written inside it.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

from attn_installer.errors import BusyError, InstallError

__all__ = ["EnvLock", "lock_path"]


def lock_path(prefix: str, locks_dir: Path) -> Path:
    if os.access(prefix, os.W_OK):
        return Path(prefix) / ".attn-install.lock"
    digest = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_")
    return locks_dir / f"{digest}.lock"


class EnvLock:
    def __init__(self, prefix: str, locks_dir: Path, wait_seconds: float,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.wait_seconds = wait_seconds
        self.say = say
        self.path = lock_path(prefix, locks_dir)
        self._fd: Optional[int] = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InstallError(f"{self.path} is a symbolic link; refusing to use it as the lock "
                                   "(remove it: attn-install makes its own)") from None
            raise InstallError(f"cannot open the lock {self.path}: {e.strerror}") from None

    def __enter__(self) -> EnvLock:
        import fcntl  # noqa: PLC0415 - POSIX only; attn-install installs on Linux

        fd = self._open()
        deadline = time.monotonic() + self.wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another attn-install"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise BusyError(f"the environment is locked by {holder} ({self.path}); "
                                    "wait for it to finish, or pass --lock-wait SECONDS") from None
                if not told:
                    self.say(f"waiting for {holder} to release {self.path} ...")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"attn-install pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            import fcntl  # noqa: PLC0415

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
