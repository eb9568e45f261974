#!/usr/bin/env bash
# The test command: sets up ./.venv on first use, then runs the lint and the whole suite (CPU only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# the lint (settings in pyproject.toml) first, then the suite; the suite runs either way, and the
# command fails if either does
lint=0
ruff check --quiet . || { lint=$?; echo "ruff: lint failed (see above; 'ruff check --fix .' fixes most)" >&2; }
rc=0
python -m pytest -q tests "$@" || rc=$?
[ "$rc" -ne 0 ] && exit "$rc"
exit "$lint"
