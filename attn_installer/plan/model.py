"""The plan as values: typed steps (what each step is, with its data), a backend's plan, the plan.

A step says what it does: install these requirements with these pins (:class:`PipInstall`), build
this checkout into a wheel (:class:`PipWheel`), run this command (:class:`Command`); a step may
first need a file (:class:`FileNeed`: download a URL with a sha256, or take it from a wheelhouse).
Command lines are rendered from these values by :mod:`attn_installer.commands`, for the plan's JSON
(argv + env per step, as plan.schema.json fixes) and for running them; nothing reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from attn_installer import commands
from attn_installer.resolve import Reason
from attn_installer.words import StepKind

__all__ = ["BackendPlan", "Command", "FileNeed", "Pins", "PipInstall", "PipWheel", "Plan", "Step", "TargetProgram"]

SCHEMA_VERSION = 1

Pins = commands.Pins
PipInstall = commands.PipInstall
PipWheel = commands.PipWheel
Command = commands.Command
TargetProgram = commands.TargetProgram
Action = Union[PipInstall, PipWheel, Command, TargetProgram]


@dataclass(frozen=True)
class FileNeed:
    """A file the step's action uses: downloaded from ``url`` into ``dest`` (None: it must already be
    there, e.g. in a wheelhouse), checked against ``sha256`` where one is known."""

    dest: str
    url: Optional[str] = None
    sha256: Optional[str] = None


@dataclass(frozen=True)
class Step:
    kind: StepKind
    """fetch / prepare / build (skipped on a wheel-cache hit), download, install, command."""
    description: str
    action: Action
    env: Mapping[str, str] = field(default_factory=dict)
    need: Optional[FileNeed] = None

    @property
    def argv(self) -> tuple[str, ...]:
        return commands.render(self.action)

    @property
    def installs(self) -> Optional[PipInstall]:
        """The pip / uv install into the target environment this step runs (previewed, pinned)."""
        return self.action if isinstance(self.action, commands.PipInstall) else None

    @property
    def writes(self) -> dict[str, str]:
        """Files (path -> content) written before the step: the torch constraints."""
        p = self.installs
        return {p.pins.path: p.pins.content} if p is not None and p.pins is not None else {}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"argv": list(self.argv), "env": dict(self.env), "description": self.description,
                             "kind": self.kind}
        if self.need is not None and self.need.url:
            d.update(url=self.need.url, dest=self.need.dest, sha256=self.need.sha256)
        if self.writes:
            d["writes"] = self.writes
        return d


@dataclass(frozen=True)
class BackendPlan:
    name: str
    title: str
    attn_implementation: str
    viable: bool
    reasons: tuple[Reason, ...]
    method: Optional[str]
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]
    estimate_minutes: Optional[float]
    installed_version: Optional[str]
    distribution: str
    import_name: str
    packing: bool
    runtime_env: Mapping[str, str]
    download: Optional[dict[str, Optional[str]]] = None
    wheel_cache: Optional[str] = None
    """Source builds: the cache folder for this build key; a wheel there skips fetch + build."""
    key: Mapping[str, Any] = field(default_factory=dict)
    """Source builds: what the built wheel depends on (backend ref, torch, CUDA, ABI, Python, archs, env)."""
    compile_units: int = 0
    """Source builds: compile units (ninja steps, all extensions together) the build runs."""
    disk_gb: float = 0.0
    """Source builds: free disk needed by the source tree and the wheel cache (checked first)."""
    source_dir: Optional[str] = None
    """``--source DIR``: the user's checkout (its content digest is part of the build key)."""
    checkout: Optional[str] = None
    """Source builds: the folder the build runs in (the fresh clone, or ``source_dir``)."""
    verify_rel_tol: float = 0.02
    verify_min_cosine: float = 0.999
    route: Optional[str] = None
    """The route kind these steps take (torch_index, wheel_farm, source, ...)."""
    route_reason: str = ""
    alternatives: tuple[BackendPlan, ...] = ()
    """The other routes that fit, in order: `install` tries the next when one fails."""
    shadows: tuple[str, ...] = ()
    hub: Optional[Mapping[str, Any]] = None
    """hub_kernel route: {"repo", "version"} of the kernel to fetch and verify."""

    @property
    def reason_texts(self) -> tuple[str, ...]:
        return tuple(r.text for r in self.reasons)

    @property
    def candidates(self) -> tuple[BackendPlan, ...]:
        """This route, then the alternatives."""
        return (self, *self.alternatives)

    def _route_dict(self) -> dict[str, Any]:
        return {"kind": self.route, "method": self.method, "reason": self.route_reason,
                "attn_implementation": self.attn_implementation,
                "estimate_minutes": self.estimate_minutes, "download": self.download,
                "steps": [s.to_dict() for s in self.steps]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "attn_implementation": self.attn_implementation,
            "viable": self.viable, "reasons": list(self.reason_texts), "method": self.method,
            "steps": [s.to_dict() for s in self.steps], "warnings": list(self.warnings),
            "estimate_minutes": self.estimate_minutes, "installed_version": self.installed_version,
            "distribution": self.distribution or None, "runtime_env": dict(self.runtime_env),
            "download": self.download, "wheel_cache": self.wheel_cache, "build_key": dict(self.key) or None,
            "compile_units": self.compile_units or None, "disk_gb": self.disk_gb or None,
            "verify": {"rel_tol": self.verify_rel_tol, "min_cosine": self.verify_min_cosine},
            "route": self.route, "routes": [r._route_dict() for r in self.candidates] if self.route else [],
        }


@dataclass(frozen=True)
class Plan:
    recommended: Optional[str]
    backends: tuple[BackendPlan, ...]
    config: Mapping[str, Any]
    blockers: tuple[str, ...]
    warnings: tuple[str, ...]
    workload: str
    config_comments: tuple[str, ...] = ()
    runtime_env: Mapping[str, str] = field(default_factory=dict)
    dtype: Optional[str] = None
    choice: Optional[Any] = None
    """plan.choice.Choice: how the user's training config's attention was treated (None without one)."""

    def backend(self, name: str) -> BackendPlan:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "recommended": self.recommended,
            "backends": [b.to_dict() for b in self.backends], "config": dict(self.config),
            "blockers": list(self.blockers), "warnings": list(self.warnings),
            "workload": self.workload, "dtype": self.dtype,
            "config_comments": list(self.config_comments), "runtime_env": dict(self.runtime_env),
            **({"choice": self.choice.to_dict()} if self.choice is not None else {}),
        }
