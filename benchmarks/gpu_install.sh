#!/usr/bin/env bash
# Run on the GPU machine (device tool), from the repo root, with .whl/ (ruamel wheels, and the
# SageAttention wheel + build key left by benchmarks/gpu_sage.sh) and a flash-attention
# v2.8.3.post1 checkout (hopper/ + csrc/cutlass) in .src/flash-attention carried.
# Installs through attn-install's own paths, then measures. Usage: bash benchmarks/gpu_install.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
sage_wheelhouse
start_mem_sampler
log "sage from the wheelhouse (built on another node: matching build key, no compile)"
TIMEFORMAT="wall %R s"
time "$py" -m attn_installer install sage --workload lora --source .src/SageAttention --wheelhouse "$house" \
  --offline --yes --report "$out/sage-report.json" 2>&1 | tail -12
log "FA3 trimmed build from --source"
start=$(date +%s)
ai install flash_attention_3 --source .src/flash-attention --head-dim 128 --dtype bf16 --yes \
  --report "$out/fa3-report.json" 2>&1 | tail -40
echo "FA3 install wall: $(( $(date +%s) - start )) s"
log "bench"
time timeout 300 "$py" -m attn_installer bench --plot "$out/bench.png" 2>&1
timeout 60 "$py" -m attn_installer bench --json > "$out/bench.json" 2>/dev/null
log "bench packed (varlen)"
timeout 200 "$py" -m attn_installer bench --packed --json > "$out/bench-packed.json" 2>/tmp/bench-packed.err
tail -25 /tmp/bench-packed.err
log "reinstall FA3 from the wheel cache"
"$py" -m pip uninstall -y -q flash_attn_3
time "$py" -m attn_installer install flash_attention_3 --source .src/flash-attention \
  --head-dim 128 --dtype bf16 --yes 2>&1 | tail -8
log "plan --measured and --auto"
ai plan --measured 2>&1 | head -14
(cd "$out" && "$py" -m attn_installer --auto --yes --output auto-config.yaml) 2>&1 | tail -40
kill "$sampler" 2>/dev/null
log "memory: baseline and peak used (MB)"
head -1 "$out/mem-used-mb.txt"; sort -n "$out/mem-used-mb.txt" | tail -1
