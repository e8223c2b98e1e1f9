#!/usr/bin/env bash
# Issue #18 on the GPU machine: FA4 (flash-attn-4 from "PyPI") installed by attn-install, verified
# forward + backward with the GQA / MQA / packed cases, and benched beside FA3 and SDPA. Its
# nvidia-cutlass-dsl libraries are larger than one call carries: the parts were carried in earlier
# calls into /tmp/fa4parts (see the README's "Real runs"); they are joined here. The loopback
# "PyPI" is /tmp/fa4-index/simple, made from .whl/ and the joined wheels.
# Usage: bash benchmarks/gpu_fa4.sh OUTDIR   (after gpu_fa3_index.sh, which left /tmp/clean with FA3)
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
port=8766
idx=/tmp/fa4-index
whl=/tmp/fa4-wheels

log "join the carried parts"
mkdir -p "$whl" && cp .whl/*.whl "$whl"/
for big in nvidia_cutlass_dsl_libs_cu12 nvidia_cutlass_dsl_libs_cu13; do
  name=$(cat "/tmp/fa4parts/$big.name")
  cat "/tmp/fa4parts/$big".part* > "$whl/$name"
  echo "$name: $(sha256sum "$whl/$name" | cut -d' ' -f1) (want $(cat "/tmp/fa4parts/$big.sha256"))"
done
rm -rf "$idx"
simple_index "$idx" "$whl"/*.whl
serve_index "$idx" "$port" /tmp/fa4-index.log
export PIP_INDEX_URL="http://127.0.0.1:$port/simple" PIP_DISABLE_PIP_VERSION_CHECK=1
own_deps
env_py=/tmp/clean/bin/python
[ -x "$env_py" ] || venv_over_torch /tmp/clean

log "plan for FA4 on this H200 (driver, arch, training)"
ai plan --python "$env_py" 2>&1 | grep -E "flash_attention_4|recommended" | head -5

log "install flash_attention_4 (pypi route, torch pinned)"
t0=$("$py" -c 'import time; print(time.time())')
ai install flash_attention_4 --python "$env_py" --yes --report "$out/fa4-report.json" > "$out/fa4-install.out" 2> "$out/fa4-install.err"
rc=$?
"$py" -c 'import sys, time; print(f"install rc={sys.argv[2]} wall {time.time() - float(sys.argv[1]):.1f} s")' "$t0" "$rc"
tail -25 "$out/fa4-install.err"
tail -6 "$out/fa4-install.out"

log "verify FA4 (forward + backward; GQA, MQA, packed; head dims 64 and 128)"
timeout 500 "$py" -m attn_installer verify flash_attention_4 --python "$env_py" > "$out/fa4-verify.out" 2> "$out/fa4-verify.err"
echo "verify rc=$?"
cat "$out/fa4-verify.out"
tail -5 "$out/fa4-verify.err"

log "bench FA4 beside FA3 and SDPA (and flex) at the default shape"
timeout 420 "$py" -m attn_installer bench --python "$env_py" --backends flash_attention_4,flash_attention_3,sdpa \
  --json > "$out/bench-fa4.json" 2> "$out/bench-fa4.err"
echo "bench rc=$?"
tail -6 "$out/bench-fa4.err"
timeout 60 "$py" -m attn_installer bench --python "$env_py" --backends flash_attention_4,flash_attention_3,sdpa 2>&1 | tail -12
kill "$server" 2>/dev/null
exit 0
