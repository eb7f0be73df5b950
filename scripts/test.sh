#!/usr/bin/env bash
# README command 2: install what the tests need, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
source scripts/python.sh
"$PY" -m ruff check src tests benchmarks scripts   # lint first: one line per finding, fails the run
"$PY" -m ruff format --check src tests benchmarks scripts
"$PY" -m mypy                                       # types of src/ (settings in pyproject.toml)
exec "$PY" -m pytest -q "$@"
