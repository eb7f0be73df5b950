# Sourced by setup.sh, test.sh and demo.sh: sets PY, the interpreter quasar-vit is installed into.
#   an active virtual environment (or conda env): its python;
#   otherwise the project's .venv, created on first use with access to the system's packages
#   (so an installed torch is reused), because Debian 12+ and other PEP 668 systems refuse
#   `pip install` into the system python.  PYTHON=... picks the interpreter that creates it.
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY="${VIRTUAL_ENV:-$CONDA_PREFIX}/bin/python"
else
  if [ ! -x .venv/bin/python ]; then
    base=${PYTHON:-python3}
    if ! command -v "$base" >/dev/null 2>&1; then
      echo "error: $base not found (set PYTHON=/path/to/python3)" >&2
      exit 2
    fi
    echo "[setup] no virtual environment is active: creating .venv with $base (activate it later: source .venv/bin/activate)"
    if ! "$base" -m venv --system-site-packages .venv >/tmp/qvit-venv.log 2>&1; then
      rm -rf .venv
      if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: '$base -m venv' failed (see /tmp/qvit-venv.log); install your system's venv package" >&2
        exit 2
      fi
      echo "[setup] '$base -m venv' failed; installing Debian's python3-venv"
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
      "$base" -m venv --system-site-packages .venv
    fi
  fi
  PY=$PWD/.venv/bin/python
fi
export PY
