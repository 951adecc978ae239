#!/usr/bin/env bash
# GPU check: which mixed-precision flags keep off-path candidates untouched?
# Runs scripts/check_unused_candidates.py on a tiny super-net for each flag.
# Usage (on a CUDA machine with the plugin importable): bash benchmarks/gpu_mixed_precision.sh OUTDIR
set -u
OUT=${1:-/tmp/magic_gpu_check}
mkdir -p "$OUT"
python - "$OUT" <<'PY'
import sys; sys.path.insert(0, "tests")
import conftest
conftest.make_text(f"{sys.argv[1]}/train.txt", 1200, 0)
conftest.make_text(f"{sys.argv[1]}/valid.txt", 100, 1)
conftest.preprocess(sys.argv[1], f"{sys.argv[1]}/data-bin")
PY
ARGS=("$OUT/data-bin" --user-dir fairseq_magic --task magic --arch magic_supernet
  --criterion magic_alignment --encoder-layers 4 --encoder-embed-dim 64
  --magic-ops mha2d64,ffn,conv3,conv5 --tokens-per-sample 64 --batch-size 16
  --optimizer adam --adam-betas '(0.9,0.999)' --weight-decay 0.01 --lr 1e-3
  --lr-scheduler polynomial_decay --warmup-updates 2 --total-num-update 100
  --max-update 8 --num-workers 0 --seed 3 --log-format simple --log-interval 4
  --no-epoch-checkpoints --disable-validation --no-save)
for flag in none --fp16 --bf16 --memory-efficient-fp16 --memory-efficient-bf16 --amp; do
  f=(); [ "$flag" != none ] && f=("$flag")
  for mode in checked skip; do
    skip=(); [ $mode = skip ] && skip=(--skip-setup-check)
    [ $mode = skip ] && [[ "$flag" != --fp16 && "$flag" != --bf16 ]] && continue
    python scripts/check_unused_candidates.py --report "$OUT/report${flag}-$mode.json" "${skip[@]}" \
      -- "${ARGS[@]}" "${f[@]}" > "$OUT/log${flag}-$mode.txt" 2>&1
    rc=$?
    refused=$(grep -c "MagicConfigError" "$OUT/log${flag}-$mode.txt")
    echo "flag=$flag mode=$mode rc=$rc refused_by_task=$refused $(grep -o 'check_unused_candidates: .*' "$OUT/log${flag}-$mode.txt" | cut -c1-400)"
  done
done
