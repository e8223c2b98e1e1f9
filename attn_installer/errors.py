"""Every error attn-install raises on purpose, with its exit code.

Only :mod:`attn_installer.cli` turns these into an exit; core modules raise them.
A message is one line that names the file / field / fact and says what to do.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AttnInstallError",
    "BenchError",
    "BusyError",
    "ConfigError",
    "InstallError",
    "InterruptedError_",
    "FactsError",
    "MatrixError",
    "NoViableBackendError",
    "ProbeError",
    "UsageError",
    "VerifyError",
]


class AttnInstallError(Exception):
    """Base class: an expected failure with a user-facing message."""

    exit_code: ClassVar[int] = 1


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


class BusyError(AttnInstallError):
    """Another attn-install holds the lock of the target environment."""

    exit_code = 9


class InterruptedError_(AttnInstallError):
    """Ctrl-C during an install; the message says what state the environment is in."""

    exit_code = 130


class ConfigError(AttnInstallError):
    """An existing axolotl config (``config --merge``) cannot be read, parsed or merged."""

    exit_code = 10


class BenchError(AttnInstallError):
    """`attn-install bench` could not measure (the measuring process crashed or timed out early)."""

    exit_code = 11
