#!/usr/bin/env bash
# Issue #14 on the GPU machine (device tool), from the repo root, in one go (about 5 min on an H200):
# a throwaway venv over the device's torch (python3, torch 2.11) holds a stand-in flash-attn 2.8.3
# whose flash_attn_func returns zeros, later replaced by another 2.8.3 whose kernel raises at the
# first call (both built here by benchmarks/standin_flash_attn.py: no network). Against them it runs
# verify, bench, plan --measured and --auto, and verifies sdpa and flex_attention (and FA3 /
# SageAttention where installed) with the GQA, MQA, varlen and gradient cases. Every output goes
# under OUTDIR; benchmarks/gpu_judge_check.py reads them and prints the summary (exit 1 on a miss).
#
# Usage: bash benchmarks/gpu_judge.sh OUTDIR           on the GPU machine
#        bash benchmarks/gpu_judge.sh OUTDIR --dry     anywhere (CI): wheels, venv, the build digest
#                                                      of each stand-in; no GPU steps
# ATTN_PY: the interpreter that runs attn-install (default: python3, the torch env's).
set -uo pipefail
# shellcheck source=benchmarks/device_env.sh
source "$(dirname "$0")/device_env.sh"
mode=${2:-device}
here=$(cd "$(dirname "$0")" && pwd)
aipy=${ATTN_PY:-$py}
AI=("$aipy" -m attn_installer)
ai() { "$aipy" -m attn_installer "$@"; }
# step NAME SECONDS CMD...: stdout to OUTDIR/NAME.out, stderr to NAME.err, exit code to NAME.rc
step() {
  local name=$1 secs=$2
  shift 2
  log "$name: $*"
  timeout "$secs" "$@" > "$out/$name.out" 2> "$out/$name.err"
  echo $? > "$out/$name.rc"
  tail -4 "$out/$name.err"
}
digest() {  # the build digest attn-install reads for flash_attention_2 in the throwaway venv
  "$aipy" -c 'import sys
from attn_installer.builds import current_builds
from attn_installer.matrix import load_matrix
from attn_installer.runner import SubprocessRunner
print(current_builds(SubprocessRunner(), sys.argv[1], load_matrix(), ["flash_attention_2"]).get("flash_attention_2", ""))' "$vpy"
}

# --auto writes its config with ruamel.yaml: from the carried .whl/ when the interpreter lacks it
if ! "$aipy" -c 'import ruamel.yaml' 2>/dev/null; then
  if compgen -G ".whl/ruamel*" > /dev/null; then
    "$aipy" -m pip install -q --no-index --no-deps --target /tmp/attn-judge-deps .whl/ruamel*
    export PYTHONPATH="/tmp/attn-judge-deps:$PYTHONPATH"
  else
    echo "note: ruamel.yaml is missing and .whl/ has no ruamel wheel: --auto cannot write its config"
  fi
fi

log "stand-in wheels and the throwaway venv"
wheels="$out/standin-wheels"
for kind in zeros raises; do
  "$aipy" "$here/standin_flash_attn.py" "$kind" "$wheels" || { echo "could not build the $kind stand-in"; exit 1; }
done
venv="$(mktemp -d /tmp/attn-judge-XXXXXX)/venv"
"$py" -m venv --system-site-packages "$venv" || { echo "could not make $venv"; exit 1; }
vpy="$venv/bin/python"
# python3 may itself be a venv (the device's is /opt/torch/.venv): put its site-packages on the new
# venv's path so torch is found there
purelib=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$py" -c 'import site; print("\n".join(site.getsitepackages()))' > "$purelib/attn-judge-parent.pth"
"$vpy" -m pip install -q --no-index --no-deps "$wheels"/zeros/*.whl || { echo "pip install failed"; exit 1; }
"$vpy" -c 'import flash_attn; print("installed flash-attn", flash_attn.__version__, flash_attn.KIND)' | tee "$out/zeros.txt"
digest > "$out/digest-zeros.txt"

if [ "$mode" != "--dry" ]; then
  step probe 60 "${AI[@]}" probe --python "$vpy" --json
  step verify-zeros 240 "${AI[@]}" verify flash_attention_2 --python "$vpy" --json
  step bench-zeros 300 "${AI[@]}" bench --python "$vpy" --json
  ai bench --python "$vpy" > "$out/bench-zeros.txt" 2>/dev/null  # the table, from the cache
  real=(sdpa flex_attention)
  "$vpy" -c 'import flash_attn_interface' 2>/dev/null && real+=(flash_attention_3)
  "$vpy" -c 'import sageattention' 2>/dev/null && real+=(sage)
  step verify-real 420 "${AI[@]}" verify "${real[@]}" --python "$vpy" --json
  step verify-model 240 "${AI[@]}" verify sdpa --python "$vpy" --json \
    --model-config "$PWD/tests/fixtures/model-configs/qwen2.5-3b-instruct.json"
  step plan-zeros 60 "${AI[@]}" plan --measured --python "$vpy" --json
fi

log "replace it by another flash-attn 2.8.3 whose kernel raises"
"$vpy" -m pip install -q --no-index --no-deps --force-reinstall "$wheels"/raises/*.whl || { echo "pip failed"; exit 1; }
"$vpy" -c 'import flash_attn; print("installed flash-attn", flash_attn.__version__, flash_attn.KIND)' | tee "$out/raises.txt"
digest > "$out/digest-raises.txt"

if [ "$mode" != "--dry" ]; then
  step plan-swapped 60 "${AI[@]}" plan --measured --python "$vpy" --json
  step bench-raises 300 "${AI[@]}" bench --python "$vpy" --backends sdpa,flash_attention_2 --json
  step plan-raises 60 "${AI[@]}" plan --measured --python "$vpy" --json
  ( cd "$out" && ai --auto --yes --python "$vpy" --output auto-config.yaml > auto.out 2> auto.err; echo $? > auto.rc )
  tail -6 "$out/auto.err"
  step ratio 60 "$aipy" "$here/bench_ratio.py" --bench "$out/bench-zeros.out" --facts "$out/probe.out"
fi

log "summary"
"$aipy" "$here/gpu_judge_check.py" "$out" "$mode"
