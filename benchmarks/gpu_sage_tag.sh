#!/usr/bin/env bash
# Run on the GPU machine (device tool), from the repo root, with .whl/ (ruamel wheels and the
# pinned SageAttention wheel + build key from benchmarks/gpu_sage.sh) and the v2.2.0 tag's sources in
# .src/SageAttention-v2.2.0 carried. Shows: the pinned wheel installed from a wheelhouse, then the v2.2.0 tag built with --source, caught by verification and
# rolled back to the good install. Usage: bash benchmarks/gpu_sage_tag.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
sage_wheelhouse
log "pinned sage from the wheelhouse, offline"
ai install sage --workload lora --wheelhouse "$house" --offline --yes 2>&1 | tail -6
log "the v2.2.0 tag with --source: build, verify, roll back"
start=$(date +%s)
ai install sage --workload lora --source .src/SageAttention-v2.2.0 --yes --report "$out/sage-tag-report.json" 2>&1 | tail -14
echo "exit ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s"
log "what is installed now"
"$py" -m pip show sageattention 2>/dev/null | head -2
ai verify sage 2>&1 | tail -3
