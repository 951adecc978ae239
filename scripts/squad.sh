#!/usr/bin/env bash
# SQuAD fine-tuning of an exported child:
#   scripts/squad.sh VERSION CHECKPOINT_DIR SQUAD_DIR [OUT] [flags]
# VERSION: 1.1 or 2.0; SQUAD_DIR holds the official train-vVERSION.json and
# dev-vVERSION.json. Flags (any recipe value: --lr --batch-size --epochs
# --max-update --warmup-frac --weight-decay --max-length --doc-stride
# --max-query-length --n-best --max-answer-length --null-score-threshold
# --max-train-examples --max-dev-examples --spm ...) may also come from
# SQUAD_ARGS; see `python -m fairseq_magic.cli.squad --help`.
# Fine-tuning distillation (paper section 5.4): --kd-teacher TEACHER_OUT (the
# teacher's own magic-squad OUT folder; its vVERSION/checkpoints/
# checkpoint_last.pt is the teacher, or pass a checkpoint file) [--kd-alpha 0.5]
# [--kd-temperature 1.0] trains with --criterion squad_span_kd into
# OUT/vVERSION-kd, beside the plain run; e.g.
#   scripts/squad.sh 2.0 big-export squad big-out            # the teacher
#   scripts/squad.sh 2.0 small-export squad small-out --kd-teacher big-out
# Paths are taken relative to the current directory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m fairseq_magic.cli.squad "$@"
