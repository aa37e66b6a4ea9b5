"""Cars3D (17,568 64x64x3 images; elevation, azimuth, car).

  python -m gmg_jax.main --config=configs/cars3d.py --workdir=/tmp/cars3d
  python -m gmg_jax.main --config=configs/cars3d.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/cars3d_gmg

Files: `python -m gmg_jax.data.download cars3d --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from gmg_jax.config import dataset_config


def get_config(arg=None):
  return dataset_config("cars3d", arg)
