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
from typing import Any, Callable, Optional

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from attn_installer import commands
from attn_installer.errors import InstallError
from attn_installer.facts import Facts
from attn_installer.install.download import check_exists, fetch
from attn_installer.install.envstate import canonical
from attn_installer.plan.model import BackendPlan
from attn_installer.runner import Runner

__all__ = ["download_for_plan", "hub_system", "platform_tags", "target_environment"]

PIP_TIMEOUT = 1800.0


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


def _requirements(bp: BackendPlan) -> list[tuple[str, Optional[str], bool]]:
    """(requirement, index URL, follow its dependencies) of the plan's index installs (not its wheel
    files or built wheels); a --no-deps install lists its dependencies in a step of their own."""
    out: list[tuple[str, Optional[str], bool]] = []
    for step in bp.steps:
        p = step.installs
        if p is None or step.need is not None or p.local_wheels:
            continue
        out.extend((r, p.index_url, not p.no_deps) for r in p.requirements)
    return out


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
                      say: Callable[[str], None], pinned: tuple[str, ...]) -> list[str]:
    """Download what ``bp`` installs into ``wheelhouse``; one line per wheel or instruction."""
    lines: list[str] = []
    if bp.method in ("builtin", "installed"):
        return [f"{bp.name}: nothing to download ({bp.method})"]
    if bp.method == "wheel" and bp.hub is None:
        for step in bp.steps:
            need = step.need
            if need is not None and need.url:
                dest = wheelhouse / Path(need.dest).name
                check_exists(need.url)
                fetch(need.url, dest, need.sha256, lambda d, t: None)
                lines.append(f"{bp.name}: {dest.name}" + (" (sha256 ok)" if need.sha256 else ""))
        return lines
    if bp.method == "source":
        return [f"{bp.name}: source build: build it once on a node like the target with "
                f"`attn-install build {bp.name} --wheelhouse {wheelhouse}`; other nodes then install the "
                "wheel from there"]
    lines = _download_index(bp, facts, wheelhouse, runner, say, pinned)
    if bp.hub is not None:
        lines.append(_stage_hub_kernel(bp, facts, wheelhouse, runner, say))
    return lines


def hub_system(facts: Facts) -> dict[str, Any]:
    """The machine as `kernels` matches build variants: torch major.minor, C++ ABI, backend, CPU, OS."""
    t = facts.torch
    assert t is not None and t.cuda is not None
    cuda = Version(t.cuda)
    return {"torch": t.major_minor, "cxx11abi": t.cxx11abi, "backend": f"cu{cuda.major}{cuda.minor}",
            "cpu": {"amd64": "x86_64", "arm64": "aarch64"}.get(facts.host.machine.lower(), facts.host.machine),
            "os": facts.host.os}


def _stage_hub_kernel(bp: BackendPlan, facts: Facts, wheelhouse: Path, runner: Runner,
                      say: Callable[[str], None]) -> str:
    """The hub kernel the target would load, into ``wheelhouse/hub`` (a Hub cache), with this
    machine's kernels / huggingface_hub (`pip install 'attn-install[hub]'`)."""
    import json  # noqa: PLC0415

    from attn_installer import target  # noqa: PLC0415

    assert bp.hub is not None
    repo, version = str(bp.hub["repo"]), int(bp.hub["version"])
    say(f"  staging hub kernel {repo} v{version} for {facts.torch.version if facts.torch else '?'}")
    done = runner.run(target.argv(sys.executable, "attn_hubfetch", repo, str(version), "--cache",
                                  str(wheelhouse / "hub"), "--system", json.dumps(hub_system(facts))),
                      timeout=PIP_TIMEOUT)
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    data = json.loads(rows[-1]) if rows else {"error": done.last_line}
    if "error" in data or not done.ok:
        err = str(data.get("error", ""))
        hint = (" (this machine needs the kernels package: pip install 'attn-install[hub]')"
                if "No module named" in err else "")
        raise InstallError(f"cannot stage hub kernel {repo} v{version}: {err}{hint}")
    return f"{bp.name}: hub kernel {repo} v{version} = {str(data['revision'])[:12]}, {data['variant']} (hub/)"


def _pip_download(req: Requirement, key: str, facts: Facts, v: Version, wheelhouse: Path, runner: Runner,
                  index: Optional[str]) -> list[Path]:
    """``pip download`` of one requirement for the target; the wheels it added (or had already)."""
    before = set(wheelhouse.glob("*.whl"))
    spec = f"{req.name}{req.specifier}"
    argv = commands.pip_download(sys.executable, python_version=f"{v.major}.{v.minor}", abi=facts.python.cp_tag,
                                 platforms=tuple(platform_tags(facts)), dest=str(wheelhouse), spec=spec,
                                 index_url=index)
    done = runner.run(argv, timeout=PIP_TIMEOUT)
    if not done.ok:
        raise InstallError(f"cannot download {spec} for {facts.python.cp_tag} / "
                           f"{platform_tags(facts)[0]}: {done.last_line}")
    return sorted(set(wheelhouse.glob("*.whl")) - before) or sorted(
        p for p in wheelhouse.glob("*.whl") if canonical(p.name.split("-")[0]) == key)


def _download_index(bp: BackendPlan, facts: Facts, wheelhouse: Path, runner: Runner,
                    say: Callable[[str], None], pinned: tuple[str, ...]) -> list[str]:
    """The wheels of the plan's index installs, and their dependencies, for the target."""
    lines: list[str] = []
    env = target_environment(facts)
    v = Version(facts.python.version)
    todo = list(_requirements(bp))
    wheels: dict[str, list[Path]] = {}
    """Downloaded so far: package -> its wheels; a later request with new extras follows only those."""
    done_extras: set[tuple[str, str]] = set()
    while todo:
        raw, index, follow = todo.pop(0)
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            raise InstallError(f"cannot read requirement {raw!r} of {bp.name}") from None
        key = canonical(req.name)
        extras = [e for e in sorted(req.extras | {""}) if (key, e) not in done_extras]
        if key in pinned or not extras:
            continue
        done_extras.update((key, e) for e in extras)
        if key not in wheels:
            wheels[key] = _pip_download(req, key, facts, v, wheelhouse, runner, index)
            for wheel in wheels[key]:
                lines.append(f"{bp.name}: {wheel.name}")
                say(f"  got {wheel.name}")
        for wheel in wheels[key] if follow else ():
            for dep in _metadata_requires(wheel):
                try:
                    d = Requirement(dep)
                except InvalidRequirement:
                    continue
                if d.marker is not None and not any(d.marker.evaluate(dict(env, extra=e)) for e in extras):
                    continue
                if canonical(d.name) in pinned or _already_fits(d, facts):
                    continue
                todo.append((str(d).split(";")[0].strip(), index, True))
    return lines
