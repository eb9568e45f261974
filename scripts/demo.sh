#!/usr/bin/env bash
# The main job: real data -> softmax teachers (LM and EN-DE translation) -> T2R swap -> finetune,
# beside the softmax control, ELU, the gate and the softmax window (--variants: any other arm) -> evaluation -> report folder.
# Sets up ./.venv on first use. Options go to t2r-demo (--quick, --full, --out DIR, --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
exec t2r-demo "$@"
