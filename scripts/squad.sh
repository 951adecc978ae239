#!/usr/bin/env bash
# SQuAD fine-tuning of an exported child:
#   scripts/squad.sh VERSION CHECKPOINT_DIR SQUAD_DIR [OUT] [flags]
# VERSION: 1.1 or 2.0; SQUAD_DIR holds the official train-vVERSION.json and
# dev-vVERSION.json. Flags (any recipe value: --lr --batch-size --epochs
# --max-update --warmup-frac --weight-decay --max-length --doc-stride
# --max-query-length --n-best --max-answer-length --null-score-threshold
# --max-train-examples --max-dev-examples --spm ...) may also come from
# SQUAD_ARGS; see `python -m fairseq_magic.cli.squad --help`.
# Paths are taken relative to the current directory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m fairseq_magic.cli.squad "$@"
