"""How a tool's failure is put in a note: all of what it said, on one line."""

from __future__ import annotations

__all__ = ["summary"]


def summary(text: str, limit: int = 400) -> str:
    """Every non-empty line of *text*, whitespace collapsed, joined with " / " and cut at *limit*.

    A failure's cause is often not its last line: nvidia-smi prints "Failed to initialize NVML:
    Driver/library version mismatch" and then "NVML library version: 550.144"."""
    lines = [" ".join(ln.split()) for ln in text.strip().splitlines() if ln.strip()]
    out = " / ".join(lines) if lines else "no output"
    return out if len(out) <= limit else out[: limit - 3] + "..."
