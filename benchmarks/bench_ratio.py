"""How close attn-install's pick is to the fastest trustworthy backend, on a recorded real bench.

    python benchmarks/bench_ratio.py --bench BENCH.json [--facts PROBE.json] [--workload full|lora|inference]

BENCH.json is `attn-install bench --json` output (or a cached report). Every result is judged first
(attn_installer/judge.py: error vs fp32 attention within the backend's tolerance, gradients for
fwd+bwd, below the GPU's peak); the recommended backend is the plan's for the machine of PROBE.json
(`attn-install probe --json`; default: the recorded H200 probe) with the report's backend versions
installed, ranked by the accepted times (as `plan --measured` does with verified builds). Prints
the speed of the recommended backend relative to the best accepted one (best time / recommended
time; goal >= 0.95) and the static recommendation's (no bench) beside it. A recorded report comes
from another machine, so whether its builds are still installed is not asked here.

Exit 0: the goal is met; 1: missed; 2: nothing accepted to compare with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from attn_installer import bench as b  # noqa: E402
from attn_installer.facts import load_facts  # noqa: E402
from attn_installer.judge import judge  # noqa: E402
from attn_installer.matrix import load_matrix  # noqa: E402
from attn_installer.plan import plan_for  # noqa: E402
from attn_installer.request import Request, Target  # noqa: E402

GOAL = 0.95
DEFAULT_FACTS = REPO / "tests/fixtures/nvidia/h200-device/probe.json"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--facts", type=Path, default=DEFAULT_FACTS)
    ap.add_argument("--workload", choices=["full", "lora", "inference"], default=None,
                    help="default: the bench's own workload")
    args = ap.parse_args(argv)
    matrix = load_matrix()
    report = judge(b.BenchReport.from_dict(json.loads(args.bench.read_text())), matrix)
    workload = args.workload or str(report.config.get("workload") or "full")
    metric = "fwd" if workload == "inference" else "fwd+bwd"
    facts = load_facts(args.facts)
    facts = dataclasses.replace(facts, packages={**facts.packages, **report.machine.get("packages", {})})
    vendor = facts.gpus[0].vendor if facts.gpus else None
    speeds = b.measured_speeds(report, workload, matrix, vendor)
    target = Target(cache_dir="/nonexistent")
    measured = plan_for(facts, matrix, Request(workload=workload, measured=speeds), target).recommended
    static = plan_for(facts, matrix, Request(workload=workload), target).recommended

    print(f"bench: {args.bench} ({b.where(report)}, {metric})")
    accepted = b.ranked(report, metric)
    print("accepted: " + (", ".join(f"{r.backend} {r.ms(metric):.3f} ms" for r in accepted) or "none"))
    for r in report.results:
        if r.status == "rejected":
            print(f"rejected: {r.label}: {r.detail}")
    if not speeds:
        print(f"nothing accepted for {workload} ({metric}): no ratio")
        return 2
    best = speeds[0]
    times = {m.backend: m.ms for m in speeds}
    print(f"best accepted: {best.backend} {best.ms:.3f} ms")
    ok = True
    for label, pick in (("recommended (plan --measured)", measured), ("recommended without a bench", static)):
        if pick is None or pick not in times:
            print(f"{label}: {pick or 'none'} (no accepted {metric} time)")
            ok = ok and label != "recommended (plan --measured)"
            continue
        ratio = best.ms / times[pick]
        met = ratio >= GOAL
        print(f"{label}: {pick} {times[pick]:.3f} ms; speed vs the best accepted: {ratio:.3f} "
              f"(goal >= {GOAL}): {'met' if met else 'MISSED'}")
        if label.startswith("recommended (plan"):
            ok = ok and met
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
