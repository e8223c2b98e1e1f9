"""Ranking: the static order of matrices/ranking.toml for the GPU class, or measured speeds first.

Pure. A measurement never overrides a viability rule: a measured backend that does not fit stays
where it is (SageAttention stays out of full fine-tuning).
"""

from __future__ import annotations

from typing import Optional

from attn_installer.facts import Facts
from attn_installer.matrix import Matrix
from attn_installer.matrix.model import RankRow
from attn_installer.request import MeasuredSpeed

__all__ = ["measured_reasons", "static_order"]


def _rank_row(facts: Facts, matrix: Matrix) -> Optional[RankRow]:
    if not facts.gpus:
        return next((r for r in matrix.ranking if r.vendor == "none"), None)
    vendor = facts.gpus[0].vendor
    sms = [g.sm for g in facts.gpus if g.sm is not None]
    weakest = min(sms) if sms else None
    for row in matrix.ranking:
        if row.vendor != vendor:
            continue
        if vendor == "nvidia" and weakest is not None and not row.nvidia_sm.contains(weakest):
            continue
        return row
    return None


def static_order(facts: Facts, matrix: Matrix) -> list[str]:
    """The matching ranking row's order, then the other backends in backends.toml order."""
    row = _rank_row(facts, matrix)
    first = list(row.order) if row else []
    return first + [n for n in matrix.backend_names if n not in first]


def measured_reasons(order: list[str], viable: set[str], measured: tuple[MeasuredSpeed, ...]
                     ) -> tuple[list[str], dict[str, str]]:
    """Viable measured backends first, fastest first, then the static order; and for each measured
    backend the reason naming its time."""
    speeds: dict[str, MeasuredSpeed] = {}
    for m in measured:
        if m.backend in viable and (m.backend not in speeds or m.ms < speeds[m.backend].ms):
            speeds[m.backend] = m
    fast = sorted(speeds.values(), key=lambda m: (m.ms, m.backend))
    if not fast:
        return order, {}
    best = fast[0]
    where = f" ({best.where})" if best.where else ""
    why: dict[str, str] = {}
    for m in fast:
        if m is best:
            why[m.backend] = f"measured: {m.ms:.2f} ms {m.metric}, fastest of {len(fast)} on this GPU{where}"
        else:
            why[m.backend] = (f"measured: {m.ms:.2f} ms {m.metric}, {m.ms / best.ms:.2f}x the time of "
                              f"{best.backend} on this GPU")
    first = [m.backend for m in fast]
    return first + [n for n in order if n not in first], why
