# Sourced by demo.sh and test.sh: make ./.venv with featurewatch and everything it needs.
# Idempotent: a second run only checks. Torch comes from pip's index (on this kind of machine,
# a local copy); the pinned pair satisfies the ranges in pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  case "$(uname -m)" in
    aarch64|arm64) .venv/bin/python -m pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *) .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
  esac
fi
.venv/bin/python -m pip install -q -e ".[${FEATUREWATCH_EXTRAS:-all}]"
