#!/usr/bin/env bash
# Run on the GPU machine (device tool): record real probe output and the plan there.
# Usage: bash benchmarks/gpu_collect.sh OUTDIR
set -uo pipefail
out=${1:?outdir}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -q -x > "$out/nvidia-smi-q.xml" 2>&1
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version,uuid --format=csv,noheader,nounits > "$out/nvidia-smi-query.csv" 2>&1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
cat /proc/driver/nvidia/version > "$out/proc-driver-nvidia-version.txt" 2>&1
nvcc --version > "$out/nvcc-version.txt" 2>&1
python3 -m attn_installer probe --json > "$out/probe.json"
python3 -m attn_installer probe --json --torch-arch-list > "$out/probe-arch-list.json"
python3 -m attn_installer probe
python3 -m attn_installer plan --json > "$out/plan.json"
python3 -m attn_installer plan
python3 -m attn_installer plan --allow-source --head-dim 128 --dtype bf16
(cd "$out" && python3 -m attn_installer --auto --output auto-config.yaml) > "$out/auto.txt" 2>&1; cat "$out/auto.txt"
python3 benchmarks/probe_speed.py --repeat 7 --json "$out/probe-speed.json"
python3 -m attn_installer verify sdpa flex_attention eager --json > "$out/verify.json"; cat "$out/verify.json"
python3 -m attn_installer verify sdpa --dtype fp16 --head-dim 64
