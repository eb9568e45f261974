#!/usr/bin/env bash
# The test command: sets up ./.venv on first use, then runs the whole suite (CPU only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python -m pytest -q tests "$@"
