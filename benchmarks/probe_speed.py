"""Speed targets of the core issue: `attn-install probe --json` vs `python -m torch.utils.collect_env`
(>= 10x faster, < 0.5 s median) and `attn-install plan --facts` (< 0.3 s median).

Each command runs as a fresh process, as a user would start it. Prints a table and, with
--json FILE, writes the raw timings. Usage: python benchmarks/probe_speed.py [--repeat 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr[-500:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    py = sys.executable
    probe = [py, "-m", "attn_installer", "probe", "--json"]
    results: dict[str, object] = {"python": platform.python_version(), "machine": platform.machine()}
    probe_t = timed(probe, args.repeat)
    facts = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(facts)
    plan_t = timed([py, "-m", "attn_installer", "plan", "--facts", fh.name, "--json"], args.repeat)
    results["probe_median_s"] = statistics.median(probe_t)
    results["plan_facts_median_s"] = statistics.median(plan_t)
    has_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, check=False).returncode == 0
    rows = [("attn-install probe --json", probe_t), ("attn-install plan --facts F --json", plan_t)]
    if has_torch:
        env_t = timed([py, "-m", "torch.utils.collect_env"], max(3, args.repeat // 2))
        results["collect_env_median_s"] = statistics.median(env_t)
        results["speedup"] = statistics.median(env_t) / statistics.median(probe_t)
        rows.append(("python -m torch.utils.collect_env", env_t))
    for name, ts in rows:
        print(f"{name:40s} median {statistics.median(ts):.3f} s  (min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)})")
    if "speedup" in results:
        print(f"probe is {results['speedup']:.1f}x faster than collect_env")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
