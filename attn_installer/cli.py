"""The `attn-install` command line: a thin click layer and the only place that exits.

Errors raised as AttnInstallError print one line and exit with their code; anything else is a
bug and shows a traceback only with --debug (or ATTN_INSTALL_DEBUG=1).
"""

from __future__ import annotations

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
          axolotl_version: Optional[str], measured: tuple[Any, ...] = ()) -> Any:
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
                      axolotl_version=axolotl_version, cache_dir=_cache_dir(), measured=measured)
    return make_plan(facts, load_matrix(_matrix_dir()), request)


WORKLOAD = click.Choice(["full", "lora", "inference"])


def _plan_options(f: Any) -> Any:
    opts = [
        click.option("--workload", type=WORKLOAD, default="full", show_default=True,
                     help="What the config is for; SageAttention is never picked for full."),
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
    for o in reversed(opts):
        f = o(f)
    return f


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attn-install")
@click.option("--auto", is_flag=True, help="Probe, plan, and write the recommended axolotl config.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing anything.")
@click.option("--debug", is_flag=True, envvar="ATTN_INSTALL_DEBUG", help="Show tracebacks.")
@click.option("--python", "python", default=None, metavar="PATH",
              help="Target this interpreter's environment (default: the one running attn-install).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="Where --auto writes the config.")
@click.option("--workload", type=WORKLOAD, default="full", show_default=True)
@click.pass_context
def cli(ctx: click.Context, auto: bool, yes: bool, debug: bool, python: Optional[str],
        output: Path, workload: str) -> None:
    """Install the attention backend that fits this machine, verified, without touching torch.

    \b
    attn-install --auto          probe, plan, write the recommended axolotl config
    attn-install probe [--json]  what this machine has
    attn-install plan [--json]   which backends fit, why, and how each would be installed
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand is not None:
        return
    if not auto:
        click.echo(ctx.get_help())
        return
    facts = _probe(python)
    from attn_installer.console import render_facts, render_plan  # noqa: PLC0415

    click.echo(render_facts(facts))
    click.echo("")
    plan = _plan(facts, workload, None, False, (), (), (), None)
    click.echo(render_plan(plan))
    if plan.recommended is None:
        raise NoViableBackendError("no backend can be recommended: " + "; ".join(plan.blockers or ["see above"]))
    _write_config(plan, output)
    click.echo(f"\nwrote {output}: attention config for {plan.recommended} "
               "(installing backends lands with `attn-install install`; SDPA and flex need nothing)")


def _measured(facts: Any, workload: str) -> tuple[Any, ...]:
    """Speeds from the newest cached bench of this machine, or () with a note on stderr."""
    from attn_installer.bench import find_measured, measured_speeds  # noqa: PLC0415

    report = find_measured(Path(_cache_dir()), facts, workload)
    if report is None:
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
@click.option("--python", "python", default=None, metavar="PATH")
@_plan_options
def config(facts_file: Optional[Path], output: Path, python: Optional[str], workload: str,
           backend: Optional[str], allow_source: bool, head_dims: tuple[int, ...],
           dtypes: tuple[str, ...], target_archs: tuple[str, ...], axolotl_version: Optional[str],
           measured: bool) -> None:
    """Write the recommended axolotl attention keys to a YAML file (--measured: the measured winner)."""
    facts = _facts(facts_file, python)
    p = _plan(facts, workload, backend, allow_source, head_dims, dtypes, target_archs, axolotl_version,
              _measured(facts, workload) if measured else ())
    if p.recommended is None:
        raise NoViableBackendError("no backend fits: " + "; ".join(p.blockers or ["see `attn-install plan`"]))
    _write_config(p, output)
    click.echo(f"wrote {output} ({p.recommended})")


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
        res = verify_backend(SubprocessRunner(), exe, name, dtype=dtype or p.dtype or "bf16", head_dim=head_dim)
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
