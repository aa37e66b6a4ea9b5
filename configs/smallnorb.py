"""SmallNORB (48,600 images at 64x64x1; category, elevation, azimuth, lighting).

  python -m gmg_jax.main --config=configs/smallnorb.py --workdir=/tmp/smallnorb
  python -m gmg_jax.main --config=configs/smallnorb.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/smallnorb_gmg

Files: `python -m gmg_jax.data.download smallnorb --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.data.name = "smallnorb"
  config.objective.dataset_size = 48_600
  return default.apply_variants(config, arg)
