#!/usr/bin/env bash
# Train on a SLURM cluster, surviving preemption and the time limit: sbatch examples/cifar10/slurm.sh [train.py flags]
#
#   sbatch --nodes 2 --gpus-per-node 4 examples/cifar10/slurm.sh --preset coursework --epochs 50
#
# One torchrun per node (srun), rendezvous on the first node; torchrun restarts failed workers once, and every
# launch says --resume auto, so a restarted or requeued job continues from the run folder's newest checkpoint. SLURM
# sends SIGTERM 120 s before the time limit (--signal); the script passes it on, the workers finish their step, write
# a checkpoint and exit, and the script requeues the job unless the run finished (summary.json written).
#
#SBATCH --job-name=dynconv-cifar10
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --time=01:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail

run_dir=${RUN_DIR:-runs/slurm-${SLURM_JOB_ID}}
nproc=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
head_node=$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)

srun torchrun --nnodes "${SLURM_NNODES:-1}" --nproc-per-node "${nproc}" --max-restarts 1 \
  --rdzv-backend c10d --rdzv-endpoint "${head_node}:${RDZV_PORT:-29500}" --rdzv-id "${SLURM_JOB_ID}" \
  examples/cifar10/train.py --resume auto --out "${run_dir}" --checkpoint-every "${CHECKPOINT_EVERY:-10m}" "$@" &
launcher=$!
trap 'kill -TERM "${launcher}" 2>/dev/null' TERM INT
wait "${launcher}"
status=$?
# a trapped signal ends the first wait early: wait again for the workers to write their checkpoint and exit
wait "${launcher}" 2>/dev/null
if [[ ! -f "${run_dir}/summary.json" ]]; then
  if [[ -f "${run_dir}/checkpoints/last.json" ]]; then
    echo "slurm.sh: the run stopped before the end (status ${status}); requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
  fi
  exit "${status}"
fi
