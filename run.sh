#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with what the job needs, then runs it.
#   ./run.sh demo     local Synapse + embedded Postgres + the bot, ready for Element
#   ./run.sh test     ruff, ruff format --check and mypy, then the whole test suite (real Postgres,
#                     real Synapse, real E2EE clients); CHAPERONE_SKIP_LINT=1 skips the first three;
#                     CHAPERONE_TEST_WORKERS=N runs N pytest workers (default 2; 0 for one process)
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

# What CI checks before any test runs; CHAPERONE_SKIP_LINT=1 skips it (e.g. re-running one test).
lint() {
  [ "${CHAPERONE_SKIP_LINT:-}" = 1 ] && return 0
  "$VENV/bin/ruff" check bot tests \
    || fail "ruff check found problems (see above; many are fixed by: $VENV/bin/ruff check --fix bot tests)"
  "$VENV/bin/ruff" format --check bot tests \
    || fail "ruff format would change the files above (run: $VENV/bin/ruff format bot tests)"
  "$VENV/bin/mypy" || fail "mypy (strict, over bot/ and tests/) found type errors (see above)"
}

fail() {
  echo "./run.sh test: $1; no tests were run." >&2
  exit 1
}

case "${1:-}" in
  demo) shift; ensure_venv demo; exec "$VENV/bin/chaperone" demo "$@" ;;
  test)
    shift; ensure_venv test; lint
    # Two workers, each with its own Synapse and Postgres; a file's tests stay on one worker.
    exec "$VENV/bin/python" -m pytest -q -n "${CHAPERONE_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  *) echo "usage: ./run.sh demo | ./run.sh test [pytest args]" >&2; exit 2 ;;
esac
