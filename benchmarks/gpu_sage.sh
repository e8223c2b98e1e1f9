#!/usr/bin/env bash
# Run on the GPU machine (device tool), from the repo root, with .whl/ (ruamel wheels) and a
# SageAttention checkout at the pinned commit in .src/SageAttention carried. Builds, installs and
# verifies SageAttention through attn-install's own path, measures it, and leaves the built wheel
# (split into parts under 16 MB) and its build key in OUTDIR for the next run's wheelhouse.
# Usage: bash benchmarks/gpu_sage.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
start_mem_sampler
log "plan for sage (lora)"
ai plan --backend sage --workload lora 2>&1 | tail -8
log "sage build + install + verify from --source"
start=$(date +%s)
ai install sage --workload lora --source .src/SageAttention --yes --report "$out/sage-report.json" 2>&1 | tail -45
echo "sage install wall: $(( $(date +%s) - start )) s"
log "disk used by the build"
du -sh .src/SageAttention/build /tmp/attn-cache/wheels 2>/dev/null
log "memory: baseline and peak used (MB)"
head -1 "$out/mem-used-mb.txt"; sort -n "$out/mem-used-mb.txt" | tail -1
kill "$sampler" 2>/dev/null
log "bench sdpa / flex / sage (forward for sage)"
timeout 120 "$py" -m attn_installer bench --backends sdpa,flex_attention,sage --json > "$out/bench-sage.json" 2>"$out/bench-sage.err"
tail -5 "$out/bench-sage.err"
log "export the built wheel (cache hit, no rebuild)"
house=/tmp/house
ai build sage --workload lora --source .src/SageAttention --wheelhouse "$house" 2>&1 | tail -5
ls -l "$house"
for w in "$house"/*.whl; do
  split -b 15m "$w" "$out/$(basename "$w").part-"
  cp "$w.attn-install-key.json" "$out/sage-key.json"
  sha256sum "$w"
done
