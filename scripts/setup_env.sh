#!/usr/bin/env bash
# Create ./.venv and install fairseq_t2r into it, once. Sourced by the other scripts.
# torch==2.13.0 goes in first, pinned, so that installing fairseq never picks another torch; which
# build that is (CPU or CUDA) is whatever the pip index serves: README, set-up. A torch 2.13.0
# already in the venv is kept. Nothing here compiles from source.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${T2R_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.fairseq_t2r-installed"
WANT="$(cat "$ROOT/setup.py" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing torch 2.13.0 (the build your pip index serves: see README, Set-up) and fairseq_t2r[test] into $VENV (about 2 minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
