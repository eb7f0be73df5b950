#!/usr/bin/env bash
# README command 1: install, then run the main job end to end on the bundled Fashion-MNIST data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh export,hls,rtl
source scripts/python.sh
exec "$PY" -m quasar_vit demo "$@"
