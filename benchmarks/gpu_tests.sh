#!/usr/bin/env bash
# The GPU-marked tests (tests/gpu) on the GPU machine (device tool), from the repo root: pytest and
# attn-install's dependencies from the carried .whl/ (no network there), into the machine's
# python3 (the one with torch); then `pytest -m gpu tests/gpu`. Output in OUTDIR/gpu-tests.log.
# Usage: bash benchmarks/gpu_tests.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
own_deps pytest jsonschema
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
start=$(date +%s)
"$py" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rs 2>&1 | tee "$out/gpu-tests.log" | tail -30
echo "pytest rc=${PIPESTATUS[0]} wall $(( $(date +%s) - start )) s" | tee -a "$out/gpu-tests.log"
