# Sourced by setup.sh, test.sh and demo.sh: sets PY, the interpreter quasar-vit is installed into.
#   an active virtual environment (or conda env): its python;
#   otherwise the project's .venv, created on first use with access to the system's packages
#   (so an installed torch is reused), because Debian 12+ and other PEP 668 systems refuse
#   `pip install` into the system python.  PYTHON=... picks the interpreter that creates it.
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
else
  if [ ! -x .venv/bin/python ]; then
    base=${PYTHON:-python3}
    echo "[setup] no virtual environment is active: creating .venv with $base (activate it later: source .venv/bin/activate)"
    if ! "$base" -m venv --system-site-packages .venv >/dev/null 2>&1; then
      rm -rf .venv
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
