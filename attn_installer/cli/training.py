"""The options that point the plan at the user's training: --axolotl-config (or the file --merge
edits), --model-config, --allow-no-packing, --prefer-recommended, --switch-margin; and the request
they make (attn_installer.request.Training), with what only this machine can say (a bench at the
model's shape, the verification of the user's backend)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import click

from attn_installer.cli.options import with_options
from attn_installer.errors import UsageError
from attn_installer.request import DEFAULT_SWITCH_MARGIN

if TYPE_CHECKING:
    from attn_installer.cli.app import App
    from attn_installer.facts import Facts
    from attn_installer.request import Request
    from attn_installer.trainconfig import TrainingConfig

__all__ = ["TrainingOptions", "training_options", "training_request"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TrainingOptions:
    axolotl_config: Optional[Path] = None
    model_config: Optional[Path] = None
    allow_no_packing: bool = False
    prefer_recommended: bool = False
    margin: float = DEFAULT_SWITCH_MARGIN
    workload_given: bool = False
    """--workload / --inference was given: it overrides the config's adapter."""


def training_options(f: F) -> F:
    """--axolotl-config, --model-config, --allow-no-packing, --prefer-recommended, --switch-margin,
    passed to the command as ``training: TrainingOptions`` (after plan_options)."""

    @functools.wraps(f)
    def fold(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        given = any(ctx.get_parameter_source(p) not in (None, click.core.ParameterSource.DEFAULT)
                    for p in ("workload", "inference") if p in ctx.params)
        margin = kwargs.pop("switch_margin")
        opts = TrainingOptions(axolotl_config=kwargs.pop("axolotl_config"), model_config=kwargs.pop("model_config"),
                               allow_no_packing=kwargs.pop("allow_no_packing"),
                               prefer_recommended=kwargs.pop("prefer_recommended"), margin=margin / 100.0,
                               workload_given=given)
        return f(*args, training=opts, **kwargs)

    opts = [
        click.option("--axolotl-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE", help="Plan from this axolotl config: its adapter (workload), sample_packing, "
                     "base_model (its config.json, local or in the Hugging Face cache: head dims, sliding window, "
                     "soft-capping), sequence_len and the attention it selects (kept when it fits)."),
        click.option("--model-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE", help="The model's Hugging Face config.json (instead of finding base_model's)."),
        click.option("--allow-no-packing", is_flag=True,
                     help="When no backend with a varlen path fits, plan without packing (a merge writes "
                          "sample_packing: false)."),
        click.option("--prefer-recommended", is_flag=True,
                     help="Write the plan's choice even where the config's own attention fits."),
        click.option("--switch-margin", type=click.FloatRange(min=0, max=1000), default=DEFAULT_SWITCH_MARGIN * 100,
                     show_default=True, metavar="PCT",
                     help="A backend measured this much faster (percent) at the model's shape replaces the "
                          "config's choice."),
    ]
    return with_options(fold, opts)  # type: ignore[no-any-return]


def training_request(app: App, request: Request, opts: TrainingOptions, *, merge: Optional[Path] = None,
                     facts: Optional[Facts] = None) -> tuple[Request, Optional[TrainingConfig]]:
    """*request* with the training it is for: from --axolotl-config, else the file --merge edits; the
    model from --model-config, else the config's base_model. With *facts* of this machine (not a
    facts file), also the verification record of the backend the config selects and a bench at the
    model's shape (they decide whether that choice stays). Notes go to stderr."""
    from attn_installer.modelconfig import read_model_attention  # noqa: PLC0415
    from attn_installer.request import Training  # noqa: PLC0415
    from attn_installer.trainconfig import find_model, read_training_config  # noqa: PLC0415

    path = opts.axolotl_config or merge
    if path is None and opts.model_config is None:
        for flag, on in (("--allow-no-packing", opts.allow_no_packing),
                         ("--prefer-recommended", opts.prefer_recommended)):
            if on:
                raise UsageError(f"{flag} is about a training config: give --axolotl-config FILE (or --merge FILE)")
        return request, None
    matrix = app.matrix()
    tc = read_training_config(path, matrix) if path is not None else None
    if tc is not None:
        model, note = find_model(tc, app.env, opts.model_config)
        for w in tc.warnings:
            app.say(f"warning: {w}")
        if note:
            app.say(f"note: {note}: planned without the model's head dims, sliding window and soft-capping")
    else:
        assert opts.model_config is not None
        model, note = read_model_attention(opts.model_config), ""
    if tc is not None:
        training = tc.as_training(model, allow_no_packing=opts.allow_no_packing,
                                  prefer_recommended=opts.prefer_recommended, margin=opts.margin)
    else:
        training = Training(model=model, margin=opts.margin)
    workload = request.workload if opts.workload_given or tc is None else tc.workload
    request = replace(request, workload=workload, training=training)
    if facts is not None and tc is not None and tc.choice and "/" not in tc.choice:
        mine = tuple(b.name for b in matrix.backends if b.attn_implementation == tc.choice
                     and (not b.distribution or b.distribution in facts.packages))
        verified = app.verified(facts, mine)
        speeds = app.measured(facts, workload, quiet=True, training=training) if model is not None else ()
        request = replace(request, measured=speeds or request.measured,
                          training=replace(training, verified=verified))
    return request, tc
