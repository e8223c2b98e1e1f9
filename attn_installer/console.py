"""Every human rendering: facts, plans, dry-run steps, install summaries (plain text, no colour)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from attn_installer.bench import BackendResult, BenchReport, Timing, ranked, where
from attn_installer.checks import printable
from attn_installer.facts import Facts
from attn_installer.plan.model import BackendPlan, Plan
from attn_installer.runner import format_argv

if TYPE_CHECKING:
    from attn_installer.install.loop import Outcome

__all__ = ["render_bench", "render_dry_run", "render_facts", "render_outcomes", "render_plan", "render_steps"]


def render_facts(f: Facts) -> str:
    h = f.host
    where = [k for k in ("colab", "kaggle", "wsl", "container") if getattr(h, k)]
    lines = [
        f"host     {h.os} {h.machine}, glibc {h.glibc or '-'}, {h.cpu_count} CPUs, "
        f"{h.memory_gb:g} GiB usable" + (f" ({', '.join(where)})" if where else ""),
        f"python   {f.python.version} ({f.python.executable or '?'})"
        + (f" [{f.python.chosen}]" if f.python.chosen else ""),
    ]
    if f.driver:
        extra = f", CUDA {f.driver.cuda}" if f.driver.cuda else ""
        extra += f", ROCm {f.driver.rocm}" if f.driver.rocm else ""
        lines.append(f"driver   {f.driver.vendor} {f.driver.version}{extra} "
                     f"[{f.sources.get('driver', '?')}]")
    else:
        lines.append("driver   none")
    if f.gpus:
        for g in f.gpus:
            cc = f" (cc {g.compute_capability})" if g.compute_capability else ""
            mig = " MIG" if g.mig else ""
            lines.append(f"gpu {g.index}    {g.name}, {g.arch}{cc}, {g.memory_gb:g} GiB{mig} "
                         f"[{f.sources.get('gpus', '?')}]")
    else:
        lines.append("gpu      none visible")
    if f.torch:
        t = f.torch
        build = f"CUDA {t.cuda}" if t.cuda else f"HIP {t.hip}" if t.hip else "CPU"
        abi = {True: "cxx11abi", False: "pre-cxx11 abi", None: "abi ?"}[t.cxx11abi]
        archs = f", archs {' '.join(t.arch_list)}" if t.arch_list else ""
        lines.append(f"torch    {t.version} ({build}, {abi}{archs})")
    else:
        lines.append("torch    not installed")
    tk = f.toolkit
    lines.append(f"toolkit  nvcc {tk.nvcc or '-'}"
                 + (f" ({tk.cuda_home})" if tk.cuda_home else "")
                 + f", hipcc {'yes' if tk.hipcc else '-'}, gcc {tk.gcc or '-'}, "
                 f"ninja {'yes' if tk.ninja else '-'}")
    pkgs = ", ".join(f"{k} {v}" for k, v in sorted(f.packages.items())
                     if k not in ("torch", "packaging", "setuptools", "wheel", "numpy"))
    lines.append(f"packages {pkgs or '-'}")
    lines.extend(f"note     {n}" for n in f.notes)
    return "\n".join(printable(ln) for ln in lines)  # each line one line, whatever a field held


WIDTH = 100
"""Plan output wraps at this many columns (commands are never wrapped: they are copied)."""


def _wrap(text: str, first: str, rest: str, width: int = WIDTH) -> list[str]:
    """Wrap *text* at *width*; a `command` in backticks stays on one line (it is copied)."""
    import re  # noqa: PLC0415
    import textwrap  # noqa: PLC0415

    glued = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\u00a0"), text)
    lines = textwrap.wrap(glued, width=width, initial_indent=first, subsequent_indent=rest,
                          break_on_hyphens=False, break_long_words=False) or [first.rstrip()]
    return [ln.replace("\u00a0", " ") for ln in lines]


def _why(b: BackendPlan) -> str:
    """The reason a row shows: for a backend that fits, how it is obtained (or its measured
    time); for one that does not, the first rule it fails, never a rule it passes."""
    if b.viable:
        return b.reasons[-1].text
    failing = [r for r in b.reasons if r.kind in ("misfit", "tried", "blocked")]
    return (failing or list(b.reasons))[0].text


def render_plan(p: Plan, *, verbose: bool = False) -> str:
    out: list[str] = []
    blocked = bool(p.blockers) and not any(b.viable for b in p.backends)
    if not blocked or verbose:
        rows = [("backend", "fits", "method", "est.")]
        whys = ["why"]
        for b in p.backends:
            est = "-" if b.estimate_minutes is None else ("0" if b.estimate_minutes == 0
                                                         else f"~{b.estimate_minutes:g}m")
            mark = "*" if b.name == p.recommended else " "
            rows.append((f"{mark}{b.name}", "yes" if b.viable else "no", b.method or "-", est))
            whys.append("blocked by the machine (below)" if b.reasons[0].kind == "blocked" else _why(b))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row, why in zip(rows, whys):
            head = "  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  "
            out.extend(_wrap(why, head, " " * len(head)))
        out.append("")
    for blocker in p.blockers:
        out.extend(_wrap(blocker, "BLOCKER: ", "         "))
    if blocked:
        out.append("nothing can be installed until that is fixed")
    for w in p.warnings:
        out.extend(_wrap(w, "warning: ", "         "))
    c = p.choice
    if c is not None and c.packing != "blocked" and c.judged:
        for i, r in enumerate(c.reasons):
            head = f"{'kept' if c.kept else 'changed'}: " if i == 0 else "  "
            out.extend(_wrap(r, head, " " * len(head) if i == 0 else "    "))
    if p.recommended:
        rec = p.backend(p.recommended)
        out.append(f"recommended: {rec.name} ({rec.title}) for {p.workload}")
        for s in rec.steps:
            env = " ".join(f"{k}={v}" for k, v in s.env.items())
            out.append(f"  step: {(env + ' ') if env else ''}{format_argv(s.argv)}")
        for w in rec.warnings:
            out.extend(_wrap(w, "  warning: ", "           "))
        out.append("config:")
        for c in p.config_comments:
            out.append(f"  # {c}")
        for k, v in p.config.items():
            out.append(f"  {k}: {str(v).lower() if isinstance(v, bool) else v}")
    else:
        out.append("recommended: none")
    if verbose:
        for b in p.backends:
            out.append(f"\n{b.name}:")
            for r in b.reasons:
                out.extend(_wrap(r.text, "  - ", "    "))
    return "\n".join(out)


def render_steps(bp: BackendPlan) -> list[str]:
    """The dry-run listing: every step's argv, env, download and files, nothing run."""
    lines = []
    for i, s in enumerate(bp.steps, 1):
        lines.append(f"{i}. [{s.kind}] {s.description}")
        need = s.need
        if need is not None and need.url:
            lines.append(f"     download {need.url}\n       -> {need.dest}"
                         + (f" (sha256 {need.sha256})" if need.sha256 else ""))
        elif need is not None:
            lines.append(f"     needs {need.dest}")
        for path, content in s.writes.items():
            lines.append(f"     writes {path}: " + ", ".join(content.split()))
        for k, v in s.env.items():
            lines.append(f"     env {k}={v}")
        lines.append(f"     $ {format_argv(s.argv)}")
    return lines


def render_dry_run(plans: Sequence[BackendPlan], p: Plan, output: Optional[Path]) -> list[str]:
    """`install --dry-run` / `--auto --dry-run`: every step of the chosen backends, the config."""
    lines: list[str] = []
    for bp in plans:
        lines.append(f"{bp.name} ({bp.method}): " + ("nothing to install" if not bp.steps else
                                                     f"{len(bp.steps)} step(s)"))
        lines.extend("  " + line for line in render_steps(bp))
        if bp.wheel_cache:
            lines.append(f"  a wheel already in {bp.wheel_cache} (same build key) skips fetch and build")
    if output is not None and p.config:
        from attn_installer.config import render_yaml  # noqa: PLC0415

        lines.append(f"\nwould write {output}:")
        lines.append(render_yaml(p.config, p.config_comments, []).rstrip())
    lines.append("\ndry run: nothing was changed")
    return lines


def render_outcomes(outcomes: Sequence[Outcome], export: Optional[Path]) -> list[str]:
    """The summary of an install run: one line per backend, what it left behind."""
    lines: list[str] = []
    for o in outcomes:
        v = o.verify
        verdict = f"verify {v.status}: {v.detail}" if v else ""
        lines.append(f"{o.backend}: {'OK' if o.ok else 'FAILED'}: {o.state}" + (f" ({verdict})" if v and o.ok else ""))
        if o.built_wheel:
            lines.append(f"  wheel: {o.built_wheel}")
        if o.ok and o.built:
            lines.append(f"  verification deferred (a build installs nothing): `attn-install install {o.backend} "
                         f"--wheelhouse {export}` on a node with the target GPU installs this wheel and verifies it")
    return lines


# --------------------------------------------------------------------------- bench


def _ms(t: Optional[Timing]) -> str:
    if t is None:
        return "-"
    if t.min is None or t.max is None:
        return f"{t.median:.2f}"
    return f"{t.median:.2f} ({t.min:.2f}-{t.max:.2f})"


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _bench_header(report: BenchReport) -> str:
    e, c = report.env, report.config
    gpu = e.get("gpu") or "no GPU"
    driver = report.machine.get("driver") or "?"
    return (f"{gpu}, driver {driver}, torch {e.get('torch', '?')}: {where(report).split(', ', 1)[-1]}; "
            f"{c.get('warmup', '?')} warm-up + {c.get('repeats', '?')} timed calls, median (min-max)")


def _err(r: BackendResult) -> str:
    """The output's error: relative L2 (and the worst gradient's) when measured, else max abs."""
    if r.rel_err is None:
        return _f(r.max_abs_err, ".2e") + ("" if r.max_abs_err is None else " abs")
    text = _f(r.rel_err, ".1e")
    if r.grads is not None and r.grads.rel_err:
        text += f"/{max(r.grads.rel_err.values()):.1e}"
    return text


def render_bench(report: BenchReport) -> str:
    """The human table; '*' marks the fastest accepted result for the workload's metric, a rejected
    one says why under its numbers."""
    if report.status in ("no_gpu", "no_torch"):
        return f"nothing measured: {report.detail}"
    metric = "fwd" if report.config.get("workload") == "inference" else "fwd+bwd"
    order = ranked(report, metric)
    best = order[0].label if order else None
    lines = [_bench_header(report)]
    j = report.judgment
    if j.get("ceiling_tflops"):
        lines.append(f"ceiling: {j['ceiling_tflops']:g} TFLOP/s ({j.get('why')}, matrices/gpu_peaks.toml)")
    elif j.get("note"):
        lines.append(f"ceiling: none ({j['note']})")
    lines.append("")
    lines.append(f"{'backend':<26}{'version':<18}{'fwd ms':<22}{'fwd+bwd ms':<24}{'TFLOP/s':<14}"
                 f"{'peak GiB':<10}{'rel err':<16}note")
    for r in report.results:
        mark = "*" if r.label == best else " "
        if r.status not in ("ok", "rejected"):
            detail = " ".join(r.detail.replace("\\n", " ").split())
            lines.append(f"{mark}{r.label:<25}{(r.version or '-')[:17]:<18}{r.status}: "
                         f"{detail[:110] + ('...' if len(detail) > 110 else '')}")
            continue
        tf = f"{_f(r.fwd_tflops, '.0f')}/{_f(r.fwdbwd_tflops, '.0f')}"
        note = "REJECTED" if r.status == "rejected" else (f"default kernel: {r.kernel}" if r.kernel else "")
        lines.append(f"{mark}{r.label:<25}{(r.version or '-')[:17]:<18}{_ms(r.fwd):<22}{_ms(r.fwdbwd):<24}{tf:<14}"
                     f"{_f(r.peak_mem_gib, '.1f'):<10}{_err(r):<16}{note}".rstrip())
        for reason in r.rejected:
            lines.append(f"    rejected: {reason}")
    lines.append("")
    if best is not None:
        lines.append(f"fastest for {report.config.get('workload', 'full')} ({metric}): {best}; "
                     "`attn-install plan --measured` ranks by these numbers (rejected ones never)")
    else:
        lines.append(f"no backend has an accepted {metric} time")
    if not report.complete:
        lines.append(f"incomplete: {report.detail}")
    return "\n".join(lines)
