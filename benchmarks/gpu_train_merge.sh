#!/usr/bin/env bash
# Issue #13 on the GPU machine (device tool), from the repo root: planning from a real training
# config, end to end, on this machine's torch.
#   1. a trimmed FA3 3.0.0 wheel (head dim 128, bf16, sm_90) built once from the carried checkout
#      (.src/fa3), served from a loopback PyTorch-index mimic beside a loopback PyPI of .whl/;
#   2. `--auto --merge` of tests/fixtures/axolotl/training/llama3-lora-packing.yaml (a Llama-3.1 8B
#      LoRA with sample_packing, attn_implementation: flash_attention_2) with the model's config.json
#      (head dim 128, 32 heads, 8 KV heads) in a clean venv over this torch: what is chosen, what is
#      installed, what verify checks (the model's head dim and GQA), what the merge writes;
#   3. `bench --axolotl-config` at the model's shape, then the merge again (the measured switch);
#   4. Gemma-2 (head dim 256, soft-capping) planned against the installed head-dim-128 build.
# Everything lands in OUTDIR. Usage: bash benchmarks/gpu_train_merge.sh OUTDIR
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
port=8766
idx=/tmp/fa3-index
fx=tests/fixtures

log "attn-install's own dependencies from .whl/ (no network here)"
own_deps
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'

log "1. the one-time FA3 3.0.0 build (e2743ab5, bf16 / head dim 128 / sm_90) and the index mimic"
if ! find /tmp/fa3-wh -name "flash_attn_3-*.whl" 2>/dev/null | grep -q .; then
  start=$(date +%s)
  ai build flash_attention_3 --source .src/fa3 --head-dim 128 --dtype bf16 --wheelhouse /tmp/fa3-wh \
    > "$out/build.out" 2> "$out/build.err"
  echo "build rc=$? wall $(( $(date +%s) - start )) s"
  tail -6 "$out/build.err"
fi
wheel=$(find /tmp/fa3-wh -name "flash_attn_3-*.whl" 2>/dev/null | head -1)
if [ -z "$wheel" ]; then echo "no FA3 wheel built: stopping"; exit 1; fi
torch_index_mimic "$idx" "$wheel"
serve_index "$idx" "$port" /tmp/fa3-index.log

log "2. --auto --merge of a Llama-3.1 8B LoRA packing config in a clean venv over this torch"
venv_over_torch /tmp/clean
cp "$fx/axolotl/training/llama3-lora-packing.yaml" "$out/train.yaml"
cp "$fx/model-configs/llama-3.1-8b-instruct.json" "$out/llama.json"
cp "$fx/model-configs/gemma-2-2b.json" "$out/gemma.json"
cp "$fx/axolotl/training/gemma2-softcap.yaml" "$out/gemma2.yaml"
export PIP_INDEX_URL="http://127.0.0.1:$port/simple" PIP_DISABLE_PIP_VERSION_CHECK=1
mirror="http://127.0.0.1:$port/whl/{flavour}"
t0=$(date +%s)
(cd "$out" && ai --auto --python /tmp/clean/bin/python --pytorch-index "$mirror" --merge train.yaml \
  --model-config llama.json --axolotl-version 0.21.0 --yes --report auto-report.json) > "$out/auto.out" 2> "$out/auto.err"
echo "--auto --merge rc=$? wall $(( $(date +%s) - t0 )) s"
cat "$out/auto.out"; tail -25 "$out/auto.err"

log "3. bench at the config's shape, then the merge again"
(cd "$out" && timeout 300 "$py" -m attn_installer bench --python /tmp/clean/bin/python --axolotl-config train.yaml \
  --model-config llama.json --json > bench.json 2> bench.err); echo "bench rc=$?"
tail -5 "$out/bench.err"
(cd "$out" && timeout 60 "$py" -m attn_installer bench --python /tmp/clean/bin/python --axolotl-config train.yaml \
  --model-config llama.json 2>&1 | tail -14)
(cd "$out" && ai config --python /tmp/clean/bin/python --merge train.yaml --model-config llama.json \
  --axolotl-version 0.21.0 2>&1; echo "config --merge rc=$?")

log "4. Gemma-2 2B (head dim 256, soft-capping) planned beside the head-dim-128 FA3 build"
(cd "$out" && ai plan --python /tmp/clean/bin/python --pytorch-index "$mirror" --axolotl-config gemma2.yaml \
  --model-config gemma.json 2>&1 | head -40; echo "plan rc=$?")
(cd "$out" && ai config --python /tmp/clean/bin/python --merge gemma2.yaml --model-config gemma.json \
  --axolotl-version 0.21.0 2>&1; echo "config --merge rc=$?")
kill "$server" 2>/dev/null
exit 0
