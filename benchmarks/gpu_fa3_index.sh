#!/usr/bin/env bash
# Issue #18 on the GPU machine (device tool), from the repo root: a real FA3 binary through the
# PyTorch-index route, end to end.
#   1. build FA3 3.0.0 once with `attn-install build` from a carried checkout of flash-attention
#      e2743ab5 (hopper/ + csrc/cutlass at its submodule commit, in .src/fa3), trimmed to bf16 /
#      head dim 128 / sm_90 (the one-time build, not counted below);
#   2. serve it from a loopback index laid out like download.pytorch.org (/whl/cu130/flash-attn-3/,
#      links with #sha256=), next to a loopback "PyPI" (/simple/) holding the carried .whl/ wheels;
#   3. in a clean venv over the device's torch: `attn-install --auto --pytorch-index URL` as a
#      mirror user runs it: no --allow-source; it must pick FA3 by the torch_index route, install,
#      verify, and write the config; wall time from start to verified is measured;
#   4. bench in that venv.
# Everything lands in OUTDIR. Usage: bash benchmarks/gpu_fa3_index.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
port=8765
idx=/tmp/fa3-index

log "attn-install's own dependencies from .whl/ (no network here)"
own_deps
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

log "1. the one-time FA3 3.0.0 build (e2743ab5, bf16 / head dim 128 / sm_90)"
if ! find /tmp/fa3-wh -name "flash_attn_3-*.whl" 2>/dev/null | grep -q .; then
  start=$(date +%s)
  ai build flash_attention_3 --source .src/fa3 --head-dim 128 --dtype bf16 --wheelhouse /tmp/fa3-wh \
    > "$out/build.out" 2> "$out/build.err"
  echo "build rc=$? wall $(( $(date +%s) - start )) s"
  tail -15 "$out/build.err"
else
  echo "built in an earlier call of this session: $(ls /tmp/fa3-wh)"
fi
wheel=$(find /tmp/fa3-wh -name "flash_attn_3-*.whl" 2>/dev/null | head -1)
if [ -z "$wheel" ]; then echo "no FA3 wheel built: stopping"; exit 1; fi
ls -la /tmp/fa3-wh

log "2. a loopback PyTorch-index mimic (/whl/cu130/flash-attn-3/) and a loopback PyPI (/simple/)"
torch_index_mimic "$idx" "$wheel"
serve_index "$idx" "$port" /tmp/fa3-index.log

log "3. --auto on a clean venv over this torch, pointed at the mirror"
venv_over_torch /tmp/clean
/tmp/clean/bin/python -c 'import importlib.util as u; print("flash_attn_interface before:", u.find_spec("flash_attn_interface"))'
export PIP_INDEX_URL="http://127.0.0.1:$port/simple" PIP_DISABLE_PIP_VERSION_CHECK=1
t0=$("$py" -c 'import time; print(time.time())')
(cd "$out" && ai --auto --python /tmp/clean/bin/python --pytorch-index "http://127.0.0.1:$port/whl/{flavour}" \
  --head-dim 128 --dtype bf16 --yes -o auto-config.yaml --report auto-report.json) > "$out/auto.out" 2> "$out/auto.err"
rc=$?
"$py" -c 'import sys, time; print(f"--auto rc={sys.argv[2]} wall {time.time() - float(sys.argv[1]):.1f} s (start to verified and config written)")' "$t0" "$rc"
tail -30 "$out/auto.out"
tail -12 "$out/auto.err"
cat "$out/auto-config.yaml" 2>/dev/null
grep -c "GET /whl/cu130/flash-attn-3/" /tmp/fa3-index.log | sed 's/^/index page requests: /'

log "4. bench in the clean venv"
timeout 400 "$py" -m attn_installer bench --python /tmp/clean/bin/python --json > "$out/bench.json" 2> "$out/bench.err"
echo "bench rc=$?"
tail -20 "$out/bench.err"
timeout 60 "$py" -m attn_installer bench --python /tmp/clean/bin/python 2>&1 | tail -14
kill "$server" 2>/dev/null
exit 0
