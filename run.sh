#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with what the job needs, then runs it.
#   ./run.sh demo     local Synapse + embedded Postgres + the bot, ready for Element
#   ./run.sh test     the whole test suite (real Postgres, real Synapse, real E2EE clients)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

ensure_venv() {
  local extra=$1 stamp="$VENV/.installed-$1"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extra]"
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo) shift; ensure_venv demo; exec "$VENV/bin/chaperone" demo "$@" ;;
  test) shift; ensure_venv test; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh demo | ./run.sh test [pytest args]" >&2; exit 2 ;;
esac
