"""A regularizer of your own, in one file outside gmg_jax: the normalized stress of the map.

Stress (metric multidimensional scaling) compares the pairwise distances of the batch before and
after the map, up to one scale s: |D_y - s D_x|^2 / |D_y|^2, with the best s. It is 0 for a
scaled isometry, like the GMG's distortion term with the L2 cost, but on distances rather than
squared distances. `power` raises the distances first (a K-run may vary it: it is a float).
"""

import jax.numpy as jnp

from gmg_jax.losses import register_regularizer


def _distances(a):
  """[n, n] Euclidean distances between the rows of a [n, ...] (finite gradient at 0)."""
  a = a.reshape(a.shape[0], -1)
  sq = jnp.sum(a * a, axis=1)
  return jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0) + 1e-12)


@register_regularizer("stress", reads_outputs=True, min_batch_size=2)
def stress(map_fn, x, y, key, *, power: float = 1.0):
  """`(map_fn, x, y, key) -> (value, aux)`: the slot every regularizer fills; x and y = T(x)."""
  del map_fn, key  # Stress reads the batch's inputs and outputs only (reads_outputs=True).
  dx, dy = _distances(x) ** power, _distances(y) ** power
  scale = jnp.sum(dx * dy) / jnp.sum(dx * dx)
  value = jnp.sum((dy - scale * dx) ** 2) / jnp.sum(dy * dy)
  return value, {"stress": value, "scale": scale}
