"""Step intents and the one place their command lines are rendered.

Every pip / uv command line attn-install runs comes from here: the install of a plan step, its
``--dry-run --report`` preview, the wheel build of a source step, the rollback's reinstalls and
removals, and ``pip download`` for another machine. Pure: values in, argv tuples out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

__all__ = [
    "Command", "Pins", "PipInstall", "PipWheel", "TargetProgram", "pip_download", "pip_preview", "pip_restore",
    "pip_uninstall", "render",
]

QUIET = ("--no-input", "--disable-pip-version-check")


@dataclass(frozen=True)
class Pins:
    """The constraints file that keeps torch & co. at their installed versions."""

    path: str
    content: str


@dataclass(frozen=True)
class PipInstall:
    """Install ``requirements`` (names with specifiers, or wheel paths) into ``python``'s environment."""

    python: str
    requirements: tuple[str, ...]
    installer: str = "pip"
    index_url: Optional[str] = None
    """The index to resolve from (dropped when installing from a wheelhouse)."""
    local_wheels: Optional[str] = None
    """A folder of wheels built here: the only source of the requirement (--no-index --find-links)."""
    wheelhouse: Optional[str] = None
    """--wheelhouse / --offline: the only source of everything."""
    no_deps: bool = False
    force_reinstall: bool = False
    pre: bool = False
    pins: Optional[Pins] = None

    def _head(self, verb: str = "install") -> tuple[str, ...]:
        if self.installer == "uv":
            return ("uv", "pip", verb, "--python", self.python)
        return (self.python, "-m", "pip", verb, *QUIET)

    def _options(self) -> tuple[str, ...]:
        """Everything after ``pip install`` (the part a preview repeats)."""
        out: list[str] = []
        if self.wheelhouse:
            out += ["--no-index", "--find-links", self.wheelhouse]
        if self.no_deps:
            out.append("--no-deps")
        if self.pins is not None:
            out += ["--constraint", self.pins.path]
        if self.pre:
            out.append("--pre")
        out += self.requirements
        if self.index_url and not self.wheelhouse:
            out += ["--index-url", self.index_url]
        if self.local_wheels:
            out += ["--no-index", "--find-links", self.local_wheels]
        if self.force_reinstall:
            out.append("--force-reinstall")
        return tuple(out)


@dataclass(frozen=True)
class PipWheel:
    """Build the checkout ``source`` into a wheel in ``wheel_dir`` with the target's torch."""

    python: str
    source: str
    wheel_dir: str


@dataclass(frozen=True)
class Command:
    """Any other command (git, mkdir, ln). ``creates``: the folder it makes (a git checkout); one left
    by an earlier run is removed first."""

    argv: tuple[str, ...]
    creates: Optional[str] = None


@dataclass(frozen=True)
class TargetProgram:
    """One of attn-install's programs (attn_installer/target/) run in the target's Python."""

    python: str
    module: str
    args: tuple[str, ...] = ()


def render(action: Union[PipInstall, PipWheel, Command, TargetProgram]) -> tuple[str, ...]:
    if isinstance(action, PipInstall):
        return (*action._head(), *action._options())
    if isinstance(action, PipWheel):
        return (action.python, "-m", "pip", "wheel", "--verbose", "--no-build-isolation", "--no-deps", *QUIET,
                "--wheel-dir", action.wheel_dir, action.source)
    if isinstance(action, TargetProgram):
        from attn_installer import target  # noqa: PLC0415

        return target.argv(action.python, action.module, *action.args)
    return action.argv


def pip_preview(p: PipInstall, report: str) -> tuple[str, ...]:
    """What the install would do, changing nothing (pip >= 22.2; always the target's own pip)."""
    return (p.python, "-m", "pip", "install", "--dry-run", "--report", report, *p._options())


def _pip(python: str, installer: str, verb: str, *args: str) -> tuple[str, ...]:
    if installer == "uv":
        return ("uv", "pip", verb, "--python", python, *args)
    return (python, "-m", "pip", verb, *(("-y",) if verb == "uninstall" else ()), *QUIET, *args)


def pip_uninstall(python: str, installer: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return _pip(python, installer, "uninstall", *names)


def pip_restore(python: str, installer: str, spec: str, *, find_links: tuple[str, ...] = (),
                force: bool = False) -> tuple[str, ...]:
    """Reinstall ``name==version`` without dependencies: from the backup folders (offline) when
    ``find_links`` are given, else from the index."""
    args: list[str] = ["--no-deps"]
    if find_links:
        args.append("--no-index")
        if force:
            args.append("--force-reinstall")
        for link in find_links:
            args += ["--find-links", link]
    return _pip(python, installer, "install", *args, spec)


def pip_download(python: str, *, python_version: str, abi: str, platforms: tuple[str, ...], dest: str,
                 spec: str, index_url: Optional[str] = None) -> tuple[str, ...]:
    """``pip download`` of one requirement's binary wheel for *another* machine (its Python, ABI and
    platform tags); run with attn-install's own interpreter, not the target's."""
    argv = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--pre",
            "--disable-pip-version-check", "--python-version", python_version, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in platforms:
        argv += ["--platform", tag]
    argv += ["--platform", "any", "-d", dest]
    if index_url:
        argv += ["--index-url", index_url]
    return (*argv, spec)
