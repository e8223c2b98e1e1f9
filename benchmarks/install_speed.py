"""Issue #3 speed targets, measured (not a timed test): from a warm cache, `attn-install install` of a
prebuilt wheel plus verification, and `install --dry-run`.

Sets up what the tests use: a package index + GitHub-release mimic on loopback (tests/pkgindex.py),
a venv with a stand-in torch 2.8.0+cu126, a fake nvidia-smi printing the recorded H200 output, and the
flash-attn 2.8.3 release wheel file the plan names (a small stand-in). Without a GPU, verification stops
after importing the backend ("skipped: no GPU"), so it is excluded as the issue allows.

    python benchmarks/install_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loopback import world  # noqa: E402
from tests.pkgindex import build_wheel  # noqa: E402

FIX = REPO / "tests/fixtures/nvidia/h200-device"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="attn-speed-"))
    w = world(tmp)
    idx, env, py = w.idx, w.env, w.py
    ai = [sys.executable, "-m", "attn_installer"]
    plan = json.loads(subprocess.run([*ai, "plan", "--json", "--python", py, "--backend", "flash_attention_2"],
                                     env=env, capture_output=True, text=True, check=True).stdout)
    filename = next(b for b in plan["backends"] if b["name"] == "flash_attention_2")["download"]["filename"]
    parts = filename[:-4].split("-")
    wheel = build_wheel(tmp / "gh", "flash_attn", parts[1], {"flash_attn/__init__.py": "flash_attn_func = None\n"},
                        ("torch",), tag="-".join(parts[2:]))
    (idx.root / "assets" / filename).write_bytes(wheel.read_bytes())
    install = [*ai, "install", "flash_attention_2", "--python", py, "--yes"]
    subprocess.run(install, env=env, check=True, capture_output=True)  # cold: fills the download cache

    def timed(argv: list[str], reset: bool) -> float:
        if reset:
            subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "flash_attn"], env=env, check=True)
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0

    warm = [timed(install, True) for _ in range(args.repeat)]
    dry = [timed([*install, "--dry-run"], False) for _ in range(args.repeat)]
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; median of {args.repeat}")
    print(f"install flash_attention_2 from a warm cache (verification: skipped, no GPU): "
          f"{statistics.median(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f})")
    print(f"install --dry-run: {statistics.median(dry):.2f} s (min {min(dry):.2f}, max {max(dry):.2f})")
    idx.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
