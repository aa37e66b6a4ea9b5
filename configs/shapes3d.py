"""Shapes3D (480,000 64x64x3 images; floor/wall/object hue, scale, shape, orientation).

  python -m gmg_jax.main --config=configs/shapes3d.py --workdir=/tmp/shapes3d
  python -m gmg_jax.main --config=configs/shapes3d.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/shapes3d_gmg

Files: `python -m gmg_jax.data.download shapes3d --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from gmg_jax.config import dataset_config


def get_config(arg=None):
  return dataset_config("shapes3d", arg)
