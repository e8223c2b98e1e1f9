"""Soak (issue #16): many `attn-install plan --facts F --json` and `probe --json` runs in parallel
batches on one simulated machine leave no temp dirs, locks, journals or partial files behind and
give identical outputs.

The machine is a fake nvidia-smi printing the recorded H200 output (tests/fixtures/nvidia/h200-device)
on PATH, so the probe reads a GPU; every run shares one private TMPDIR and one ATTN_INSTALL_CACHE,
as parallel jobs of one user do. F is the first probe's output. After the runs: the TMPDIR must be
empty, the cache must hold nothing new (no lock, journal, pointer, backup, ``.part`` or log), and
each command must have given one output (exit code, stdout and stderr equal across its runs).

Usage: python benchmarks/soak.py [--runs 200] [--parallel 8] [--json out.json]; exit 1 on any finding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
H200 = REPO / "tests/fixtures/nvidia/h200-device"


def machine(root: Path) -> dict[str, str]:
    """The environment of the simulated H200 machine, with a private TMPDIR and cache under *root*."""
    bindir = root / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
case "$1" in
  --query-gpu=*) cat {H200 / 'nvidia-smi-query.csv'} ;;
  -q) exit 9 ;;
  *) cat {H200 / 'nvidia-smi.txt'} ;;
esac
""")
    smi.chmod(0o755)
    (root / "tmp").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA", "VIRTUAL_ENV", "ATTN_INSTALL"))}
    env.update({"PATH": f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
                "TMPDIR": str(root / "tmp"), "ATTN_INSTALL_CACHE": str(root / "cache"),
                "ATTN_INSTALL_NO_NVML": "1", "HOME": str(root), "PYTHONPATH": str(REPO)})
    return env


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="runs in all, half plan and half probe (default 200)")
    ap.add_argument("--parallel", type=int, default=8, help="runs started at once, per batch (default 8)")
    ap.add_argument("--json", type=Path, default=None, help="write the findings here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="attn-soak-") as d:
        root = Path(d)
        env = machine(root)
        py = [sys.executable, "-m", "attn_installer"]
        first = subprocess.run([*py, "probe", "--json"], env=env, cwd=root, capture_output=True, text=True,
                               timeout=120, check=False)
        if first.returncode != 0:
            print(f"the first probe failed (exit {first.returncode}): {first.stderr.strip()[-500:]}")
            return 1
        gpus = [g.get("name") for g in json.loads(first.stdout).get("gpus", [])]
        if not gpus:
            print("the first probe found no GPU: the fake nvidia-smi was not read")
            return 1
        facts = root / "facts.json"
        facts.write_text(first.stdout)
        commands = {"plan": [*py, "plan", "--facts", str(facts), "--json"], "probe": [*py, "probe", "--json"]}
        tmp, cache = root / "tmp", root / "cache"
        tmp_before, cache_before = listing(tmp), listing(cache)
        outputs: dict[str, Counter[tuple[int, str, str]]] = {k: Counter() for k in commands}
        order = [name for _ in range((args.runs + 1) // 2) for name in commands][: args.runs]
        t0 = time.perf_counter()
        for i in range(0, len(order), args.parallel):
            batch = order[i:i + args.parallel]
            procs = [(name, subprocess.Popen(commands[name], env=env, cwd=root, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)) for name in batch]
            for name, p in procs:
                out, err = p.communicate(timeout=300)
                outputs[name][(p.returncode, out, err)] += 1
        wall = time.perf_counter() - t0
        left_tmp = sorted(listing(tmp) - tmp_before)
        left_cache = sorted(listing(cache) - cache_before)
        findings = []
        for name, seen in outputs.items():
            if len(seen) != 1:
                findings.append(f"{name}: {len(seen)} different outputs in {sum(seen.values())} runs")
            for (rc, _out, err), n in seen.items():
                if rc != 0:
                    findings.append(f"{name}: exit {rc} in {n} runs: {err.strip()[-300:]}")
        if left_tmp:
            findings.append(f"left in TMPDIR: {left_tmp[:10]} ({len(left_tmp)} entries)")
        if left_cache:
            findings.append(f"left in the cache: {left_cache[:10]} ({len(left_cache)} entries)")
        runs = {name: sum(seen.values()) for name, seen in outputs.items()}
        print(f"machine: {gpus[0]} x{len(gpus)} (recorded nvidia-smi)")
        print(f"{len(order)} runs ({', '.join(f'{n} {k}' for k, n in runs.items())}), {args.parallel} at a time, "
              f"{wall:.1f} s on {os.cpu_count()} CPUs")
        print(f"distinct outputs: {', '.join(f'{k} {len(v)}' for k, v in outputs.items())}; "
              f"left in TMPDIR: {len(left_tmp)}; new in the cache: {len(left_cache)}")
        for f in findings:
            print(f"FINDING  {f}")
        if not findings:
            print("ok: identical outputs, nothing left behind")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "parallel": args.parallel, "wall_s": round(wall, 2),
                                             "cpus": os.cpu_count(), "findings": findings}, indent=2) + "\n")
        return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
