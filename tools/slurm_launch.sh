#!/usr/bin/env bash
# The srun call behind tools/slurm_train.sh and tools/slurm_test.sh (MMDetection's layout):
#   tools/slurm_launch.sh PARTITION JOB_NAME TOOL [TOOL arguments...]
# One task per GPU: GPUS tasks in all, GPUS_PER_NODE per node, CPUS_PER_TASK cores each; extra
# srun options in SRUN_ARGS. mmengine's slurm launcher reads SLURM_PROCID / SLURM_NTASKS.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
TOOL=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# shellcheck disable=SC2086  # SRUN_ARGS holds several words on purpose
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$ROOT/tools/$TOOL" "${@:4}"
