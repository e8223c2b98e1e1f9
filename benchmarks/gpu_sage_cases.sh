#!/usr/bin/env bash
# Issue #14 for SageAttention on the GPU machine (device tool), from the repo root: the pinned
# SageAttention (main @d1a57a5, carried in .src/sage without its image assets) built and installed
# with `attn-install install sage --source`, then verified case by case (GQA, MQA, non-causal,
# packed via sageattn_varlen) at the default head dims and at Llama-3.1 8B's heads, and benched
# beside SDPA at the default shape. Everything lands in OUTDIR. Usage: bash benchmarks/gpu_sage_cases.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
own_deps
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

log "sage: build + install + verify from --source"
start=$(date +%s)
ai install sage --workload lora --source .src/sage --yes --report "$out/sage-report.json" > "$out/install.out" 2> "$out/install.err"
echo "install rc=$? wall $(( $(date +%s) - start )) s"
tail -25 "$out/install.err"

log "verify sage, case by case"
timeout 240 "$py" -m attn_installer verify sage --json > "$out/verify.json" 2> "$out/verify.err"; echo "verify rc=$?"
timeout 240 "$py" -m attn_installer verify sage 2>&1 | tail -20
log "verify sage at Llama-3.1 8B's heads"
timeout 240 "$py" -m attn_installer verify sage --model-config tests/fixtures/model-configs/llama-3.1-8b-instruct.json \
  --json > "$out/verify-llama.json" 2> "$out/verify-llama.err"; echo "verify rc=$?"
log "bench sdpa, sage"
timeout 200 "$py" -m attn_installer bench --backends sdpa,sage --workload lora --json > "$out/bench.json" 2> "$out/bench.err"
echo "bench rc=$?"
timeout 60 "$py" -m attn_installer bench --backends sdpa,sage --workload lora 2>&1 | tail -12
