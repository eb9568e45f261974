#!/bin/bash
# resumes the quality benchmark LM teacher (lm_teacher.sh, stopped at 4000) and decays its rate linearly from
# where inverse_sqrt left it (6.32e-4 at update 4000) to 0 at update 8000: a complete schedule
export OMP_NUM_THREADS=2
exec /work/main/.venv/bin/python -m fairseq_cli.train /work/bench/lm/data/bin --task language_modeling \
  --tokens-per-sample 512 --sample-break-mode none --arch transformer_lm --decoder-layers 4 \
  --decoder-embed-dim 128 --decoder-input-dim 128 --decoder-output-dim 128 --decoder-ffn-embed-dim 512 \
  --decoder-attention-heads 4 --share-decoder-input-output-embed --max-tokens 2048 --optimizer adam \
  --adam-betas '(0.9,0.98)' --lr 1.265e-3 --lr-scheduler polynomial_decay --total-num-update 8000 --end-learning-rate 0 --warmup-updates 0 --reset-lr-scheduler --weight-decay 0.01 \
  --clip-norm 1.0 --dropout 0.1 --max-update 8000 --validate-interval-updates 250 --save-interval-updates 250 \
  --keep-interval-updates 1 --no-epoch-checkpoints --patience 4 --log-format json --log-interval 250 \
  --num-workers 0 --seed 1 --cpu --save-dir /work/bench/lm/teacher
