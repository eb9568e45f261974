#!/usr/bin/env bash
# EN-DE data from the LibreOffice help (Debian packages, MPL-2.0) -> fairseq binaries.
# Usage: examples/translation/prepare-libreoffice-en-de.sh [OUT] [extra t2r-prepare-mt args]
set -euo pipefail
OUT=${1:-data-bin/libreoffice-en-de}
shift || true
if command -v t2r-prepare-mt >/dev/null; then
  exec t2r-prepare-mt --out "$OUT" "$@"
else
  exec "${PYTHON:-python}" -m fairseq_t2r.prep.mt --out "$OUT" "$@"
fi
