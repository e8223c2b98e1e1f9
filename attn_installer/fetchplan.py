"""`attn-install download`: fetch, on a connected machine, every wheel another machine's plan needs,
so an air-gapped node (or a whole cluster) installs with ``--wheelhouse DIR --offline``.

Wheels are chosen for the *target's* Python, platform and glibc (``pip download --platform ...``),
never torch & co. (they are already there and must not move), and dependencies are followed from
each wheel's METADATA, skipping what the target already has in a fitting version.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path
from typing import Callable

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from attn_installer.download import check_exists, fetch
from attn_installer.envstate import canonical
from attn_installer.errors import InstallError
from attn_installer.facts import Facts
from attn_installer.plan import PINNED, BackendPlan
from attn_installer.runner import Runner

__all__ = ["download_for_plan", "platform_tags", "target_environment"]

PIP_TIMEOUT = 1800.0
_VALUE_OPTS = {"--index-url", "--extra-index-url", "--find-links", "--constraint", "-c", "--python"}


def platform_tags(facts: Facts) -> list[str]:
    """pip --platform values for the target: manylinux_2_N for every N its glibc allows."""
    m = facts.host.machine.lower()
    if facts.host.os == "windows":
        return ["win_amd64"] if m in ("amd64", "x86_64") else ["win_arm64"]
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)
    minor = 28
    if facts.host.glibc:
        try:
            minor = Version(facts.host.glibc).minor if Version(facts.host.glibc).major == 2 else 28
        except InvalidVersion:
            pass
    tags = [f"manylinux_2_{n}_{arch}" for n in range(minor, 16, -1)]
    tags += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]
    return tags


def target_environment(facts: Facts) -> dict[str, str]:
    """PEP 508 marker environment of the target machine."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    v = Version(facts.python.version)
    linux = facts.host.os == "linux"
    env.update(python_version=f"{v.major}.{v.minor}", python_full_version=str(v),
               implementation_name=facts.python.implementation,
               platform_machine=facts.host.machine,
               sys_platform="linux" if linux else "win32" if facts.host.os == "windows" else "darwin",
               platform_system="Linux" if linux else "Windows" if facts.host.os == "windows" else "Darwin",
               os_name="nt" if facts.host.os == "windows" else "posix")
    return env


def _requirements(bp: BackendPlan) -> tuple[list[str], list[str]]:
    """(requirement strings, index options) of the plan's install step(s)."""
    reqs: list[str] = []
    index: list[str] = []
    for step in bp.steps:
        if not step.is_install or step.dest or "--find-links" in step.argv:
            continue
        args = list(step.argv)
        start = args.index("install") + 1
        i = start
        while i < len(args):
            a = args[i]
            if a in _VALUE_OPTS:
                if a in ("--index-url", "--extra-index-url"):
                    index += [a, args[i + 1]]
                i += 2
                continue
            if not a.startswith("-"):
                reqs.append(a)
            i += 1
    return reqs, index


def _already_fits(req: Requirement, facts: Facts) -> bool:
    have = {canonical(k): v for k, v in facts.packages.items()}.get(canonical(req.name))
    if have is None:
        return False
    try:
        return req.specifier.contains(Version(have), prereleases=True)
    except InvalidVersion:
        return False


def _metadata_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
        if name is None:
            return []
        text = zf.read(name).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def download_for_plan(bp: BackendPlan, facts: Facts, wheelhouse: Path, runner: Runner,
                      say: Callable[[str], None]) -> list[str]:
    """Download what ``bp`` installs into ``wheelhouse``; one line per wheel or instruction."""
    lines: list[str] = []
    if bp.method in ("builtin", "installed"):
        return [f"{bp.name}: nothing to download ({bp.method})"]
    if bp.method == "wheel":
        for step in bp.steps:
            if step.url and step.dest:
                dest = wheelhouse / Path(step.dest).name
                check_exists(step.url)
                fetch(step.url, dest, step.sha256, lambda d, t: None)
                lines.append(f"{bp.name}: {dest.name}" + (" (sha256 ok)" if step.sha256 else ""))
        return lines
    if bp.method == "source":
        return [f"{bp.name}: source build: build it once on a node like the target with "
                f"`attn-install build {bp.name} --wheelhouse {wheelhouse}`; other nodes then install the "
                "wheel from there"]
    reqs, index = _requirements(bp)
    env = target_environment(facts)
    v = Version(facts.python.version)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--pre",
            "--disable-pip-version-check", "--python-version", f"{v.major}.{v.minor}",
            "--implementation", "cp", "--abi", facts.python.cp_tag, "--abi", "abi3", "--abi", "none"]
    for tag in platform_tags(facts):
        base += ["--platform", tag]
    base += ["--platform", "any", "-d", str(wheelhouse)]
    todo = [(r, index) for r in reqs]
    seen: set[str] = set()
    while todo:
        raw, idx = todo.pop(0)
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            raise InstallError(f"cannot read requirement {raw!r} of {bp.name}") from None
        key = canonical(req.name)
        if key in seen or key in PINNED:
            continue
        seen.add(key)
        before = set(wheelhouse.glob("*.whl"))
        spec = f"{req.name}{req.specifier}"
        done = runner.run((*base, *idx, spec), timeout=PIP_TIMEOUT)
        if not done.ok:
            last = [ln for ln in done.output.splitlines() if ln.strip()][-1:] or [f"exit {done.returncode}"]
            raise InstallError(f"cannot download {spec} for {facts.python.cp_tag} / "
                               f"{platform_tags(facts)[0]}: {last[0]}")
        new = sorted(set(wheelhouse.glob("*.whl")) - before) or sorted(
            p for p in wheelhouse.glob("*.whl") if canonical(p.name.split("-")[0]) == key)
        for wheel in new:
            lines.append(f"{bp.name}: {wheel.name}")
            say(f"  got {wheel.name}")
            for dep in _metadata_requires(wheel):
                try:
                    d = Requirement(dep)
                except InvalidRequirement:
                    continue
                extra_env = [dict(env, extra=e) for e in (req.extras or {""})]
                if d.marker is not None and not any(d.marker.evaluate(e) for e in extra_env):
                    continue
                if canonical(d.name) in PINNED or _already_fits(d, facts):
                    continue
                todo.append((str(d).split(";")[0].strip(), idx))
    return lines
