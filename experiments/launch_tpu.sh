#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it, install gmg_jax on every worker, run the same
# `python -m gmg_jax.main` on all workers (jax.distributed auto-detects the slice), copy the
# results back, delete the slice.
#
#   experiments/launch_tpu.sh NAME ZONE ACCELERATOR CONFIG [extra main.py flags...]
#   BUCKET=my-bucket experiments/launch_tpu.sh gmg-v4 us-central2-b v4-32 \
#       configs/shapes3d.py:gmg_cos_decoder --config.train.batch_size=1024
#
# Environment: PROJECT (gcloud project, default: the configured one), VERSION (TPU software,
# default tpu-ubuntu2204-base), SPOT=1 for a spot slice, KEEP=1 to keep the slice afterwards,
# RESULTS (local directory for the workdir copied back, default ./results/NAME), BUCKET (required:
# a GCS bucket). Only process 0 writes logs and pictures, but Orbax writes and reads checkpoints
# from every worker, so the workdir must be storage all workers share: the bucket, mounted with
# gcsfuse at ~/gcs on each worker (the trainer writes plain files, not gs:// URLs).
set -euo pipefail

NAME=${1:?slice name}; ZONE=${2:?zone}; ACCELERATOR=${3:?accelerator type, e.g. v4-32}
CONFIG=${4:?config, e.g. configs/shapes3d.py:gmg_cos_decoder}; shift 4
VERSION=${VERSION:-tpu-ubuntu2204-base}
BUCKET=${BUCKET:?set BUCKET to a GCS bucket the slice can write}
WORKDIR=gcs/gmg_jax/${NAME}  # Relative to the workers' home: the mounted bucket.
RESULTS=${RESULTS:-results/${NAME}}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}
TPU=(gcloud compute tpus tpu-vm ${PROJECT_FLAG} --zone="${ZONE}")

"${TPU[@]}" create "${NAME}" --accelerator-type="${ACCELERATOR}" --version="${VERSION}" \
  ${SPOT:+--spot}
if [[ -z "${KEEP:-}" ]]; then
  trap '"${TPU[@]}" delete "${NAME}" --quiet' EXIT
fi

# Ship this checkout (not a registry release) to every worker and install it with JAX for TPU.
tar -C "${REPO_DIR}" --exclude=.git --exclude='*.pyc' -czf /tmp/gmg_jax_src.tgz .
"${TPU[@]}" scp /tmp/gmg_jax_src.tgz "${NAME}":~/ --worker=all
"${TPU[@]}" ssh "${NAME}" --worker=all --command="
  set -e; mkdir -p ~/gmg_jax && tar -xzf ~/gmg_jax_src.tgz -C ~/gmg_jax
  python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip
  ~/venv/bin/pip install -q -e ~/gmg_jax 'jax[tpu]'
  echo 'deb https://packages.cloud.google.com/apt gcsfuse-'\$(lsb_release -cs)' main' |
    sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
  mkdir -p ~/gcs && gcsfuse --implicit-dirs ${BUCKET} ~/gcs"

# The same command on every worker, at the same time; process 0 writes logs and pictures.
FLAGS=$(printf ' %q' "$@")
"${TPU[@]}" ssh "${NAME}" --worker=all --command="
  cd ~/gmg_jax && ~/venv/bin/python -m gmg_jax.main --config=${CONFIG} --workdir=\$HOME/${WORKDIR}${FLAGS}"

mkdir -p "${RESULTS}"
gcloud storage cp -r "gs://${BUCKET}/gmg_jax/${NAME}/*" "${RESULTS}/"
echo "Results in ${RESULTS}"
