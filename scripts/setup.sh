#!/usr/bin/env bash
# Installs what quasar-vit needs on a fresh machine; safe to run again (skips what is there).
#   where: the active virtual environment, else the project's .venv (scripts/python.sh).
#   torch: the CPU build 2.13.0 when no torch is installed (a bare `pip install torch` would pull
#          a multi-GB CUDA build); GPU users install their CUDA build first and it is kept.
#   Fashion-MNIST: the Debian package dataset-fashion-mnist (the bundled default data set).
#   the package itself, editable, with the extras given as $1 (e.g. "test").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
extras=${1:-}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch 2.13.0 (CPU build)"
  "$PY" -m pip install --quiet torch==2.13.0
fi

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
  echo "[setup] installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if ! command -v g++ >/dev/null 2>&1; then
  echo "[setup] installing g++ (for the HLS C simulation)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi

spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "[setup] installing quasar-vit ${spec}"
"$PY" -m pip install --quiet -e "$spec"
