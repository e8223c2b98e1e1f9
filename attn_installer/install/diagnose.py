"""What a failed step means, from the one table of known failures (matrices/hints.toml).

``explain`` puts a known pip failure in one sentence (a torch conflict, a missing wheel, no
network); ``find_hint`` gives the hint of the first known failure whose pattern is in the output.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from attn_installer.matrix import Matrix

__all__ = ["explain", "find_hint", "pinned_moves"]


def find_hint(output: str, matrix: Matrix, env: Mapping[str, str]) -> str:
    """The hint of the first known failure whose pattern appears in the output."""
    for h in matrix.hints:
        if re.search(h.pattern, output, re.IGNORECASE):
            jobs = env.get("MAX_JOBS", "")
            half = str(max(1, int(jobs) // 2)) if jobs.isdigit() else "2"
            return h.hint.format(max_jobs_half=half)
    return ""


def explain(output: str, matrix: Matrix, torch: Optional[str], wheelhouse: Optional[str]) -> str:
    """One sentence for the failures users meet most, or ""."""
    for e in matrix.explains:
        m = re.search(e.pattern, output)
        if m is None or (e.needs_torch and torch is None):
            continue
        groups = {k: (v or "").strip().rstrip(".") for k, v in m.groupdict().items()}
        text = e.with_wheelhouse if wheelhouse and e.with_wheelhouse else e.text
        return text.format(torch=torch or "", wheelhouse=wheelhouse or "", **groups)
    return ""


def pinned_moves(pinned: tuple[str, ...], before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """'torch 2.8.0 -> 2.9.0' for every pinned distribution that changed."""
    return [f"{n} {before.get(n) or 'absent'} -> {after.get(n) or 'removed'}"
            for n in pinned if before.get(n) != after.get(n)]
