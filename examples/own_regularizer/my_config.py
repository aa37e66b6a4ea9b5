"""Your own config file: gmg_jax's base config with the stress regularizer on the decoder.

python -m gmg_jax.main --config=my_config.py:runlocal --workdir=/tmp/stress
"""

import stress  # noqa: F401 (registers "stress" before the config is built)

from gmg_jax import config as base


def get_config(arg=None):
  config = base.get_config(arg)  # Has config.regularizer.stress, with its defaults (power 1.0).
  config.regularizer.name = "stress"
  config.regularizer.on = "decoder"
  config.regularizer.weight = 10.0
  return config
