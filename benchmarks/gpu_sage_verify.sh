#!/usr/bin/env bash
# Run on the GPU machine (device tool) from the repo root, with .whl/ (ruamel wheels and the pinned
# SageAttention wheel + build key from benchmarks/gpu_sage.sh) carried: installs it offline from a
# wheelhouse (verification now also calls sageattn_varlen, axolotl's packed path) and verifies again.
# Usage: bash benchmarks/gpu_sage_verify.sh OUTDIR
set -uo pipefail
out=${1:?outdir}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 ATTN_INSTALL_CACHE=/tmp/attn-cache
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=$(command -v python3)
house=/tmp/wheelhouse
mkdir -p "$house" && cp .whl/sageattention-* "$house"/
"$py" -m attn_installer install sage --workload lora --wheelhouse "$house" --offline --yes \
  --report "$out/sage-verify-report.json" 2>&1 | tail -6
"$py" -m attn_installer verify sage --json > "$out/sage-verify.json"
cat "$out/sage-verify.json"
