#!/usr/bin/env bash
# Download, here (network to package registries needed), the wheels that the lent GPU machine
# lacks, for experiments/device_check.sh to install there without an index.
#
#   experiments/prepare_device_wheels.sh [WHEEL_DIR]     # default: device_wheels/ in the repo root
#
# The device image (Python 3.12, x86-64; /work/.library/device/KINDS.md lists its packages)
# already has jax/jaxlib (CUDA), flax, optax, orbax-checkpoint, chex, lineax, numpy, scipy,
# numba, scikit-learn, h5py, matplotlib, pytest, absl-py, pyyaml, protobuf, packaging,
# setuptools and wheel. It lacks the distributions below, which are downloaded with --no-deps
# (pulling dependencies would drag in jax/jaxlib and numpy builds the device already has):
#   ott-jax        the GW solver (gmg_jax.gmg)
#   jaxopt         ott-jax's own dependency, absent from the device image
#   ml-collections configs (gmg_jax.config; bench_gmg.py)
#   tensorboardX   the TensorBoard writer (gmg_jax.writers)
#   POT            tests/test_gmg.py and bench_gmg.py compare against it (compiled: cp312 wheel).
#                  0.9.6.post1, not 0.9.7: 0.9.7's wheel is 32 MiB (a 175 MB bsp extension) and
#                  the carried tree may hold 64 MiB; ot.gromov's entropic GW code is the same in
#                  both (only docstrings differ), and the NumPy backend is all that is used.
#   setuptools, wheel  the build backend that pyproject.toml requires (setuptools>=68), so
#                  `pip install --no-index -e .` can build in isolation whatever setuptools
#                  the image has
# Versions are pinned to the ones this repo's tests pass with (.venv here). The default
# WHEEL_DIR, /device_wheels/, is ignored by git (.gitignore); pass it to the device tool as
# `carry: ["device_wheels"]` (experiments/results/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

wheel_dir="${1:-device_wheels}"
mkdir -p "$wheel_dir"

# Keep in sync with REQUIRED_WHEELS in experiments/device_check.sh.
requirements=(
  "ott-jax==0.6.0"
  "jaxopt==0.8.5"
  "ml-collections==1.1.0"
  "tensorboardX==2.6.5"
  "POT==0.9.6.post1"
  "setuptools==80.9.0"
  "wheel==0.45.1"
)

# pip matches each manylinux tag exactly: name the common ones so any x86-64 build is found.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 \
  -d "$wheel_dir" "${requirements[@]}"

echo "wheels in $wheel_dir:"
ls -l "$wheel_dir"/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $NF}'
du -ch "$wheel_dir"/*.whl | tail -1 | awk '{print "total " $1}'
