# shellcheck shell=bash disable=SC2034
# Sourced by the benchmarks/gpu_*.sh device scripts (from the repo root, OUTDIR as $1): the output
# folder, the cache and import path every run uses, and the helpers they share.
out=${1:?outdir}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 ATTN_INSTALL_CACHE=/tmp/attn-cache
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=$(command -v python3)
ai() { "$py" -m attn_installer "$@"; }
log() { echo; echo "===== $*"; }
# the SageAttention wheel and build key that gpu_sage.sh left (carried in .whl/), as a wheelhouse
house=/tmp/wheelhouse
sage_wheelhouse() { mkdir -p "$house" && cp .whl/sageattention-* "$house"/; }
# machine-wide memory in use, once a second, into $out/mem-used-mb.txt (stop with kill "$sampler")
start_mem_sampler() {
  ( while sleep 1; do free -m | awk '/Mem:/{print $3}'; done ) > "$out/mem-used-mb.txt" &
  sampler=$!
}
