#!/usr/bin/env bash
# GPU check: which mixed-precision flags keep off-path candidates untouched?
# Runs scripts/check_unused_candidates.py on a tiny super-net for each flag.
# Usage (on a CUDA machine with the plugin importable):
#   bash benchmarks/gpu_mixed_precision.sh OUTDIR
# Writes OUTDIR/gpu_mixed_precision.json and .md (one row per flag and mode);
# copy them to benchmarks/results/ to record a run.
set -u
OUT=${1:-/tmp/magic_gpu_check}
mkdir -p "$OUT"
: > "$OUT/rows.jsonl"
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
    error=$(grep -E "^[A-Za-z_.]*(Error|Exception):" "$OUT/log${flag}-$mode.txt" | tail -1 | cut -c1-160)
    echo "flag=$flag mode=$mode rc=$rc refused_by_task=$refused $(grep -o 'check_unused_candidates: .*' "$OUT/log${flag}-$mode.txt" | cut -c1-400)"
    python - "$OUT" "$flag" "$mode" "$rc" "$refused" "$error" <<'PY'
import json, os, sys
out, flag, mode, rc, refused, error = sys.argv[1:]
rep = os.path.join(out, f"report{flag}-{mode}.json")
r = json.load(open(rep)) if os.path.exists(rep) else {}
row = {"flag": flag, "mode": mode, "rc": int(rc), "refused_by_task": refused != "0",
       "updates": r.get("updates", 0),
       "off_path_changed": r.get("off_path_tensors_changed"),
       "off_path_checked": r.get("off_path_tensors_checked"),
       "on_path_moved": r.get("on_path_tensors_moved"), "error": error}
open(os.path.join(out, "rows.jsonl"), "a").write(json.dumps(row) + "\n")
PY
  done
done
python - "$OUT" "$0 $*" <<'PY'
import datetime, json, os, sys
import torch
out, cmd = sys.argv[1:]
rows = [json.loads(l) for l in open(os.path.join(out, "rows.jsonl"))]
meta = {"command": f"bash {cmd}", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__}
json.dump({**meta, "rows": rows}, open(os.path.join(out, "gpu_mixed_precision.json"), "w"), indent=2)
lines = ["## GPU mixed precision: are off-path candidates untouched?", "",
         f"- Command: `{meta['command']}` (with the plugin and fairseq importable)",
         f"- Date: {meta['date']}; device {meta['device']}; torch {meta['torch']}",
         "- Tiny super-net (4 layers, hidden 64), 8 updates, Adam with weight decay 0.01;"
         " `checked` = as users run it, `skip` = the task's refusal disabled to measure the flag", "",
         "| flag | mode | exit | refused by task | updates | off-path tensors changed | on-path moved | error |",
         "|---|---|---:|---|---:|---:|---|---|"]
for r in rows:
    changed = "" if r["off_path_changed"] is None else f"{r['off_path_changed']}/{r['off_path_checked']}"
    lines.append(f"| {r['flag']} | {r['mode']} | {r['rc']} | {'yes' if r['refused_by_task'] else 'no'} | "
                 f"{r['updates']} | {changed} | {r['on_path_moved'] or ''} | {r['error'].replace('|', '/')} |")
open(os.path.join(out, "gpu_mixed_precision.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
