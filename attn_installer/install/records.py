"""What one backend's install run is given and what it leaves: the services it talks to, its
options, the record of each step and the outcome (for the report, the summary and the next route)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from attn_installer.facts import Gpu
from attn_installer.matrix import Matrix
from attn_installer.modelconfig import ModelAttention
from attn_installer.paths import Paths
from attn_installer.runner import Runner
from attn_installer.verify import DEFAULT_HEAD_DIMS, VerifyResult

__all__ = ["Failed", "Options", "Outcome", "Say", "Services", "StepRecord"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Services:
    """What the loop talks to; built once by the caller (the CLI's App), replaced in tests."""

    runner: Runner
    paths: Paths
    matrix: Matrix
    say: Say
    run_id: str
    log_path: Optional[Path] = None


@dataclass(frozen=True)
class Options:
    python: str
    verify: bool = True
    dtype: str = "bf16"
    head_dims: tuple[int, ...] = DEFAULT_HEAD_DIMS
    model: Optional[ModelAttention] = None
    """The training's model (--axolotl-config): verification checks its head dims and head counts."""
    gpus: tuple[Gpu, ...] = ()
    """The GPUs visible: verification runs once on each distinct model."""
    lock_wait: float = 600.0
    wheelhouse: Optional[Path] = None
    offline: bool = False
    stall_seconds: float = 600.0
    export_wheelhouse: Optional[Path] = None
    """`attn-install build --wheelhouse`: leave the built wheel (and its key) there."""
    build_only: bool = False


@dataclass
class StepRecord:
    description: str
    argv: list[str]
    kind: str
    status: str
    """ok, failed, skipped (cache hit), or not run."""
    returncode: Optional[int] = None
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "argv": self.argv, "kind": self.kind, "status": self.status,
                "returncode": self.returncode, "seconds": round(self.seconds, 2), "note": self.note}


@dataclass
class Outcome:
    """The record of one backend's install, for the report and the summary."""

    backend: str
    ok: bool = False
    state: str = ""
    message: str = ""
    hint: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    verify: Optional[VerifyResult] = None
    rollback: Optional[dict[str, Any]] = None
    changed: dict[str, list[Optional[str]]] = field(default_factory=dict)
    log_path: Optional[str] = None
    built_wheel: Optional[str] = None
    built: bool = False
    """A build-only run: the wheel was built, nothing was installed."""
    route: Optional[str] = None
    hub: Optional[dict[str, Any]] = None
    """A hub kernel fetched: repo, version, revision (the commit), variant, path, cache."""
    impl: Optional[str] = None
    """attn_implementation of the route installed (a hub kernel path for hub_kernel)."""
    packing: Optional[bool] = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Every route tried for this backend, in order, with how it ended."""

    def summary(self) -> dict[str, Any]:
        return {"route": self.route, "ok": self.ok, "state": self.state, "message": self.message.split("\n")[0],
                "verify": None if self.verify is None else {"status": self.verify.status, "detail": self.verify.detail}}

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "attempts": self.attempts, "hub": self.hub,
            "backend": self.backend, "ok": self.ok, "state": self.state, "message": self.message,
            "hint": self.hint or None, "steps": [s.to_dict() for s in self.steps],
            "verify": None if self.verify is None else self.verify.to_dict(),
            "rollback": self.rollback, "changed": self.changed, "log": self.log_path, "built_wheel": self.built_wheel,
        }


class Failed(Exception):
    """A step or check that failed: its message and hint; the loop rolls back, then raises the
    typed error (StepFailedError, DiskFullError)."""

    def __init__(self, message: str, hint: str = "", disk: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.disk = disk
        """A full disk: DiskFullError once rolled back."""
