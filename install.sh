#!/usr/bin/env bash
# attn-install bootstrap.
#
#   bash install.sh              install attn-install into .venv, then `attn-install --auto` on the
#                                Python where your torch is (found: an active venv / conda env, or
#                                python3 / python on PATH, that has torch; --python PATH chooses)
#   bash install.sh --python P   target the environment of interpreter P
#   bash install.sh --yes        do not ask before installing
#   bash install.sh -- ARGS      pass ARGS to `attn-install --auto` (e.g. -- --allow-source)
#   bash install.sh --system     install attn-install into $PYTHON itself (Colab, a container
#                                that holds torch) and run `--auto` there
#   bash install.sh --test       install the test extras; run lint, type checks and the test suite
#   bash install.sh --dry-run    print what would be done, change nothing
#   curl -fsSL <raw url of install.sh> | bash -s -- --system
#
# No Python on the machine has torch and a GPU is present: the torch build that fits the GPU and
# driver (`attn-install torch`) is installed into .venv, which is new and attn-install's own, so
# nothing you had moves; then the backend. No GPU and no torch: it says so, writes the config for
# SDPA, and exits 0. An installed torch is never replaced.
#
# Run again, it changes nothing: .venv is kept, and pip runs only when attn-install is missing or
# pyproject.toml changed (venv) / the installed version differs from the checkout's (--system).
# Piped (no checkout around the script) only --system works; it installs ATTN_INSTALL_SPEC.
#
# Environment: PYTHON (the interpreter that makes .venv, or that --system installs into; default
# python3), ATTN_INSTALL_SPEC (what pip installs when the script runs outside a checkout, default
# "attn-install"; a git+https:// URL works too).
set -euo pipefail

usage() {
  echo "usage: install.sh [--python PATH] [--yes] [--dry-run] [--system|--test] [-- AUTO-ARGS...]"
}

# Everything runs from main, called on the last line: piped into bash, the whole script has been
# read before anything runs, so no command can swallow the rest of it from stdin.
main() {
  local mode=auto dry_run=0 target="" yes=0
  AUTO_ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --test) mode="test" ;;
      --system) mode="system" ;;
      --dry-run) dry_run=1 ;;
      --yes|-y) yes=1 ;;
      --python)
        if [ $# -lt 2 ]; then echo "install.sh: --python needs a path" >&2; usage >&2; return 2; fi
        target=$2; shift ;;
      --python=*) target=${1#--python=} ;;
      --) shift; AUTO_ARGS=("$@"); break ;;
      -h|--help)
        if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
          sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        else
          usage
        fi
        return 0 ;;
      *) echo "install.sh: unknown option '$1'" >&2; usage >&2; return 2 ;;
    esac
    shift
  done
  DRY_RUN=$dry_run
  TARGET=$target
  YES=$yes

  # 1. an interpreter that is new enough, before anything else
  local python=${PYTHON:-python3}
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "install.sh: '$python' not found: install Python >= 3.9 or set PYTHON=/path/to/python" >&2
    return 1
  fi
  if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)'; then
    echo "install.sh: $("$python" -V 2>&1) ($(command -v "$python")) is too old: attn-install needs" \
      "Python >= 3.9; set PYTHON=/path/to/python3.9+" >&2
    return 1
  fi

  # 2. where attn-install comes from: this checkout, or (piped, or a lone copy) ATTN_INSTALL_SPEC
  local here=""
  if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    [ -f "$here/pyproject.toml" ] || here=""
  fi

  case "$mode" in
    system) install_system "$python" "$here" ;;
    auto|test) install_venv "$python" "$here" "$mode" ;;
  esac
}

run() {
  echo "+ $*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

need_pip() {
  if ! "$1" -m pip --version >/dev/null 2>&1; then
    echo "install.sh: pip is missing for $1 ($("$1" -V 2>&1)): install it" \
      "(apt-get install python3-pip, or $1 -m ensurepip --upgrade)" >&2
    return 1
  fi
}

# The version pyproject.toml of a checkout declares ("" when it cannot be read).
checkout_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$1/pyproject.toml" | head -n 1
}

# The installed attn-install's version for an interpreter ("" when it is not installed). Asked in
# isolated mode from / so a checkout in the working directory is not what answers.
installed_version() {
  (cd / && "$1" -I -m attn_installer --version 2>/dev/null) | sed -n 's/.*version \(.*\)$/\1/p' || true
}

# `attn-install --auto` with the options given to this script.
auto() {
  local py=$1; shift
  local args=(--auto "$@")
  [ "$YES" = 1 ] && args+=(--yes)
  run "$py" -m attn_installer "${args[@]}" "${AUTO_ARGS[@]+"${AUTO_ARGS[@]}"}"
}

install_system() {
  local python=$1 here=$2 spec have
  # Colab / containers: the user's torch lives in this Python; never create a venv around it.
  need_pip "$python"
  have=$(installed_version "$python")
  if [ -n "$here" ]; then
    spec=$here
    if [ -n "$have" ] && [ "$have" = "$(checkout_version "$here")" ]; then
      echo "attn-install $have already installed for $python (same version as $here)"
      spec=""
    fi
  else
    spec=${ATTN_INSTALL_SPEC:-attn-install}
    if [ -n "$have" ]; then
      echo "attn-install $have already installed for $python"
      spec=""
    fi
  fi
  if [ -n "$spec" ]; then
    run "$python" -m pip install --quiet --disable-pip-version-check "$spec"
  fi
  if [ -n "$TARGET" ]; then auto "$python" --python "$TARGET"; else auto "$python"; fi
}

# What the probe found, as "<has torch> <gpus> <interpreter>" (torch: yes / no).
probe_summary() {
  local vpy=$1
  shift
  "$vpy" -m attn_installer probe --json "$@" | "$vpy" -c '
import json, sys
d = json.load(sys.stdin)
print("yes" if d["torch"] else "no", len(d["gpus"]), d["python"]["executable"])'
}

install_venv() {
  local python=$1 here=$2 mode=$3 venv vpy target stamp want
  if [ -z "$here" ]; then
    echo "install.sh: $mode mode needs a checkout (pyproject.toml beside install.sh);" \
      "piped or on its own, use --system" >&2
    return 2
  fi
  venv="$here/.venv"
  vpy="$venv/bin/python"
  if [ -x "$vpy" ]; then
    echo "using $venv"
  else
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "install.sh: $("$python" -V 2>&1) has no venv/ensurepip (the pip of a venv):" \
        "apt-get install python3-venv, or use --system" >&2
      return 1
    fi
    run "$python" -m venv "$venv"
  fi
  target=$here
  [ "$mode" = test ] && target="${here}[test]"
  # reinstall only when the extras or pyproject.toml changed since the last install
  stamp="$venv/.attn-install-stamp"
  want="$target $("$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$here/pyproject.toml")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -n "$(installed_version "$vpy")" ]; then
    echo "attn-install $(installed_version "$vpy") already installed in $venv (pyproject.toml unchanged)"
  else
    run "$vpy" -m pip install --quiet --disable-pip-version-check -e "$target"
    if [ "$DRY_RUN" = 0 ]; then echo "$want" > "$stamp"; fi
  fi
  if [ "$mode" = test ]; then
    cd "$here"
    run "$vpy" -m ruff check attn_installer tests benchmarks
    run "$vpy" -m mypy
    run "$venv/bin/shellcheck" install.sh .ci/run
    run "$vpy" -m pytest -q -n "${ATTN_INSTALL_TEST_WORKERS:-auto}" tests
    return
  fi
  if [ "$DRY_RUN" = 1 ] && [ ! -x "$vpy" ]; then
    echo "+ attn-install --auto (on the Python with torch; torch into $venv when none has it and a GPU is present)"
    return
  fi
  # 3. the main job, on the Python where the user's torch is
  if [ -n "$TARGET" ]; then
    auto "$vpy" --python "$TARGET"
    return
  fi
  local torch gpus where
  read -r torch gpus where < <(probe_summary "$vpy")
  if [ "$torch" = yes ]; then
    echo "torch found for $where: installing the backend there"
    auto "$vpy" --python "$where"
  elif [ "$gpus" != 0 ]; then
    echo "no Python here has torch and a GPU is present: installing the torch build that fits into $venv" \
      "(attn-install's own environment; nothing you had moves)"
    run "$vpy" -m attn_installer torch --yes --python "$vpy"
    auto "$vpy" --python "$vpy"
  else
    auto "$vpy"
  fi
}

main "$@"
