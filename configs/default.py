"""The base config: beta-VAE on the procedural Shapes3D-like set.

Every field and variant is defined and commented in `gmg_jax/config.py` (part of the installed
package, so configs load from any working directory):

  python -m gmg_jax.main --config=configs/default.py:runlocal --workdir=/tmp/gmg
"""

from gmg_jax.config import VARIANTS, apply_variants, get_config

__all__ = ["VARIANTS", "apply_variants", "get_config"]
