"""SmallNORB (48,600 images at 64x64x1; category, elevation, azimuth, lighting).

  python -m gmg_jax.main --config=configs/smallnorb.py --workdir=/tmp/smallnorb
  python -m gmg_jax.main --config=configs/smallnorb.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/smallnorb_gmg

Files: `python -m gmg_jax.data.download smallnorb --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from gmg_jax.config import dataset_config


def get_config(arg=None):
  return dataset_config("smallnorb", arg)
