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
# own_deps [PKG...]: attn-install's own dependencies (and PKG...) into this python3 from the carried
# .whl/ (no network on the GPU machine)
# shellcheck disable=SC2120 # the packages are optional
own_deps() {
  "$py" -m pip install -q --no-index --find-links .whl click packaging requests nvidia-ml-py ruamel.yaml "$@" 2>&1 | tail -2
}
# simple_index DIR WHEEL...: a PEP 503 "simple" index of those wheels under DIR/simple (files in DIR/files)
simple_index() {
  local dir=$1 w n s
  shift
  mkdir -p "$dir/simple" "$dir/files"
  for w in "$@"; do
    cp "$w" "$dir/files/"
    n=$(basename "$w" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    mkdir -p "$dir/simple/$n"
    s=$(sha256sum "$w" | cut -d' ' -f1)
    printf '<a href="/files/%s#sha256=%s">%s</a><br>\n' "$(basename "$w")" "$s" "$(basename "$w")" >> "$dir/simple/$n/index.html"
  done
}
# serve_index DIR PORT LOG: serve DIR on 127.0.0.1:PORT in the background (its pid in $server)
serve_index() {
  (cd "$1" && exec "$py" -m http.server "$2" --bind 127.0.0.1) > "$3" 2>&1 &
  server=$!
  sleep 1
}
# torch_index_mimic DIR WHEEL: DIR laid out like download.pytorch.org/whl for an FA3 wheel
# (/whl/cu130/flash-attn-3/ with a #sha256= link) beside a loopback "PyPI" of the .whl/ wheels (/simple/)
torch_index_mimic() {
  local dir=$1 wheel=$2 name sum
  rm -rf "$dir" && mkdir -p "$dir/whl/cu130/flash-attn-3" "$dir/simple"
  cp "$wheel" "$dir/whl/cu130/"
  name=$(basename "$wheel")
  sum=$(sha256sum "$wheel" | cut -d' ' -f1)
  printf '<!DOCTYPE html><html><body><a href="/whl/cu130/%s#sha256=%s">%s</a></body></html>\n' \
    "$name" "$sum" "$name" > "$dir/whl/cu130/flash-attn-3/index.html"
  simple_index "$dir" .whl/*.whl
}
# venv_over_torch DIR: a new venv that sees this machine's torch environment through a .pth (its
# python3 is itself a venv, so --system-site-packages would not): torch is there, pip installs into DIR
venv_over_torch() {
  local torch_site
  rm -rf "$1" && "$py" -m venv "$1"
  torch_site=$("$py" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  echo "$torch_site" > "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch-env.pth"
}
