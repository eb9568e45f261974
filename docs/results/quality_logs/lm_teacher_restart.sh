#!/bin/bash
# the quality benchmark's LM teacher (lm/teacher: 8000 updates, rate at 0 at its end, bare swap 30.5%) trained on
# for a second complete schedule of 8000 updates (warm restart: warmup 400 to 7.5e-4, linear decay to 0): does a
# teacher trained twice as long use its attention enough that the bare swap costs >= 50%?
export OMP_NUM_THREADS=1
exec /work/main/.venv/bin/python -m fairseq_cli.train /work/bench/lm/data/bin --task language_modeling \
  --tokens-per-sample 512 --sample-break-mode none --arch transformer_lm --decoder-layers 4 \
  --decoder-embed-dim 128 --decoder-input-dim 128 --decoder-output-dim 128 --decoder-ffn-embed-dim 512 \
  --decoder-attention-heads 4 --share-decoder-input-output-embed --max-tokens 2048 --optimizer adam \
  --adam-betas '(0.9,0.98)' --lr 7.5e-4 --lr-scheduler polynomial_decay --total-num-update 8000 --end-learning-rate 0 \
  --warmup-updates 400 --finetune-from-model /work/bench/lm/teacher/checkpoint_last.pt --weight-decay 0.01 \
  --clip-norm 1.0 --dropout 0.1 --max-update 8000 --validate-interval-updates 250 --save-interval-updates 250 \
  --keep-interval-updates 1 --no-epoch-checkpoints --log-format json --log-interval 250 \
  --num-workers 0 --seed 2 --cpu --save-dir /work/bench/lm16k
