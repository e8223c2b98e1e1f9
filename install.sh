#!/usr/bin/env bash
# attn-install bootstrap.
#
#   bash install.sh            create .venv, install attn-install, run `attn-install --auto`
#   bash install.sh --test     install the test extras and run lint, type checks and the whole suite
#   bash install.sh --system   install into the current Python (Colab, containers that hold torch)
#   bash install.sh --dry-run  print what would be done, change nothing
#   curl -fsSL <raw url of install.sh> | bash -s -- --system
#
# Environment: PYTHON (interpreter to use, default python3), ATTN_INSTALL_SPEC (what pip installs
# when the script runs outside a checkout, default "attn-install").
set -euo pipefail

MODE=auto
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --test) MODE="test" ;;
    --system) MODE=system ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help)
      sed -n '2,12p' "${BASH_SOURCE[0]:-install.sh}" 2>/dev/null | sed 's/^# \{0,1\}//' ||
        echo "usage: install.sh [--test|--system] [--dry-run]"
      exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
HERE=""
if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fi
if [ -n "$HERE" ] && [ -f "$HERE/pyproject.toml" ]; then
  SPEC="$HERE"
else
  SPEC=${ATTN_INSTALL_SPEC:-attn-install}
fi

run() {
  echo "+ $*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "install.sh: '$PYTHON' not found: install Python >= 3.9 or set PYTHON=/path/to/python" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)'; then
  echo "install.sh: $("$PYTHON" -V 2>&1) is too old: attn-install needs Python >= 3.9" >&2
  exit 1
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "install.sh: pip is missing for $PYTHON: install it (e.g. apt-get install python3-pip python3-venv)" >&2
  exit 1
fi

case "$MODE" in
  system)
    # Colab / containers: the user's torch lives in this Python; never create a venv around it.
    if "$PYTHON" -m attn_installer --version >/dev/null 2>&1 && [ "$SPEC" != "$HERE" ]; then
      echo "attn-install already installed for $PYTHON"
    else
      run "$PYTHON" -m pip install --quiet --disable-pip-version-check "$SPEC"
    fi
    run "$PYTHON" -m attn_installer --auto --yes
    ;;
  auto|test)
    if [ -z "$HERE" ]; then
      echo "install.sh: $MODE mode needs a checkout; outside one use --system" >&2
      exit 2
    fi
    VENV="$HERE/.venv"
    if [ ! -x "$VENV/bin/python" ]; then
      if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "install.sh: the venv module is missing (apt-get install python3-venv)" >&2
        exit 1
      fi
      run "$PYTHON" -m venv "$VENV"
    fi
    VPY="$VENV/bin/python"
    if [ "$MODE" = test ]; then
      run "$VPY" -m pip install --quiet --disable-pip-version-check -e "${HERE}[test]"
      cd "$HERE"
      run "$VPY" -m ruff check attn_installer tests benchmarks
      run "$VPY" -m mypy
      run "$VENV/bin/shellcheck" install.sh .ci/run
      run "$VPY" -m pytest -q tests
    else
      run "$VPY" -m pip install --quiet --disable-pip-version-check -e "$HERE"
      run "$VPY" -m attn_installer --auto
    fi
    ;;
esac
