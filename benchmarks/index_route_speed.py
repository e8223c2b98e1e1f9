"""Issue #18 speed target, measured (not a timed test): `attn-install install` by the PyTorch-index
route, from start to verified, and the HTTP round trips each route candidate costs.

The loopback world the tests use (tests/pkgindex.py): a PEP 503 index serving the PyTorch index's
layout (/whl/cu130/flash-attn-3/) and a default index (/simple/), a venv holding a stand-in torch
2.11.0+cu130, a fake nvidia-smi printing the recorded H200 output, no CUDA toolkit. The FA3 wheel
is a small stand-in named like the real one; without a GPU, verification stops after the import
("skipped: no GPU"), as the issue allows. Two cases:

  hit   the index has flash-attn-3 3.0.0: one candidate
  miss  it does not, the wheel farm has it: the first candidate fails, is rolled back, the second
        installs (the farm is the GitHub-release mimic)

    python benchmarks/index_route_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loopback import world  # noqa: E402
from tests.pkgindex import build_wheel  # noqa: E402

FIX = REPO / "tests/fixtures/nvidia/h200-device"
FA3 = {"flash_attn_interface.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError\n"}


def kinds(requests: list[str]) -> Counter:
    def kind(r: str) -> str:
        path = r.split(" ", 1)[1]
        if path.startswith("/whl/"):
            return "pytorch-index"
        if path.startswith("/simple/"):
            return "default-index page"
        if path.startswith("/files/"):
            return "file"
        return "release asset"
    return Counter(kind(r) for r in requests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="attn-index-speed-"))
    w = world(tmp, "2.11.0+cu130", "13.0")
    idx, env, py = w.idx, w.env, w.py
    env["ATTN_INSTALL_PYTORCH_INDEX"] = idx.url + "/whl/{flavour}"
    built = tmp / "built"
    for name in ("einops", "packaging", "ninja"):
        idx.add(build_wheel(built, name, "1.0", {f"{name}_standin.py": ""}))
    fa3 = build_wheel(built, "flash_attn_3", "3.0.0", FA3, ("torch", "einops", "packaging", "ninja"),
                      tag="cp39-abi3-manylinux_2_28_x86_64")
    ai = [sys.executable, "-m", "attn_installer", "install", "flash_attention_3", "--python", py, "--yes"]

    def once(case: str) -> tuple[float, Counter, str]:
        subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "flash_attn_3", "einops", "packaging", "ninja"],
                       env=env, capture_output=True, check=False)
        idx.requests.clear()
        t0 = time.perf_counter()
        r = subprocess.run(ai, env=env, capture_output=True, text=True, check=False)
        dt = time.perf_counter() - t0
        if r.returncode != 0 or "verify skipped: no GPU" not in r.stdout:
            sys.exit(f"{case}: install failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        return dt, kinds(idx.requests), r.stdout

    # hit: the index holds the wheel
    idx.add(fa3)
    hits = [once("hit") for _ in range(args.repeat)]
    # miss: the index lacks it, the farm has it
    (idx.root / "files" / fa3.name).unlink()
    plan = subprocess.run([sys.executable, "-m", "attn_installer", "plan", "--json", "--python", py, "--backend",
                           "flash_attention_3"], env=env, capture_output=True, text=True, check=True).stdout
    import json  # noqa: PLC0415

    farm = next(r for r in next(b for b in json.loads(plan)["backends"] if b["name"] == "flash_attention_3")["routes"]
                if r["kind"] == "wheel_farm")
    name = farm["download"]["filename"]
    _, version, *tag = name[:-4].split("-")
    (idx.root / "assets" / name).write_bytes(build_wheel(tmp / "farm", "flash_attn_3", version, FA3, ("torch",),
                                                         tag="-".join(tag)).read_bytes())
    misses = [once("miss") for _ in range(args.repeat)]
    print(f"loopback world, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.repeat} runs each")
    for label, runs in (("index route, hit", hits), ("index miss -> wheel farm", misses)):
        times = [t for t, _, _ in runs]
        def said(c: Counter) -> str:
            return f"{sum(c.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + ")"

        print(f"{label:26} median {statistics.median(times):5.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
              f"HTTP requests, first run {said(runs[0][1])}, later runs {said(runs[-1][1])}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
