#!/usr/bin/env bash
# Is the demo's default teacher at its plateau? Train the same teachers (same data, seed, model and
# schedule shape: warmup 400, rate decaying linearly to 0 at the cap) with twice the cap (10000
# updates instead of 5000) and compare their test figures with the 5000-update teachers of
# docs/results/demo/. If doubling the budget buys less than ~1%, more teacher training would not
# change what the conversion is compared against. No --patience: with it (4 validations, as the
# demo), the noisy validation curve stopped the 10000-update LM teacher at update 5200, mid-schedule.
# TASKS: "lm", "mt" or "lm mt" (default both).
# Usage: teacher_double.sh DEMO_RUN_FOLDER OUT   (DEMO_RUN_FOLDER: a default-preset t2r-demo --out)
set -euo pipefail
RUN=$1; OUT=$2; TASKS=${3:-lm mt}; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
UD=$(python -c "import fairseq_t2r, os; print(os.path.dirname(fairseq_t2r.__file__))")
COMMON="--optimizer adam --adam-betas (0.9,0.98) --lr 0.0015 --lr-scheduler polynomial_decay --total-num-update 10000
 --end-learning-rate 0 --warmup-updates 400 --weight-decay 0.01 --clip-norm 1.0 --dropout 0.1 --max-update 10000
 --validate-interval-updates 100 --save-interval-updates 100 --keep-interval-updates 1 --no-epoch-checkpoints
 --log-format json --log-interval 100 --num-workers 0 --seed 1 --max-tokens 1024 --user-dir $UD"
if [[ " $TASKS " == *" lm "* ]]; then
fairseq-train "$RUN/lm/data/bin" $COMMON --task language_modeling --tokens-per-sample 128 --sample-break-mode none \
  --save-dir "$OUT/lm_teacher" --arch transformer_lm --decoder-layers 2 --decoder-embed-dim 128 --decoder-input-dim 128 \
  --decoder-output-dim 128 --decoder-ffn-embed-dim 512 --decoder-attention-heads 4 --share-decoder-input-output-embed \
  > "$OUT/lm_teacher.log" 2>&1
fairseq-eval-lm "$RUN/lm/data/bin" --user-dir "$UD" --path "$OUT/lm_teacher/checkpoint_best.pt" --gen-subset test \
  --tokens-per-sample 128 --max-tokens 8192 --num-workers 0 > "$OUT/lm_eval.log" 2>&1
tail -n 1 "$OUT/lm_eval.log"
fi
if [[ " $TASKS " == *" mt "* ]]; then
fairseq-train "$RUN/mt/data/bin" $COMMON --task translation --source-lang en --target-lang de \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --save-dir "$OUT/mt_teacher" --arch transformer \
  --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 \
  --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings \
  > "$OUT/mt_teacher.log" 2>&1
fairseq-generate "$RUN/mt/data/bin" --user-dir "$UD" --path "$OUT/mt_teacher/checkpoint_best.pt" --gen-subset test \
  --source-lang en --target-lang de --beam 4 --batch-size 64 --required-batch-size-multiple 1 --tokenizer moses \
  --bpe subword_nmt --bpe-codes "$RUN/mt/data/bpe.codes" --num-workers 0 > "$OUT/mt_generate.log" 2>&1
tail -n 1 "$OUT/mt_generate.log"
fi
