#!/usr/bin/env bash
# How many EN-DE pairs can the demo's default teacher (2 + 2 layers, 128 wide) reach its plateau on within
# the demo's 30-minute budget? Prepares PAIRS pairs exactly as the demo does (same prep command, seed and
# merges), trains the default teacher on them for UPDATES (complete schedule, no --patience; one validation
# per 250 updates), then prints the plateau criterion and the test sacreBLEU (beam 4) as the demo measures them.
# Usage: mt_teacher_size.sh OUT PAIRS UPDATES     (the measured run: OUT 7000 6000; see mt_teacher_size.md)
set -euo pipefail
OUT=$1; PAIRS=$2; UPDATES=$3; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
UD=$(python -c "import fairseq_t2r, os; print(os.path.dirname(fairseq_t2r.__file__))")
python -m fairseq_t2r.prep.mt --out "$OUT/data" --bpe-merges 4000 --seed 1 --max-pairs "$PAIRS" > "$OUT/prep.log" 2>&1
fairseq-train "$OUT/data/bin" --user-dir "$UD" --task translation --source-lang en --target-lang de \
  --max-tokens 1024 --optimizer adam --adam-betas '(0.9,0.98)' --lr 1.5e-3 --lr-scheduler polynomial_decay \
  --total-num-update "$UPDATES" --end-learning-rate 0 --warmup-updates 400 --weight-decay 0.01 --clip-norm 1.0 \
  --dropout 0.1 --max-update "$UPDATES" --validate-interval-updates 250 --save-interval-updates 250 \
  --keep-interval-updates 1 --no-epoch-checkpoints --log-format json --log-interval 250 --num-workers 0 --seed 1 \
  --save-dir "$OUT/teacher" --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --arch transformer \
  --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 \
  --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings \
  > "$OUT/teacher.log" 2>&1
fairseq-generate "$OUT/data/bin" --user-dir "$UD" --path "$OUT/teacher/checkpoint_best.pt" --gen-subset test \
  --source-lang en --target-lang de --beam 4 --batch-size 64 --required-batch-size-multiple 1 --tokenizer moses \
  --bpe subword_nmt --bpe-codes "$OUT/data/bpe.codes" --num-workers 0 > "$OUT/generate.log" 2>&1
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from fairseq_t2r.demo import measure, teachers
out = Path(sys.argv[1])
print(teachers.converged(measure.valid_curve(out / "teacher.log")))
print(measure.translation_scores(out / "generate.log", out / "data" / "test.raw.de"))
PY
