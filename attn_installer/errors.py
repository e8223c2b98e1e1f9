"""Every error attn-install raises on purpose, with its exit code.

Only :mod:`attn_installer.cli` turns these into an exit; core modules raise them. A message is one
line that names the file / field / fact and says what to do (a failed install adds the last lines
of its log below it).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "INTERNAL_ERROR",
    "AttnInstallError",
    "BenchError",
    "BusyError",
    "CacheError",
    "ConfigError",
    "DiskFullError",
    "DownloadError",
    "FactsError",
    "InstallError",
    "InstallInterruptedError",
    "InternalInstallError",
    "MatrixError",
    "NoViableBackendError",
    "ProbeError",
    "StepFailedError",
    "UsageError",
    "VerifyError",
]

INTERNAL_ERROR = 70
"""A bug: anything that is not an AttnInstallError (traceback with --debug)."""


class AttnInstallError(Exception):
    """Base class: an expected failure with a user-facing message."""

    exit_code: int = 1


class UsageError(AttnInstallError):
    """Bad command-line input (unknown backend, workload, option value)."""

    exit_code = 2


class ProbeError(AttnInstallError):
    """The machine could not be probed at all (not raised for missing GPUs or drivers)."""

    exit_code = 3


class MatrixError(AttnInstallError):
    """A compatibility matrix file is invalid; the message lists every bad row."""

    exit_code = 4


class FactsError(AttnInstallError):
    """A facts file (``--facts``) is missing, malformed or of an unknown schema."""

    exit_code = 5


class NoViableBackendError(AttnInstallError):
    """The user asked for a backend that does not fit this machine."""

    exit_code = 6


class VerifyError(AttnInstallError):
    """A backend failed its real kernel check."""

    exit_code = 7


class InstallError(AttnInstallError):
    """An install step failed (the environment was restored, or the message says its state)."""

    exit_code = 8


class DownloadError(InstallError):
    """A file that does not exist, cannot be reached, or does not match its hash."""


class StepFailedError(InstallError):
    """One backend's install failed: what failed, the hint, and what the rollback did.

    ``outcome`` is the install's record (steps run, verification, rollback) for the report."""

    def __init__(self, message: str, *, hint: str = "", outcome: Optional[Any] = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.outcome = outcome


class DiskFullError(StepFailedError):
    """No space left (ENOSPC) in the target environment, the cache, the temp dir or the log folder;
    the message names the folder (the environment was restored, or the message says its state)."""


class BusyError(AttnInstallError):
    """Another attn-install holds the lock of the target environment."""

    exit_code = 9


class ConfigError(AttnInstallError):
    """An axolotl config cannot be read, parsed, merged or written."""

    exit_code = 10


class BenchError(AttnInstallError):
    """`attn-install bench` could not measure (the measuring process crashed or timed out early)."""

    exit_code = 11


class CacheError(AttnInstallError):
    """The cache folder is unsafe (another user owns it, others can write to it) or unusable."""

    exit_code = 12


class InternalInstallError(AttnInstallError):
    """A bug during an install, reported after the rollback ran: the message says the state the
    environment is in (the traceback with --debug, chained)."""

    exit_code = INTERNAL_ERROR


class InstallInterruptedError(AttnInstallError):
    """Ctrl-C, SIGTERM or SIGHUP during an install; the message says what state the environment is in.

    The exit code is 128 + the signal: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP)."""

    exit_code = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
