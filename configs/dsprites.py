"""dSprites (737,280 64x64x1 binary images; shape, scale, orientation, posX, posY).

  python -m gmg_jax.main --config=configs/dsprites.py --workdir=/tmp/dsprites
  python -m gmg_jax.main --config=configs/dsprites.py:beta_tcvae,gmg_cos_decoder \\
      --workdir=/tmp/dsprites_gmg

Files: `python -m gmg_jax.data.download dsprites --data_dir=DIR`, then --config.data.data_dir=DIR
(or set GMG_DATA_DIR).
"""

from gmg_jax.config import dataset_config


def get_config(arg=None):
  return dataset_config("dsprites", arg)
