"""Human-readable rendering of facts and plans (plain text, no colour dependency)."""

from __future__ import annotations

from attn_installer.facts import Facts
from attn_installer.plan import BackendPlan, Plan
from attn_installer.runner import format_argv

__all__ = ["render_facts", "render_plan", "render_steps"]


def render_facts(f: Facts) -> str:
    h = f.host
    where = [k for k in ("colab", "kaggle", "wsl", "container") if getattr(h, k)]
    lines = [
        f"host     {h.os} {h.machine}, glibc {h.glibc or '-'}, {h.cpu_count} CPUs, "
        f"{h.memory_gb:g} GiB usable" + (f" ({', '.join(where)})" if where else ""),
        f"python   {f.python.version} ({f.python.executable or '?'})",
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
    return "\n".join(lines)


def render_plan(p: Plan, *, verbose: bool = False) -> str:
    rows = [("backend", "viable", "method", "est.", "why")]
    for b in p.backends:
        est = "-" if b.estimate_minutes is None else ("0" if b.estimate_minutes == 0
                                                     else f"~{b.estimate_minutes:g}m")
        mark = "*" if b.name == p.recommended else " "
        reason = b.reasons[-1] if b.viable else b.reasons[0]
        if reason.startswith("blocked:"):
            reason = "blocked (see BLOCKER below)"
        rows.append((f"{mark}{b.name}", "yes" if b.viable else "no", b.method or "-", est, reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for r in rows:
        out.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    out.append("")
    for blocker in p.blockers:
        out.append(f"BLOCKER: {blocker}")
    for w in p.warnings:
        out.append(f"warning: {w}")
    if p.recommended:
        rec = p.backend(p.recommended)
        out.append(f"recommended: {rec.name} ({rec.title}) for {p.workload}")
        for s in rec.steps:
            env = " ".join(f"{k}={v}" for k, v in s.env.items())
            out.append(f"  step: {(env + ' ') if env else ''}{format_argv(s.argv)}")
        for w in rec.warnings:
            out.append(f"  warning: {w}")
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
            out.extend(f"  - {r}" for r in b.reasons)
    return "\n".join(out)


def render_steps(bp: BackendPlan) -> list[str]:
    """The dry-run listing: every step's argv, env, download and files, nothing run."""
    lines = []
    for i, s in enumerate(bp.steps, 1):
        lines.append(f"{i}. [{s.kind}] {s.description}")
        if s.url:
            lines.append(f"     download {s.url}\n       -> {s.dest}" + (f" (sha256 {s.sha256})" if s.sha256 else ""))
        elif s.dest:
            lines.append(f"     needs {s.dest}")
        for path, content in s.writes.items():
            lines.append(f"     writes {path}: " + ", ".join(content.split()))
        for k, v in s.env.items():
            lines.append(f"     env {k}={v}")
        lines.append(f"     $ {format_argv(s.argv)}")
    return lines
