"""`attn-install bench --plot`: a bar chart of TFLOP/s per backend (needs matplotlib, imported lazily:
``pip install 'attn-install[plot]'``)."""

from __future__ import annotations

from pathlib import Path

from attn_installer.bench import BenchReport, where
from attn_installer.errors import BenchError, UsageError

__all__ = ["write_plot"]


def write_plot(report: BenchReport, path: Path) -> None:
    """Bar chart of TFLOP/s per backend (fwd and fwd+bwd) with GPU / driver / torch in the title."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'attn-install[plot]'") from None
    rows = [r for r in report.results if r.status == "ok"]
    if not rows:
        raise BenchError("nothing was measured: no plot to draw")
    labels = [r.label for r in rows]
    xs = list(range(len(rows)))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.5))
    ax.bar([x - width / 2 for x in xs], [r.fwd_tflops or 0.0 for r in rows], width, label="fwd")
    ax.bar([x + width / 2 for x in xs], [r.fwdbwd_tflops or 0.0 for r in rows], width, label="fwd+bwd")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("TFLOP/s (causal counts half)")
    e = report.env
    ax.set_title(f"{e.get('gpu', '?')}, driver {report.machine.get('driver') or '?'}, torch {e.get('torch', '?')}\n"
                 f"{where(report).split(', ', 1)[-1]}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
