"""Options shared by several commands, declared once; they become a typed :class:`PlanOptions`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from attn_installer.errors import UsageError
from attn_installer.words import ROUTE_KINDS

__all__ = ["install_options", "plan_options", "python_option", "with_options"]

F = TypeVar("F", bound=Callable[..., Any])
WORKLOAD = click.Choice(["full", "lora", "inference"])
DEFAULT_CONFIG = "attn-install-config.yaml"


_REQUEST_KEYS = ("workload", "backend", "allow_source", "head_dims", "dtypes", "target_archs", "axolotl_version",
                 "route", "no_source")


def with_options(f: Callable[..., Any], opts: list[Callable[[Any], Any]]) -> Any:
    """*f* with the click options *opts*, shown in --help in the order listed."""
    wrapped: Any = f
    for o in reversed(opts):
        wrapped = o(wrapped)
    return wrapped


def plan_options(f: F) -> F:
    """--workload, --inference, --backend, --allow-source, --head-dim, --dtype, --target-arch,
    --axolotl-version and --measured, passed to the command as ``request: Request`` (checked when
    made) and ``measured: bool``.

    --inference is its own flag folded into workload here: two options sharing one destination
    behave differently across click 8.1 - 8.3."""

    @functools.wraps(f)
    def fold(*args: Any, inference: bool = False, **kwargs: Any) -> Any:
        from attn_installer.request import Request  # noqa: PLC0415

        values = {k: kwargs.pop(k) for k in _REQUEST_KEYS}
        index = kwargs.pop("pytorch_index", None)
        if index:  # read by App.torch_index_template (the App may not exist yet: the root makes it)
            click.get_current_context().meta["attn_install.pytorch_index"] = index
        if inference:
            if values["workload"] not in ("full", "inference"):
                raise UsageError(f"--inference and --workload {values['workload']} disagree: give one")
            values["workload"] = "inference"
        return f(*args, request=Request(**values), **kwargs)

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
        click.option("--route", type=click.Choice(list(ROUTE_KINDS)), default=None,
                     help="Only this route: torch_index, wheel_farm, release_asset, pypi, hub_kernel, source ..."),
        click.option("--no-source", is_flag=True, help="Never a source build (prebuilt routes only)."),
        click.option("--pytorch-index", "pytorch_index", default=None, metavar="URL",
                     help="A mirror of download.pytorch.org/whl (a URL, or a template with {flavour}) "
                          "[env var: ATTN_INSTALL_PYTORCH_INDEX]."),
    ]
    return with_options(fold, opts)  # type: ignore[no-any-return]


def python_option(help_text: str = "Target this interpreter's environment.") -> Callable[[F], F]:
    return click.option("--python", "python", default=None, metavar="PATH", help=help_text)


def install_options(f: F) -> F:
    opts = [
        click.option("--dry-run", is_flag=True, help="Print every step (argv, env, downloads); change nothing."),
        python_option("Install into this interpreter's environment (default: the one running attn-install)."),
        click.option("--installer", type=click.Choice(["pip", "uv"]), default="pip", show_default=True,
                     help="uv runs `uv pip install --python` with the same torch pins."),
        click.option("--wheelhouse", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Install only from this folder of wheels (see: attn-install download --help)."),
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
    return with_options(f, opts)  # type: ignore[no-any-return]
