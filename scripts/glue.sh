#!/usr/bin/env bash
# GLUE fine-tuning of an exported child:
#   scripts/glue.sh TASK CHECKPOINT_DIR GLUE_DIR [OUT] [flags]
# TASK: MNLI QQP QNLI SST-2 CoLA STS-B MRPC RTE or all. Flags (any recipe value:
# --lr --batch-size --epochs --max-update --warmup-frac --weight-decay --dropout
# --max-train-examples --spm --from-scratch ...) may also come from GLUE_ARGS;
# see `python -m fairseq_magic.cli.glue --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
exec "$PY" -m fairseq_magic.cli.glue "$@"
