"""Progress of a long step: compile units from ninja's ``[k/N]`` lines (a build of several
extensions runs one ninja each, so their own counters restart: units are counted across them),
pip's milestones, a heartbeat, and a notice when nothing is printed for a long time. Once enough
units are done, the time left comes from the measured rate, not from the plan's estimate (a build
on a slower or busier host than the matrix's measurement says so while it runs)."""

from __future__ import annotations

import re
import time
from typing import Callable, Optional

__all__ = ["Progress", "mmss"]

_UNIT = re.compile(r"\s*\[(\d+)/(\d+)\]")
_MILESTONES = ("Collecting", "Downloading", "Installing", "Successfully", "ERROR", "Building wheel",
               "Created wheel", "Stored in")


def mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class Progress:
    MIN_UNITS = 3
    MIN_FRACTION = 0.1
    MIN_SECONDS = 60.0

    def __init__(self, say: Callable[[str], None], *, units: int = 0, estimate_minutes: Optional[float] = None,
                 log_path: Optional[str] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.units = units
        self.estimate = estimate_minutes
        self.log_path = log_path
        self.clock = clock
        self.start = clock()
        self.shown = 0.0
        self.compiled = 0

    def left(self, total: int, elapsed: float) -> Optional[float]:
        """Minutes left at the measured rate, once enough units are done to measure one."""
        if self.compiled < max(self.MIN_UNITS, self.MIN_FRACTION * total) or elapsed < self.MIN_SECONDS:
            return None
        return elapsed / self.compiled * (total - self.compiled) / 60

    def on_line(self, line: str) -> None:
        m = _UNIT.match(line)
        now = self.clock()
        if m:
            self.compiled += 1
            total = max(self.units, int(m.group(2)), self.compiled)
            elapsed = now - self.start
            left = self.left(total, elapsed)
            if left is not None:
                est = f", about {left:.0f} min left at the measured rate" + (
                    f" (plan: {self.estimate:g} min in all)" if self.estimate else "")
            else:
                est = f", estimate {self.estimate:g} min" if self.estimate else ""
            self.say(f"  compiled {self.compiled}/{total} units ({mmss(elapsed)} elapsed{est})")
        elif line.startswith(_MILESTONES):
            self.say("  " + line.strip()[:160])
        elif now - self.shown > 30:
            self.shown = now
            self.say(f"  ... {mmss(now - self.start)} elapsed")

    def on_idle(self, seconds: float) -> None:
        self.say(f"  no output for {seconds / 60:.0f} min; still running (not hung unless this "
                 f"repeats for long): log {self.log_path or '-'}")
