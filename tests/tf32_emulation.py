"""A pytest plugin that emulates TF32 float32 matmuls on the CPU, to find the tests (and code)
that a GPU's default precision would break, without a GPU.

jax's default precision lets float32 matrix products run in TF32 on recent NVIDIA GPUs: the
operands keep 10 of their 23 mantissa bits. Loaded, this plugin makes every `lax.dot_general`
whose precision is left at the default (no `precision=` and no `jax.default_matmul_precision`
context) round its float32 operands to 10 mantissa bits (to nearest), as the GPU's tensor cores
do. Products asked for at full precision are left alone:

  PYTHONPATH=tests pytest -p tf32_emulation tests/test_gmg.py tests/test_gw.py

It replaces a function of jax's internals (`jax._src.lax.lax.dot_general`, checked with jax
0.10.2), so a later jax may need it adapted; `tests/test_gw.py` checks that it still rounds.
"""

import jax
import jax.numpy as jnp
from jax._src import config as jax_config
from jax._src.lax import lax as lax_internal

_DOT_GENERAL = lax_internal.dot_general
_DROPPED_BITS = 13  # float32 has 23 mantissa bits, TF32 10.


def to_tf32(x: jax.Array) -> jax.Array:
  """`x` with its float32 entries rounded to 10 mantissa bits (other dtypes unchanged); its
  derivative is the identity."""
  x = jnp.asarray(x)
  if x.dtype != jnp.float32:
    return x
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  half, keep = 1 << (_DROPPED_BITS - 1), (0xFFFFFFFF << _DROPPED_BITS) & 0xFFFFFFFF
  rounded = jax.lax.bitcast_convert_type((bits + jnp.uint32(half)) & jnp.uint32(keep), jnp.float32)
  # The rounding is invisible to autodiff (a bitcast has no derivative): gradients pass as is.
  return jnp.where(jnp.isfinite(x), x + jax.lax.stop_gradient(rounded - x), x)


def _at_default(precision) -> bool:
  if jax_config.default_matmul_precision.value not in (None, "default", "fastest", "bfloat16"):
    return False
  if isinstance(precision, (tuple, list)):
    return all(p in (None, jax.lax.Precision.DEFAULT) for p in precision)
  return precision in (None, jax.lax.Precision.DEFAULT)


def dot_general(lhs, rhs, dimension_numbers, precision=None, **kwargs):
  if _at_default(precision):
    lhs, rhs = to_tf32(lhs), to_tf32(rhs)
  return _DOT_GENERAL(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


lax_internal.dot_general = dot_general
jax.lax.dot_general = dot_general
