#!/usr/bin/env bash
# The two commands a newcomer needs (see README.md), on a fresh Debian machine as root
# or on a developer machine:
#   scripts/dev.sh run    sim evidence + every real vector, verified; verdict table
#   scripts/dev.sh test   lint, strict type-check and the whole test-suite
# Both first run scripts/bootstrap.sh (apt packages where missing, .venv, pip install).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SEALROOM_VENV:-.venv}
BIN="$VENV/bin"

step="${1:-}"
case "$step" in
  run)
    scripts/bootstrap.sh
    exec "$BIN/sealroom" demo
    ;;
  test)
    scripts/bootstrap.sh
    echo "== ruff"; "$BIN/ruff" check src tests bench
    "$BIN/ruff" format --check src tests bench
    echo "== mypy (strict)"; "$BIN/mypy"
    echo "== pytest"; exec "$BIN/pytest" -q -p no:cacheprovider "${@:2}"
    ;;
  bench)
    scripts/bootstrap.sh
    exec "$BIN/python" bench/attest_bench.py
    ;;
  *)
    echo "usage: scripts/dev.sh run|test|bench" >&2
    exit 1
    ;;
esac
