#!/usr/bin/env bash
# Run on the GPU machine (device tool) from the repo root, with .whl/ (ruamel wheels and the pinned
# SageAttention wheel + build key from benchmarks/gpu_sage.sh) carried: installs it offline from a
# wheelhouse (verification now also calls sageattn_varlen, axolotl's packed path) and verifies again.
# Usage: bash benchmarks/gpu_sage_verify.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
sage_wheelhouse
"$py" -m attn_installer install sage --workload lora --wheelhouse "$house" --offline --yes \
  --report "$out/sage-verify-report.json" 2>&1 | tail -6
"$py" -m attn_installer verify sage --json > "$out/sage-verify.json"
cat "$out/sage-verify.json"
