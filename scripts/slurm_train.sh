#!/usr/bin/env bash
# Multi-node `vitkit train` under SLURM: one torchrun per node (srun, one task per node), all meeting at a c10d
# rendezvous on the allocation's first node; torchrun starts one process per GPU and restarts them all from the
# last checkpoint when one fails (--max-restarts). Arguments go to `vitkit train`:
#
#   sbatch --nodes 4 scripts/slurm_train.sh --config recipe.yaml --strategy fsdp --output-dir /shared/runs/swin_l
#
# The output directory must be on a file system every node reads (checkpoints are written there by every process
# and read back by all of them on resume). Environment: GPUS_PER_NODE (default: the GPUs nvidia-smi lists, else 1),
# MASTER_PORT (default 29500), MAX_RESTARTS (default 3), VITKIT_PYTHON (default python).
#SBATCH --job-name=vitkit-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
set -euo pipefail

if [[ -z "${SLURM_JOB_NODELIST:-}" ]]; then
    echo "slurm_train.sh: not inside a SLURM allocation (submit it with sbatch, or run it under salloc)" >&2
    exit 2
fi
gpus=${GPUS_PER_NODE:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
gpus=${gpus:-1}
[[ "$gpus" -ge 1 ]] || gpus=1
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
    "${VITKIT_PYTHON:-python}" -m torch.distributed.run \
    --nnodes "${SLURM_JOB_NUM_NODES:-1}" \
    --nproc_per_node "$gpus" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$head_node:${MASTER_PORT:-29500}" \
    --rdzv_id "${SLURM_JOB_ID:-vitkit}" \
    --max-restarts "${MAX_RESTARTS:-3}" \
    -m vitkit train "$@"
