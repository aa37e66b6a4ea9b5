#!/usr/bin/env bash
# Multi-GPU data-parallel training, one process per host (each sees all of its local GPUs).
#
# One host, all its GPUs (one process; no jax.distributed needed):
#   experiments/launch_multigpu.sh CONFIG WORKDIR [extra main.py flags...]
# Several hosts: run this on every host with the same arguments and
#   COORDINATOR=host0:12345 NUM_HOSTS=2 HOST_ID=<0..NUM_HOSTS-1>
# (under SLURM, `srun --ntasks-per-node=1 experiments/launch_multigpu.sh ...` is enough: jax
# reads the SLURM variables). WORKDIR must be shared storage (NFS, gs://...) on several hosts:
# Orbax writes checkpoints from every process; only process 0 writes logs and pictures.
#
# LOCAL_PROCESSES=N starts N processes on this host instead (one GPU each, CUDA_VISIBLE_DEVICES
# set per process); with JAX_PLATFORMS=cpu it is the two-process CPU run the tests use:
#   JAX_PLATFORMS=cpu LOCAL_PROCESSES=2 experiments/launch_multigpu.sh \
#       configs/default.py:runlocal /tmp/gmg_2proc
set -euo pipefail

CONFIG=${1:?config, e.g. configs/shapes3d.py:gmg_cos_decoder}
WORKDIR=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if [[ -n "${LOCAL_PROCESSES:-}" ]]; then
  PORT=${PORT:-$(${PYTHON} -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}
  pids=()
  for ((i = 0; i < LOCAL_PROCESSES; i++)); do
    gpu_env=()
    [[ "${JAX_PLATFORMS:-}" == cpu ]] || gpu_env=(CUDA_VISIBLE_DEVICES="${i}")
    env "${gpu_env[@]}" JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" \
      JAX_NUM_PROCESSES="${LOCAL_PROCESSES}" JAX_PROCESS_ID="${i}" \
      ${PYTHON} -m gmg_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" "$@" &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "${pid}" || status=$?; done
  exit "${status}"
fi

if [[ -n "${COORDINATOR:-}" ]]; then
  export JAX_COORDINATOR_ADDRESS="${COORDINATOR}" JAX_NUM_PROCESSES="${NUM_HOSTS:?}" \
    JAX_PROCESS_ID="${HOST_ID:?}"
fi
exec ${PYTHON} -m gmg_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" "$@"
