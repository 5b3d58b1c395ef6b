#!/usr/bin/env bash
# The main job: train the example CNN on the embedded digits with every featurewatch callback.
# Extra arguments go to examples/train_digits.py (e.g. --fast, --logger wandb, --data PATH).
source "$(dirname "$0")/_env.sh"
exec .venv/bin/python examples/train_digits.py "$@"
