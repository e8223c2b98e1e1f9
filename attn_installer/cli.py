"""The `attn-install` command line: a thin click layer and the only place that exits.

Errors raised as AttnInstallError print one line and exit with their code; anything else is a
bug and shows a traceback only with --debug (or ATTN_INSTALL_DEBUG=1).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

from attn_installer import __version__
from attn_installer.errors import AttnInstallError, NoViableBackendError, UsageError

__all__ = ["main"]

INTERNAL_ERROR = 70
DEFAULT_CONFIG = "attn-install-config.yaml"


def _matrix_dir() -> Optional[Path]:
    d = os.environ.get("ATTN_INSTALL_MATRIX_DIR")
    return Path(d) if d else None


def _probe(python: Optional[str], want_arch_list: bool = False) -> Any:
    from attn_installer.probe import probe_system  # noqa: PLC0415 - lazy: keep --help fast
    from attn_installer.runner import SubprocessRunner  # noqa: PLC0415

    return probe_system(os.environ, SubprocessRunner(), python_exe=python,
                        want_arch_list=want_arch_list)


def _facts(facts_file: Optional[Path], python: Optional[str]) -> Any:
    if facts_file is not None:
        from attn_installer.facts import load_facts  # noqa: PLC0415

        return load_facts(facts_file)
    return _probe(python)


def _cache_dir() -> str:
    return os.environ.get("ATTN_INSTALL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "attn-install")


def _plan(facts: Any, workload: str, backend: Optional[str], allow_source: bool,
          head_dims: tuple[int, ...], dtypes: tuple[str, ...], target_archs: tuple[str, ...],
          axolotl_version: Optional[str], measured: tuple[Any, ...] = (), **install: Any) -> Any:
    from attn_installer.matrix import load_matrix  # noqa: PLC0415
    from attn_installer.plan import make_plan  # noqa: PLC0415
    from attn_installer.resolve import Request  # noqa: PLC0415

    if axolotl_version is not None:
        from packaging.version import InvalidVersion, Version  # noqa: PLC0415

        try:
            Version(axolotl_version)
        except InvalidVersion:
            raise UsageError(f"--axolotl-version: '{axolotl_version}' is not a version") from None
    for arch in target_archs:
        import re  # noqa: PLC0415

        if not re.fullmatch(r"sm_\d{2,3}|gfx[0-9a-f]{3,4}", arch):
            raise UsageError(f"--target-arch: '{arch}' is not an arch like sm_90 or gfx942")
    request = Request(workload=workload, backend=backend, allow_source=allow_source,
                      head_dims=head_dims, dtypes=dtypes, target_archs=target_archs,
                      axolotl_version=axolotl_version, cache_dir=_cache_dir(), measured=measured, **install)
    return make_plan(facts, load_matrix(_matrix_dir()), request)


WORKLOAD = click.Choice(["full", "lora", "inference"])


def _plan_options(f: Any) -> Any:
    # --inference is its own flag folded into workload here: two options sharing one destination
    # behave differently across click 8.1 - 8.3
    @functools.wraps(f)
    def fold_inference(*args: Any, inference: bool = False, **kwargs: Any) -> Any:
        if inference:
            if kwargs.get("workload") not in ("full", "inference"):
                raise UsageError(f"--inference and --workload {kwargs.get('workload')} disagree: give one")
            kwargs["workload"] = "inference"
        return f(*args, **kwargs)

    opts = [
        click.option("--workload", type=WORKLOAD, default="full", show_default=True,
                     help="What the config is for; SageAttention is never picked for full."),
        click.option("--inference", is_flag=True,
                     help="Same as --workload inference: forward-only FA3 builds (no backward kernels)."),
        click.option("--backend", "backend", default=None, metavar="NAME",
                     help="Plan for this backend only (e.g. flash_attention_3)."),
        click.option("--allow-source", is_flag=True,
                     help="Allow recommending a backend that needs a source build."),
        click.option("--head-dim", "head_dims", type=int, multiple=True,
                     help="Head dims to build FA3 for (trims compile units); repeatable."),
        click.option("--dtype", "dtypes", type=click.Choice(["bf16", "fp16", "fp8"]), multiple=True,
                     help="Dtypes to build FA3 for; repeatable."),
        click.option("--target-arch", "target_archs", multiple=True, metavar="ARCH",
                     help="Build for this arch (sm_90, gfx942) instead of the GPUs present."),
        click.option("--axolotl-version", default=None, metavar="V",
                     help="Write config keys for this axolotl version (default: the installed one)."),
        click.option("--measured", is_flag=True,
                     help="Rank by this machine's cached `attn-install bench` times (static ranking if none)."),
    ]
    wrapped: Any = fold_inference
    for o in reversed(opts):
        wrapped = o(wrapped)
    return wrapped


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attn-install")
@click.option("--auto", is_flag=True,
              help="Probe, plan, install the recommended backend, verify it, write the axolotl config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing anything.")
@click.option("--dry-run", is_flag=True, help="With --auto: print every step, change nothing.")
@click.option("--debug", is_flag=True, envvar="ATTN_INSTALL_DEBUG", help="Show tracebacks.")
@click.option("--python", "python", default=None, metavar="PATH",
              help="Target this interpreter's environment (default: the one running attn-install).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="Where --auto writes the config.")
@click.option("--workload", type=WORKLOAD, default="full", show_default=True)
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --auto: install only from this folder of wheels.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --auto: write a JSON report of facts, plan, steps, verification.")
@click.pass_context
def cli(ctx: click.Context, auto: bool, yes: bool, dry_run: bool, debug: bool, python: Optional[str],
        output: Path, workload: str, wheelhouse: Optional[Path], report_file: Optional[Path]) -> None:
    """Install the attention backend that fits this machine, verified, without touching torch.

    \b
    attn-install --auto            probe, plan, install, verify, write the axolotl config
    attn-install probe [--json]    what this machine has
    attn-install plan [--json]     which backends fit, why, and how each would be installed
    attn-install install [NAME]    install a backend (default: the recommended one), verified
    attn-install colab             a ready Colab cell
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand is not None:
        return
    if not auto:
        click.echo(ctx.get_help())
        return
    _install_flow((), python=python, workload=workload, yes=yes, dry_run=dry_run,
                  wheelhouse=wheelhouse, offline=False, installer="pip", report_file=report_file,
                  source_dir=None, verify=True, lock_wait=600.0, auto=True, output=output,
                  allow_source=False, head_dims=(), dtypes=(), target_archs=(), axolotl_version=None)


def _measured(facts: Any, workload: str, quiet: bool = False) -> tuple[Any, ...]:
    """Speeds from the newest cached bench of this machine, or () with a note on stderr."""
    from attn_installer.bench import find_measured, measured_speeds  # noqa: PLC0415

    report = find_measured(Path(_cache_dir()), facts, workload)
    if report is None:
        if quiet:
            return ()
        click.echo("no `attn-install bench` result for this GPU, driver, torch and backend versions "
                   f"in {_cache_dir()}: using the static ranking (run `attn-install bench` first)", err=True)
        return ()
    vendor = facts.gpus[0].vendor if facts.gpus else None
    return measured_speeds(report, workload, vendor)


def _write_config(plan: Any, output: Path) -> None:
    from attn_installer.config import render_yaml, write_atomic  # noqa: PLC0415

    header = [f"written by attn-install {__version__}: {plan.recommended} for {plan.workload}"]
    text = render_yaml(plan.config, plan.config_comments, header)
    write_atomic(output, text)
    if plan.runtime_env:
        env_file = output.with_suffix(".env")
        write_atomic(env_file, "".join(f"export {k}={v}\n" for k, v in plan.runtime_env.items()))
        click.echo(f"wrote {env_file}: environment the backend needs at run time (source it)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print facts.schema.json (schema_version 1).")
@click.option("--python", "python", default=None, metavar="PATH", help="Probe this interpreter.")
@click.option("--torch-arch-list", is_flag=True,
              help="Also read torch.cuda.get_arch_list() (imports torch in a subprocess).")
def probe(as_json: bool, python: Optional[str], torch_arch_list: bool) -> None:
    """Print the facts about this machine."""
    facts = _probe(python, torch_arch_list)
    if as_json:
        click.echo(facts.to_json())
    else:
        from attn_installer.console import render_facts  # noqa: PLC0415

        click.echo(render_facts(facts))


@cli.command()
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), default=None,
              help="Plan for the machine this facts file describes (from `probe --json`).")
@click.option("--json", "as_json", is_flag=True, help="Print plan.schema.json (schema_version 1).")
@click.option("--python", "python", default=None, metavar="PATH")
@click.option("--verbose", "-v", is_flag=True, help="Every reason for every backend.")
@_plan_options
def plan(facts_file: Optional[Path], as_json: bool, python: Optional[str], verbose: bool,
         workload: str, backend: Optional[str], allow_source: bool, head_dims: tuple[int, ...],
         dtypes: tuple[str, ...], target_archs: tuple[str, ...], axolotl_version: Optional[str],
         measured: bool) -> None:
    """Which backends fit, why or why not, and the exact steps for each."""
    facts = _facts(facts_file, python)
    p = _plan(facts, workload, backend, allow_source, head_dims, dtypes, target_archs, axolotl_version,
              _measured(facts, workload) if measured else ())
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
    else:
        from attn_installer.console import render_plan  # noqa: PLC0415

        click.echo(render_plan(p, verbose=verbose))
    if backend is not None and p.recommended is None:
        reasons = "; ".join(p.backend(backend).reasons)
        raise NoViableBackendError(f"{backend} does not fit this machine: {reasons}")


@cli.command()
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
@click.option("--merge", "merge", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="EXISTING.yaml",
              help="Update this axolotl config in place (backup FILE.bak, diff printed) instead of -o.")
@click.option("--python", "python", default=None, metavar="PATH")
@_plan_options
@click.pass_context
def config(ctx: click.Context, facts_file: Optional[Path], output: Path, merge: Optional[Path],
           python: Optional[str], workload: str, backend: Optional[str], allow_source: bool,
           head_dims: tuple[int, ...], dtypes: tuple[str, ...], target_archs: tuple[str, ...],
           axolotl_version: Optional[str], measured: bool) -> None:
    """Write the recommended axolotl attention keys to a YAML file, or merge them into one
    (--measured: the measured winner)."""
    if merge is not None and ctx.get_parameter_source("output") != click.core.ParameterSource.DEFAULT:
        raise UsageError("--merge updates its file in place; drop --output")
    facts = _facts(facts_file, python)
    p = _plan(facts, workload, backend, allow_source, head_dims, dtypes, target_archs, axolotl_version,
              _measured(facts, workload) if measured else ())
    if p.recommended is None:
        raise NoViableBackendError("no backend fits: " + "; ".join(p.blockers or ["see `attn-install plan`"]))
    if merge is not None:
        _merge_config(p, merge)
        return
    _write_config(p, output)
    click.echo(f"wrote {output} ({p.recommended})")


def _merge_config(plan: Any, path: Path) -> None:
    from attn_installer.config import conflicting_keys, merge_file  # noqa: PLC0415
    from attn_installer.matrix import load_matrix  # noqa: PLC0415

    remove = conflicting_keys(plan.config, load_matrix(_matrix_dir()).attention_keys)
    out = merge_file(path, plan.config, remove, plan.config_comments)
    if out.backup is None:
        click.echo(f"{path} already holds the recommended keys for {plan.recommended}: nothing changed")
        return
    click.echo(out.diff, nl=False)
    done = [f"set {', '.join(out.result.changed)}"] if out.result.changed else []
    done += [f"removed {', '.join(out.result.removed)}"] if out.result.removed else []
    click.echo(f"updated {path} for {plan.recommended} ({'; '.join(done)}); the original is in {out.backup}")
    if plan.runtime_env:
        click.echo("the backend needs at run time: "
                   + " ".join(f"{k}={v}" for k, v in plan.runtime_env.items()))


@cli.command()
@click.option("--notebook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.ipynb", help="Write a one-cell notebook (nbformat v4) instead of printing.")
@click.option("--spec", default=None, metavar="SPEC",
              help="What the cell pip-installs when attn-install is missing (default: attn-install; "
                   "a git+https:// URL or a wheel path work too).")
def colab(notebook: Optional[Path], spec: Optional[str]) -> None:
    """Print a Colab cell that installs attn-install into the notebook's Python and runs --auto --yes."""
    from attn_installer.colab import DEFAULT_SPEC, colab_cell, notebook_json  # noqa: PLC0415

    cell = colab_cell(spec or DEFAULT_SPEC)
    if notebook is None:
        click.echo(cell, nl=False)
        return
    from attn_installer.config import write_atomic  # noqa: PLC0415

    write_atomic(notebook, notebook_json(cell))
    click.echo(f"wrote {notebook}: one cell; open it in Colab (File > Upload notebook) and run it")


@cli.command()
@click.argument("backends", nargs=-1)
@click.option("--python", "python", default=None, metavar="PATH", help="Verify in this interpreter.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Default: the dtype the plan's config uses (bf16; fp16 before Ampere).")
@click.option("--head-dim", type=int, default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def verify(backends: tuple[str, ...], python: Optional[str], dtype: Optional[str], head_dim: int,
           as_json: bool) -> None:
    """Run a real forward + backward of BACKENDS (default: the recommended one) against math SDPA."""
    from attn_installer.errors import VerifyError  # noqa: PLC0415
    from attn_installer.runner import SubprocessRunner  # noqa: PLC0415
    from attn_installer.verify import verify_backend  # noqa: PLC0415

    facts = _probe(python)
    p = _plan(facts, "full", None, False, (), (), (), None)
    names = backends or ((p.recommended,) if p.recommended else ())
    if not names:
        raise NoViableBackendError("nothing to verify: " + "; ".join(p.blockers or ["no backend fits"]))
    unknown = [n for n in names if n not in {b.name for b in p.backends}]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}: choose from " + ", ".join(b.name for b in p.backends))
    exe = facts.python.executable or sys.executable
    results = []
    for name in names:
        click.echo(f"verifying {name} ...", err=True)
        bp = p.backend(name)
        res = verify_backend(SubprocessRunner(), exe, name, dtype=dtype or p.dtype or "bf16", head_dim=head_dim,
                             rel_tol=bp.verify_rel_tol, min_cosine=bp.verify_min_cosine)
        results.append(res)
        if not as_json:
            click.echo(f"{name}: {res.status}: {res.detail}")
            kernels = res.data.get("sdpa_kernels")
            if isinstance(kernels, dict):
                for k, v in kernels.items():
                    click.echo(f"  sdpa {k}: {v}")
    if as_json:
        click.echo(json.dumps([{"backend": r.backend, "status": r.status, "detail": r.detail, **r.data}
                               for r in results], indent=2))
    failed = [r.backend for r in results if not r.ok]
    if failed:
        raise VerifyError(f"verification failed for {', '.join(failed)}")


# --------------------------------------------------------------------------- install / download / build


def _install_options(f: Any) -> Any:
    opts = [
        click.option("--dry-run", is_flag=True, help="Print every step (argv, env, downloads); change nothing."),
        click.option("--python", "python", default=None, metavar="PATH",
                     help="Install into this interpreter's environment (default: the one running attn-install)."),
        click.option("--installer", type=click.Choice(["pip", "uv"]), default="pip", show_default=True,
                     help="uv runs `uv pip install --python` with the same torch pins."),
        click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Install only from this folder of wheels (see `attn-install download`)."),
        click.option("--offline", is_flag=True, help="Never touch the network (wheelhouse or cache only)."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask before changing the environment."),
        click.option("--report", "report_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Write a JSON report: facts, plan, steps with exit codes, verification, rollback."),
        click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Build from this checkout instead of cloning (air-gapped machines, forks)."),
        click.option("--no-verify", is_flag=True, help="Skip the kernel check (not recommended)."),
        click.option("--lock-wait", type=float, default=600.0, show_default=True, metavar="SECONDS",
                     help="How long to wait for another attn-install working on the same environment."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _install_flow(names: tuple[str, ...], *, python: Optional[str], workload: str, yes: bool, dry_run: bool,
                  wheelhouse: Optional[Path], offline: bool, installer: str, report_file: Optional[Path],
                  source_dir: Optional[Path], verify: bool, lock_wait: float, auto: bool,
                  output: Optional[Path], allow_source: bool, head_dims: tuple[int, ...],
                  dtypes: tuple[str, ...], target_archs: tuple[str, ...], axolotl_version: Optional[str],
                  build_only: bool = False, export: Optional[Path] = None, measured: bool = False) -> None:
    import time  # noqa: PLC0415

    from attn_installer.console import render_facts, render_plan  # noqa: PLC0415
    from attn_installer.errors import InstallError  # noqa: PLC0415

    if offline and wheelhouse is None:
        wheelhouse = Path(_cache_dir()) / "wheelhouse"
    if wheelhouse is not None and not dry_run and not build_only and not wheelhouse.is_dir():
        raise UsageError(f"--wheelhouse: {wheelhouse} is not a directory")
    if source_dir is not None and not source_dir.is_dir():
        raise UsageError(f"--source: {source_dir} is not a directory")
    if source_dir is not None and len(names) != 1:
        raise UsageError("--source DIR builds one backend from that checkout: name it, "
                         "e.g. `attn-install install sage --source DIR`")
    if installer == "uv":
        import shutil  # noqa: PLC0415

        if shutil.which("uv") is None:
            raise UsageError("--installer uv: uv is not on PATH (pip install uv, or use --installer pip)")
    facts = _probe(python)
    if auto or dry_run:
        click.echo(render_facts(facts))
        click.echo("")
    install_kw: dict[str, Any] = {
        "installer": installer, "wheelhouse": str(wheelhouse.resolve()) if wheelhouse else None,
        "source_dir": str(source_dir.resolve()) if source_dir else None, "python": python}
    backend = names[0] if len(names) == 1 else None
    speeds = _measured(facts, workload, quiet=not measured) if (measured or auto) and not names else ()
    p = _plan(facts, workload, backend, allow_source or bool(names), head_dims, dtypes, target_archs,
              axolotl_version, speeds, **install_kw)
    known = {b.name for b in p.backends}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown backend {unknown[0]!r}: choose from " + ", ".join(sorted(known)))
    if auto or dry_run:
        click.echo(render_plan(p))
        click.echo("")
    chosen = names or ((p.recommended,) if p.recommended else ())
    if not chosen:
        raise NoViableBackendError("no backend can be recommended: "
                                   + "; ".join(p.blockers or ["see `attn-install plan`"]))
    plans = [p.backend(n) for n in chosen]
    for bp in plans:
        if not bp.viable:
            raise NoViableBackendError(f"{bp.name} does not fit this machine: " + "; ".join(bp.reasons))
        if build_only and bp.method != "source":
            raise UsageError(f"{bp.name} is not built from source here ({bp.method}: {bp.reasons[-1]}); "
                             "`attn-install build` builds source backends only (uninstall it first to rebuild)")
    if dry_run:
        from attn_installer.console import render_steps  # noqa: PLC0415

        for bp in plans:
            click.echo(f"{bp.name} ({bp.method}): " + ("nothing to install" if not bp.steps else
                                                       f"{len(bp.steps)} step(s)"))
            for line in render_steps(bp):
                click.echo("  " + line)
            if bp.wheel_cache:
                click.echo(f"  a wheel already in {bp.wheel_cache} (same build key) skips fetch and build")
        if auto and p.config:
            click.echo(f"\nwould write {output}:")
            from attn_installer.config import render_yaml  # noqa: PLC0415

            click.echo(render_yaml(p.config, p.config_comments, []).rstrip())
        click.echo("\ndry run: nothing was changed")
        return
    needs_change = [bp for bp in plans if bp.steps]
    if needs_change and not yes and sys.stdin.isatty():
        click.confirm("Install " + ", ".join(f"{bp.name} ({bp.method})" for bp in needs_change)
                      + f" into {facts.python.executable}?", abort=True, err=True)
    from attn_installer.install import Options, install_backend  # noqa: PLC0415
    from attn_installer.matrix import load_matrix  # noqa: PLC0415
    from attn_installer.runner import SubprocessRunner  # noqa: PLC0415

    cache = Path(_cache_dir())
    log_path = cache / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{'-'.join(chosen)}.log"
    runner = SubprocessRunner(log_path)
    hints = load_matrix(_matrix_dir()).hints
    exe = python or facts.python.executable or sys.executable
    outcomes = []
    for bp in plans:
        _say(f"{'building' if build_only else 'installing'} {bp.name} ({bp.method}) into {exe}")
        opts = Options(python=exe, cache_dir=cache, verify=verify and not build_only,
                       dtype=p.dtype or "bf16", lock_wait=lock_wait, wheelhouse=wheelhouse,
                       offline=offline, estimate_minutes=bp.estimate_minutes,
                       compile_units=bp.compile_units, log_path=log_path,
                       export_wheelhouse=export, build_only=build_only)
        outcome = install_backend(bp, runner, hints, opts, _say)
        outcomes.append(outcome)
        if not outcome.ok:
            break
    config_written = None
    ok = all(o.ok for o in outcomes) and len(outcomes) == len(plans)
    if ok and auto and output is not None and p.recommended:
        _write_config(p, output)
        config_written = str(output)
    if report_file is not None:
        from attn_installer.config import write_atomic  # noqa: PLC0415

        report = {"schema_version": 1, "ok": ok, "facts": facts.to_dict(), "plan": p.to_dict(),
                  "results": [o.to_dict() for o in outcomes], "config": config_written, "log": str(log_path)}
        write_atomic(report_file, json.dumps(report, indent=2) + "\n")
    click.echo("")
    for o in outcomes:
        v = o.verify
        verdict = f"verify {v.status}: {v.detail}" if v else ""
        click.echo(f"{o.backend}: {'OK' if o.ok else 'FAILED'}: {o.state}" + (f" ({verdict})" if v and o.ok else ""))
        if o.built_wheel:
            click.echo(f"  wheel: {o.built_wheel}")
        if o.ok and o.state == "built":
            click.echo(f"  verification deferred (a build installs nothing): `attn-install install {o.backend} "
                       f"--wheelhouse {export}` on a node with the target GPU installs this wheel and verifies it")
    if config_written:
        click.echo(f"config: {config_written} ({p.recommended}, {p.dtype or 'dtype unknown'})")
    if report_file is not None:
        click.echo(f"report: {report_file}")
    if not ok:
        bad = next(o for o in outcomes if not o.ok)
        msg = f"{bad.message}\n  state: {bad.state}"
        if bad.hint:
            msg += f"\n  hint: {bad.hint}"
        raise InstallError(msg)


@cli.command()
@click.argument("backends", nargs=-1)
@_install_options
@click.option("--auto", is_flag=True, help="Also write the recommended axolotl config (as `attn-install --auto`).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG,
              show_default=True, help="Where --auto writes the config.")
@_plan_options
def install(backends: tuple[str, ...], dry_run: bool, python: Optional[str], installer: str,
            wheelhouse: Optional[Path], offline: bool, yes: bool, report_file: Optional[Path],
            source_dir: Optional[Path], no_verify: bool, lock_wait: float, auto: bool, output: Path,
            workload: str, backend: Optional[str], allow_source: bool, head_dims: tuple[int, ...],
            dtypes: tuple[str, ...], target_archs: tuple[str, ...], axolotl_version: Optional[str],
            measured: bool) -> None:
    """Install BACKENDS (default: the recommended one), verify each, roll back on failure."""
    names = backends or ((backend,) if backend else ())
    _install_flow(names, python=python, workload=workload, yes=yes, dry_run=dry_run, wheelhouse=wheelhouse,
                  offline=offline, installer=installer, report_file=report_file, source_dir=source_dir,
                  verify=not no_verify, lock_wait=lock_wait, auto=auto, output=output if auto else None,
                  allow_source=allow_source, head_dims=head_dims, dtypes=dtypes, target_archs=target_archs,
                  axolotl_version=axolotl_version, measured=measured)


@cli.command()
@click.argument("backends", nargs=-1)
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Leave the built wheel (and its build key) here for other nodes.")
@click.option("--python", "python", default=None, metavar="PATH")
@click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build from this checkout instead of cloning.")
@click.option("--lock-wait", type=float, default=600.0, show_default=True, metavar="SECONDS")
@click.option("--yes", "-y", is_flag=True)
@click.option("--dry-run", is_flag=True)
@_plan_options
def build(backends: tuple[str, ...], wheelhouse: Path, python: Optional[str], source_dir: Optional[Path],
          lock_wait: float, yes: bool, dry_run: bool, workload: str, backend: Optional[str],
          allow_source: bool, head_dims: tuple[int, ...], dtypes: tuple[str, ...],
          target_archs: tuple[str, ...], axolotl_version: Optional[str], measured: bool) -> None:
    """Build source backends into wheels in --wheelhouse (no install): build once, install everywhere."""
    names = backends or ((backend,) if backend else ())
    if not names:
        raise UsageError("name the backend to build, e.g. `attn-install build flash_attention_3 --wheelhouse DIR`")
    _install_flow(names, python=python, workload=workload, yes=True, dry_run=dry_run, wheelhouse=None,
                  offline=False, installer="pip", report_file=None, source_dir=source_dir, verify=False,
                  lock_wait=lock_wait, auto=False, output=None, allow_source=True, head_dims=head_dims,
                  dtypes=dtypes, target_archs=target_archs, axolotl_version=axolotl_version,
                  build_only=True, export=wheelhouse)


@cli.command()
@click.argument("backends", nargs=-1)
@click.option("--facts", "facts_file", type=click.Path(path_type=Path), required=True,
              help="The facts (`attn-install probe --json`) of the machine that will install.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), required=True)
@_plan_options
def download(backends: tuple[str, ...], facts_file: Path, wheelhouse: Path, workload: str,
             backend: Optional[str], allow_source: bool, head_dims: tuple[int, ...], dtypes: tuple[str, ...],
             target_archs: tuple[str, ...], axolotl_version: Optional[str], measured: bool) -> None:
    """Fetch every wheel the plan for another (air-gapped) machine needs into --wheelhouse."""
    from attn_installer.fetchplan import download_for_plan  # noqa: PLC0415
    from attn_installer.runner import SubprocessRunner  # noqa: PLC0415

    facts = _facts(facts_file, None)
    names = backends or ((backend,) if backend else ())
    p = _plan(facts, workload, names[0] if len(names) == 1 else None, allow_source, head_dims, dtypes,
              target_archs, axolotl_version)
    chosen = names or ((p.recommended,) if p.recommended else ())
    if not chosen:
        raise NoViableBackendError("nothing to download: " + "; ".join(p.blockers or ["no backend fits"]))
    wheelhouse.mkdir(parents=True, exist_ok=True)
    runner = SubprocessRunner(Path(_cache_dir()) / "logs" / "download.log")
    for name in chosen:
        bp = p.backend(name)
        if not bp.viable:
            raise NoViableBackendError(f"{name} does not fit that machine: " + "; ".join(bp.reasons))
        got = download_for_plan(bp, facts, wheelhouse, runner, _say)
        for line in got:
            click.echo(line)
    click.echo(f"wheelhouse ready: {wheelhouse} (install there with "
               f"`attn-install install --wheelhouse {wheelhouse} --auto`)")


@cli.command()
@click.option("--backends", "backends", multiple=True, metavar="NAMES",
              help="Comma-separated backends to measure (default: all): sdpa, flex_attention, xformers, "
                   "flash_attention_2/3/4, sage.")
@click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Take the shape from a Hugging Face config.json on disk.")
@click.option("--head-dim", type=click.IntRange(min=1), default=None, help="[default: 128]")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="[default: 32]")
@click.option("--kv-heads", type=click.IntRange(min=1), default=None, help="[default: 8]")
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="[default: 4096]")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="[default: 4]")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"]), default=None,
              help="Default: bf16 (fp16 before Ampere).")
@click.option("--causal/--no-causal", default=True, show_default=True)
@click.option("--packed", is_flag=True, help="Packed (varlen) documents where the backend supports it.")
@click.option("--workload", type=WORKLOAD, default="full", show_default=True,
              help="inference measures the forward only.")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds for the measuring process.")
@click.option("--no-cache", "--rerun", "rerun", is_flag=True, help="Measure again even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a TFLOP/s bar chart (PNG; needs attn-install[plot]).")
@click.option("--python", "python", default=None, metavar="PATH", help="Measure in this interpreter.")
def bench(backends: tuple[str, ...], model_config: Optional[Path], head_dim: Optional[int],
          heads: Optional[int], kv_heads: Optional[int], seq_len: Optional[int], batch: Optional[int],
          dtype: Optional[str], causal: bool, packed: bool, workload: str, repeats: int, warmup: int,
          timeout: float, rerun: bool, as_json: bool, plot: Optional[Path], python: Optional[str]) -> None:
    """Measure the installed attention backends on GPU 0 (cached per GPU, driver, versions, shape)."""
    import dataclasses  # noqa: PLC0415
    from datetime import datetime, timezone  # noqa: PLC0415

    from attn_installer import bench as b  # noqa: PLC0415
    from attn_installer.runner import SubprocessRunner  # noqa: PLC0415

    names = b.parse_backends(backends)
    shape = b.Shape()
    if model_config is not None:
        shape = dataclasses.replace(shape, source=str(model_config), **b.shape_from_model_config(model_config))
    given: dict[str, Any] = {"head_dim": head_dim, "heads": heads, "kv_heads": kv_heads, "seq_len": seq_len,
                             "batch": batch}
    shape = dataclasses.replace(shape, **{k: v for k, v in given.items() if v is not None})
    if model_config is None and heads is not None and kv_heads is None and heads % shape.kv_heads:
        shape = dataclasses.replace(shape, kv_heads=heads)  # --heads alone that 8 does not divide: MHA
    if shape.heads % shape.kv_heads:
        raise UsageError(f"--kv-heads: {shape.kv_heads} does not divide --heads {shape.heads}")
    facts = _probe(python)
    if dtype is None:
        dtype = "fp16" if any(g.vendor == "nvidia" and (g.sm or 0) < 80 for g in facts.gpus) else "bf16"
    config = b.BenchConfig(shape=shape, dtype=dtype, causal=causal, packed=packed, workload=workload,
                           backends=names, warmup=warmup, repeats=repeats)
    key = b.cache_key(facts, config)
    path = b.cache_path(Path(_cache_dir()), key)
    report = None if rerun else b.load_cached(path)
    if report is not None:
        click.echo(f"cached result of {report.created} ({path}); --rerun measures again", err=True)
    else:
        click.echo(f"measuring {', '.join(names)} at {shape.label} {dtype} (one process, timeout {timeout:g} s) ...",
                   err=True)
        report = b.run_bench(SubprocessRunner(), facts.python.executable or sys.executable, config, timeout=timeout)
        report = dataclasses.replace(report, machine=b.machine_facts(facts), key=key,
                                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if report.measured and report.complete:
            b.save_cached(path, report)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(b.render_table(report))
    b.require_ok(report)
    if plot is not None:
        if not report.measured:
            click.echo(f"no plot written: nothing was measured ({report.detail})", err=True)
        else:
            b.write_plot(report, plot)
            click.echo(f"wrote {plot}", err=True)


def main(argv: Optional[list[str]] = None) -> None:
    debug = os.environ.get("ATTN_INSTALL_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="attn-install", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AttnInstallError as e:
        click.echo(f"attn-install: error: {e}", err=True)
        if debug:
            raise
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last resort for bugs
        if debug:
            raise
        click.echo(f"attn-install: internal error: {type(e).__name__}: {e} "
                   "(run with --debug for the traceback)", err=True)
        sys.exit(INTERNAL_ERROR)
    sys.exit(0)
