"""Check issue #4's speed targets against a real GPU run of benchmarks/gpu_install.sh.

Targets: the trimmed FA3 build for the detected Hopper GPU, one head dim and one dtype, completes
in under 5 minutes on a 16-core host, with at least 10x fewer compile units than the default build,
and never exceeds the memory it planned for; a reinstall from the wheel cache takes under 30 s.

    python benchmarks/check_build_targets.py --report OUT/fa3-report.json --log OUT/run.log

Reads only the files the run left (the install report, the script's log with its memory samples
and the reinstall wall time) and the matrix; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attn_installer.matrix import load_matrix  # noqa: E402


def check(report: dict, log: str, default_units: int = 0) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows."""
    res = next(r for r in report["results"] if r["backend"] == "flash_attention_3")
    plan = next(b for b in report["plan"]["backends"] if b["name"] == "flash_attention_3")
    build = next(s for s in plan["steps"] if s["kind"] == "build")
    build_s = next(s["seconds"] for s in res["steps"] if s["kind"] == "build")
    cpus = report["facts"]["host"]["cpu_count"]
    m = load_matrix()
    default_units = default_units or m.source_for("flash_attention_3").compile_units
    counted = re.findall(r"compiled \d+/(\d+) units", log)
    units = plan.get("compile_units") or (int(counted[-1]) if counted else 0)
    if not units:
        raise SystemExit("no compile-unit count in the report's plan or the log's progress lines")
    jobs, threads = int(build["env"]["MAX_JOBS"]), int(build["env"]["NVCC_THREADS"])
    planned_gb = min(jobs, units) * threads * m.build.gb_per_nvcc_thread
    mem = re.search(r"memory: baseline and peak used \(MB\)\n(\d+)\n(\d+)", log)
    assert mem, "no memory samples in the log"
    peak_gb = (int(mem.group(2)) - int(mem.group(1))) / 1024
    reinstall = re.search(r"reinstall FA3 from the wheel cache.*?wall ([\d.]+) s", log, re.S)
    assert reinstall, "no reinstall wall time in the log"
    re_s = float(reinstall.group(1))
    return [
        (f"trimmed build < 5 min on a {cpus}-CPU host", f"{build_s / 60:.2f} min", build_s < 300),
        ("compile units >= 10x fewer than the default build", f"{units} vs {default_units} "
         f"({default_units / units:.1f}x)", default_units >= 10 * units),
        ("host memory within the plan (peak over the baseline)", f"{peak_gb:.1f} GB vs {planned_gb:g} GB planned "
         f"(MAX_JOBS={jobs}, NVCC_THREADS={threads})", peak_gb <= planned_gb),
        ("reinstall from the wheel cache < 30 s", f"{re_s:.1f} s", re_s < 30),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--default-units", type=int, default=0,
                    help="compile units of the untrimmed build of the ref the report built (default: the "
                         "matrix's, for its pinned ref; v2.8.3.post1's was 133)")
    a = ap.parse_args()
    rows = check(json.loads(a.report.read_text()), a.log.read_text(), a.default_units)
    gpu = json.loads(a.report.read_text())["facts"]["gpus"][0]["name"]
    print(f"{gpu}: {a.report}")
    for target, measured, met in rows:
        print(f"  {'met ' if met else 'MISSED'}  {target}: {measured}")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
