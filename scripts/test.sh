#!/usr/bin/env bash
# The test suite, on a fresh machine too: venv + dependencies + headless Chromium (for the HTML
# report test), then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/_env.sh"
if ! command -v chromium >/dev/null 2>&1 && [ -z "${FEATUREWATCH_CHROMIUM:-}" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
