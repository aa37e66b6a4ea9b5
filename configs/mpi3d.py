"""MPI3D (1,036,800 64x64x3 images; 7 factors). The toy set by default; pick another with
--config.data.name=mpi3d_realistic or mpi3d_real. 12.7 GB: kept on the host as a memory map
unless the accelerator has room (data.on_device).

  python -m gmg_jax.main --config=configs/mpi3d.py --workdir=/tmp/mpi3d
  python -m gmg_jax.main --config=configs/mpi3d.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/mpi3d_gmg

Files: `python -m gmg_jax.data.download mpi3d_toy --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from gmg_jax.config import dataset_config


def get_config(arg=None):
  return dataset_config("mpi3d_toy", arg)
