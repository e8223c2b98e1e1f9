"""The user's choice of attention (what their training config selects) against the plan's.

Pure. The user's backend stays when it fits this machine and the training (packing, the model's
head dims, sliding window, soft-capping), is installed or obtainable without a source build, and
has not failed verification here. It is replaced only when it cannot run here (the reasons are
said), when a bench measured on this machine at this model's shape shows another eligible backend
faster by more than the margin (both numbers are said), or with --prefer-recommended. A value the
plan cannot judge (a hub kernel path, a name it does not know) is kept, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from attn_installer.facts import Gpu
from attn_installer.matrix import Matrix
from attn_installer.plan.model import BackendPlan
from attn_installer.request import MeasuredSpeed, Request

__all__ = ["Choice", "decide", "packing_blocked_text"]


@dataclass(frozen=True)
class Choice:
    """How the plan treated the attention the training config selects."""

    value: Optional[str]
    """What the file selects (an attn_implementation value, or a legacy boolean's), None for nothing."""
    selected_from: str
    """The line(s) that select it."""
    backend: Optional[str]
    """The backend the written config selects; None when the user's value is kept unjudged."""
    kept: bool
    """The user's value stays in the file."""
    reasons: tuple[str, ...]
    judged: bool = True
    """False for a value the plan cannot judge (hub kernel path, unknown name)."""
    packing: str = ""
    """on (sample_packing kept), off (turned off: --allow-no-packing), blocked (no varlen backend
    fits and packing may not be turned off), '' (the config does not pack)."""
    packing_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "selected_from": self.selected_from, "backend": self.backend,
                "kept": self.kept, "judged": self.judged, "reasons": list(self.reasons), "packing": self.packing,
                "packing_reason": self.packing_reason}


def _short(bp: BackendPlan, n: int = 3) -> str:
    texts = [r.text for r in bp.reasons if r.kind in ("misfit", "blocked", "tried")]
    return "; ".join(texts[:n]) or "it does not fit"


def _how(bp: BackendPlan, installed: Mapping[str, str]) -> str:
    """How *bp* is had here; *installed*: distribution -> version in the environment now."""
    if bp.method == "builtin":
        return "part of torch"
    if bp.method == "installed":
        return f"installed ({bp.distribution} {bp.installed_version})"
    have = installed.get(bp.distribution)
    if have is not None:
        return (f"the installed {bp.distribution} {have} does not fit (the plan's warning says why): "
                f"`attn-install install {bp.name}` replaces it ({bp.route} {bp.method})")
    return f"not installed yet (`attn-install install {bp.name}` gets it: {bp.route} {bp.method})"


def _compact(text: str) -> str:
    """A misfit reason without the GPU it names (said once for all) and the file it cites."""
    return text.split("; ", 1)[-1].replace(" (matrices/backends.toml)", "")


def packing_blocked_text(source: str, plans: Mapping[str, BackendPlan], matrix: Matrix, fits_without: list[str],
                         *, allowed: bool = False, gpus: tuple[Gpu, ...] = ()) -> str:
    """Why sample_packing cannot stay: each backend with a varlen path for these GPUs' vendor and the
    first reason it does not fit, and what fits without packing; what to do, or (*allowed*) that it
    was turned off."""
    vendors = {g.vendor for g in gpus}
    packers = [p for p in plans.values() if matrix.backend(p.name).packing
               and (not vendors or matrix.backend(p.name).vendor in vendors | {"any"})]
    why = ", ".join(dict.fromkeys(_compact(_short(p, 1)) for p in packers))
    on = ", ".join(f"{g.name} ({g.arch})" for g in gpus) or "no GPU"
    head = (f"sample_packing: true ({source or 'the training config'}), but no backend with a varlen (packed) "
            f"path fits here ({on}: {why}; matrices/backends.toml)")
    if allowed:
        return f"{head}: --allow-no-packing turns sample_packing off ({fits_without[0]} runs without it)"
    return (f"{head}; without packing {fits_without[0]} fits: --allow-no-packing turns sample_packing off, or "
            "train on a machine where one of them fits")


def _measured_switch(mine: str, eligible: set[str], measured: tuple[MeasuredSpeed, ...], margin: float
                     ) -> tuple[Optional[MeasuredSpeed], Optional[MeasuredSpeed]]:
    """(the user's measurement, the fastest other eligible one), either None when not measured."""
    fastest: dict[str, MeasuredSpeed] = {}
    for m in measured:
        if m.backend in eligible | {mine} and (m.backend not in fastest or m.ms < fastest[m.backend].ms):
            fastest[m.backend] = m
    own = fastest.get(mine)
    others = sorted((m for n, m in fastest.items() if n != mine), key=lambda m: (m.ms, m.backend))
    return own, others[0] if others else None


def decide(plans: Mapping[str, BackendPlan], recommended: Optional[str], matrix: Matrix, request: Request,
           installed: Optional[Mapping[str, str]] = None) -> tuple[Optional[str], Choice]:
    """The backend the plan selects given the user's choice, and how it was decided (*installed*:
    the environment's distributions, for saying how a backend is had)."""
    have = installed or {}
    tr = request.training
    assert tr is not None
    value = tr.choice
    said = tr.choice_from or (f"attn_implementation: {value}" if value else "")
    if value is None:
        why = (f"{tr.source or 'the training config'} selects no attention backend: the plan's "
               f"{recommended} is written" if recommended else "the training config selects no attention backend")
        return recommended, Choice(None, "", recommended, False, (why,))
    names = [b.name for b in matrix.backends if b.attn_implementation == value]
    if "/" in value or not names:
        what = ("a hub kernel path" if "/" in value else
                "not an attention backend attn-install knows (matrices/backends.toml)")
        why = (f"{said}: {what}; attn-install cannot judge it on this machine and keeps it "
               f"(the plan's choice would be {recommended or 'none'}: --prefer-recommended writes that)")
        if tr.prefer_recommended and recommended:
            return recommended, Choice(value, said, recommended, False, (
                f"--prefer-recommended: {recommended} replaces {said} ({what}, not judged here)",), judged=False)
        return recommended, Choice(value, said, None, True, (why,), judged=False)
    ours = [plans[n] for n in names if n in plans]
    fit = [p for p in ours if p.viable]
    mine = next((p for p in fit if p.method in ("installed", "builtin")), fit[0] if fit else ours[0])
    if tr.prefer_recommended:
        if recommended is None:
            return None, Choice(value, said, None, False, ("--prefer-recommended: but nothing can be recommended",))
        kept = recommended in names
        text = (f"--prefer-recommended: {recommended} is also what {said} selects" if kept else
                f"--prefer-recommended: {recommended} (the plan's choice) replaces {said}")
        return recommended, Choice(value, said, recommended, kept, (text,))
    rec = plans.get(recommended) if recommended else None
    instead = (f"; {recommended} instead" + (f", {_how(rec, have)}" if rec is not None else "") if recommended
               else "; and nothing else can be recommended here")
    if not mine.viable:
        return recommended, Choice(value, said, recommended, False, (
            f"{said} selects {mine.name}, which cannot run here: {_short(mine)}{instead}",))
    if mine.method == "source" and not request.allow_source:
        minutes = f"about {mine.estimate_minutes:g} min" if mine.estimate_minutes is not None else "a source build"
        return recommended, Choice(value, said, recommended, False, (
            f"{said} selects {mine.name}, which is not installed and needs a source build here ({minutes}): "
            f"`attn-install install {mine.name}` builds it (a merge then keeps it), or --allow-source{instead}",))
    status = tr.verified.get(mine.name)
    if status is not None and status != "passed":
        return recommended, Choice(value, said, recommended, False, (
            f"{said} selects {mine.name}, whose installed build failed verification on this GPU ({status})"
            f"{instead}",))
    eligible = {n for n, p in plans.items() if p.viable and (p.method != "source" or request.allow_source)}
    own, best = _measured_switch(mine.name, eligible, request.measured, tr.margin)
    if own is not None and best is not None and best.ms * (1 + tr.margin) < own.ms:
        faster = own.ms / best.ms - 1
        where = f" ({own.where})" if own.where else ""
        return best.backend, Choice(value, said, best.backend, False, (
            f"measured on this machine at this model's shape{where}: {best.backend} {best.ms:.2f} ms vs "
            f"{mine.name} {own.ms:.2f} ms {own.metric}, {faster:.0%} faster, more than the {tr.margin:.0%} margin: "
            f"{best.backend} replaces {said}",))
    reasons = [f"{said} selects {mine.name}, which fits this machine and the training; {_how(mine, have)}"]
    if status == "passed":
        reasons.append("its installed build passed verification on this GPU")
    if own is not None and best is not None:
        reasons.append(f"measured at this model's shape: {mine.name} {own.ms:.2f} ms, the fastest other "
                       f"{best.backend} {best.ms:.2f} ms {own.metric}: not faster by more than the "
                       f"{tr.margin:.0%} margin")
    elif own is None and best is not None:
        reasons.append(f"{mine.name} has no accepted measurement at this shape to compare with "
                       f"{best.backend}'s {best.ms:.2f} ms: `attn-install bench --axolotl-config {tr.source}` "
                       "measures both")
    return mine.name, Choice(value, said, mine.name, True, tuple(reasons))
