"""The maps a regularizer regularizes, and the batch it sees them on under data parallelism.

`REGULARIZED_MAPS[config.regularizer.on](model, inputs, target)` gives the map's function, its
inputs x and the network output y is read from: on the encoder x = float images [B, H, W, C],
map_fn = the encoder mean, y = mu [B, D]; on the decoder x = the sampled codes z [B, D], map_fn =
model.decode (composed with a sigmoid when target == "mean"), y = the reconstruction logits (or
their sigmoid) [B, H, W, C]. y always comes from the loss's own forward pass.

`scoped_regularizer`: "global" solves one problem on the whole global batch (the partitioner
gathers what the regularizer needs; equal to the single-device step); "local" solves one per
device sub-batch (`sharding.device_rows`, the regularizer vmapped over the devices' blocks) and
averages the values: no gather of the batch, smaller problems, a different objective when there
are several devices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from gmg_jax import sharding
from gmg_jax.losses.objectives import Inputs
from gmg_jax.losses.regularizers import Regularizer
from gmg_jax.models import VAE
from gmg_jax.registry import lookup

DECODER_TARGETS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "logits": lambda logits: logits,
  "mean": jax.nn.sigmoid,
}


# A regularized map: (map_fn, its inputs x, the network output it is read from, output -> y).
_Map = tuple[Callable, jax.Array, jax.Array, Callable[[jax.Array], jax.Array]]


def _encoder_map(model: VAE, ctx: Inputs, target: str) -> _Map:
  del target
  return (lambda x: model.encode(x)[0]), ctx.images, ctx.mu, lambda mu: mu


def _decoder_map(model: VAE, ctx: Inputs, target: str) -> _Map:
  if ctx.logits is None:
    raise ValueError("regularizer.on='decoder' needs a decoder; use 'encoder' for decoder_free.")
  to_target = lookup(DECODER_TARGETS, target, "regularizer.target")
  return (lambda z: to_target(model.decode(z))), ctx.z, ctx.logits, to_target


REGULARIZED_MAPS = {"encoder": _encoder_map, "decoder": _decoder_map}


def regularized_output_shape(
  regularizer_config: ml_collections.ConfigDict, image_shape: tuple[int, ...], latent_dim: int
) -> tuple[int, ...]:
  """Shape of the network output the regularizer reads (decoder logits [B, H, W, C] or encoder
  means [B, D]), for `vae_loss`'s `probe`."""
  if regularizer_config.on == "decoder":
    return tuple(image_shape)
  return (image_shape[0], latent_dim)


def _local_scope(regularizer_fn: Regularizer, mesh: Mesh) -> Regularizer:
  num_shards = mesh.shape[sharding.DATA_AXIS]
  split = sharding.device_rows(mesh)

  def local(map_fn, x, y, key):
    # vmap over the shard axis rather than jax.shard_map: the regularizer's map (the decoder
    # for the Jacobian penalty) closes over the parameters, and reverse-mode through a scan
    # of that closure inside shard_map fails in jax 0.10 (mesh mismatch on the transpose).
    # Independent draws per shard (the Jacobian's directions); GMG and DST ignore the key.
    shard_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_shards))
    values, aux = jax.vmap(lambda xs, ys, k: regularizer_fn(map_fn, xs, ys, k))(
      split(x), split(y), shard_keys
    )
    return jnp.mean(values), jax.tree.map(jnp.mean, aux)

  return local


SCOPES: dict[str, Callable[[Regularizer, Mesh], Regularizer]] = {
  # The partitioner gathers what the solver needs; the value is the single-device one.
  "global": lambda regularizer_fn, mesh: regularizer_fn,
  "local": _local_scope,
}


def scoped_regularizer(
  regularizer_fn: Regularizer | None, scope: str, mesh: Mesh
) -> Regularizer | None:
  """The regularizer applied to the whole global batch or per device sub-batch.

  Args:
    regularizer_fn: `regularizers.make_regularizer(config.regularizer)` (None: no regularizer).
    scope: "global" (one problem on the global batch of B points) or "local" (one problem per
      device on its B / num_data_shards points; values and diagnostics averaged over devices).
    mesh: the step's mesh.

  Returns:
    A regularizer with the same signature, `(map_fn, x, y, key) -> (value, aux)`.
  """
  scoped = lookup(SCOPES, scope, "regularizer.scope")
  return None if regularizer_fn is None else scoped(regularizer_fn, mesh)
