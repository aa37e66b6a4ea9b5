"""Map-level regularizers for an encoder or a decoder: GMG, distortion (DST) and Jacobian isometry.

All share one signature so the objective can take any of them in the same slot::

    value, aux = regularizer(map_fn, x, y, key)

* ``map_fn``: the map T, batched: ``[n, ...] -> [n, ...]`` (the decoder, or the encoder mean).
* ``x``: ``[n, ...]`` its input batch (latent codes for the decoder, images for the encoder).
* ``y``: ``T(x)``, already computed by the caller's forward pass (GMG and DST only need ``x``
  and ``y``; the Jacobian penalty calls ``map_fn`` for its JVPs).
* ``key``: PRNG key (random projections of the Jacobian penalty).
* ``aux``: dict of scalar diagnostics for logging.

`make_regularizer(config)` binds the hyperparameters from a config and returns ``None`` for
``name == "none"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gmg_jax import gmg as gmg_lib
from gmg_jax.registry import check_choice

Regularizer = Callable[
  [Callable[[jax.Array], jax.Array], jax.Array, jax.Array, jax.Array],
  tuple[jax.Array, dict[str, jax.Array]],
]

# The GMG values that can be trained; the config check reads them here.
ESTIMATORS = gmg_lib.ESTIMATORS


def gmg(
  map_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  cost: gmg_lib.CostName = "cosine",
  epsilon_0: float = 0.01,
  epsilon_stat: gmg_lib.StatName = "mean",
  estimator: gmg_lib.EstimatorName = "entropic",
  **solver_kwargs: Any,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Gromov-Monge Gap of ``map_fn`` on the batch (see `gmg_jax.gmg.gromov_monge_gap`).

  ``estimator`` picks the value that `gmg_jax.gmg.gromov_monge_gap` returns, and so the value
  that is trained:

  * "entropic" (the paper's ``DST - GW_eps``): ``DST - (E(P) + epsilon KL(P))``. It can be
    negative (entropic bias), and its gradient, the envelope gradient, is never switched off.
  * "certified": ``DST - min(DST, E(P))`` >= 0, a lower bound on the exact gap. On a trained
    decoder's batches the solver rarely beats the decoder's own coupling (``identity_won``;
    docs/gmg.md), so this value and its gradient are then 0 and the regularizer does
    nothing.

  Both values are logged, "gmg_entropic" and "gmg_certified" (the trained one is also the
  objective's "regularizer").
  """
  del map_fn, key
  check_choice(estimator, ESTIMATORS, "regularizer.gmg.estimator")
  value, info = gmg_lib.gromov_monge_gap(
    x,
    y,
    cost=cost,
    epsilon_0=epsilon_0,
    epsilon_stat=epsilon_stat,
    estimator=estimator,
    **solver_kwargs,
  )
  aux = {
    "gmg_entropic": info.entropic_gap,
    "gmg_certified": info.certified_gap,
    "gmg_distortion": info.distortion,
    "gmg_gw_energy": info.gw_energy,
    "gmg_epsilon": info.epsilon,
    "gmg_converged": info.converged.astype(jnp.float32),
    "gmg_iterations": info.iterations.astype(jnp.float32),
    "gmg_sinkhorn_iterations": info.sinkhorn_iterations.astype(jnp.float32),
    "gmg_plan_entropy_ratio": info.plan_entropy_ratio,
    "gmg_identity_won": info.identity_won.astype(jnp.float32),
  }
  return value, aux


def distortion_term(name: str, value: jax.Array, aux: dict[str, jax.Array]) -> jax.Array:
  """The distortion DST of the batch, as computed (differentiably) by the GMG or DST regularizer
  `name` that returned `(value, aux)`: the DST regularizer's value, the GMG's first term."""
  check_choice(name, ("gmg", "dst"), "regularizer.name")
  return value if name == "dst" else aux["gmg_distortion"]


def dst(
  map_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  cost: gmg_lib.CostName = "cosine",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Distortion of ``map_fn`` on the batch, the GMG's first term alone (no GW solve)."""
  del map_fn, key
  value = gmg_lib.distortion(gmg_lib.cost_matrix(x, cost), gmg_lib.cost_matrix(y, cost))
  return value, {"dst": value}


def jacobian(
  map_fn: Callable[[jax.Array], jax.Array],
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  *,
  num_projections: int = 1,
  scaled: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Isometry penalty on the Jacobian ``J(x_i)`` of the map, by JVPs on random unit directions.

  For unit directions ``v`` an isometry has ``|J v|^2 = 1`` and a scaled isometry has
  ``|J v|^2 = c`` for one constant ``c``. With ``s = |J(x_i) v|^2`` over samples and directions the
  penalty is ``Var(s) / mean(s)^2`` when ``scaled`` (scale-free, like ScL2^2 and Cos) and
  ``mean((s - 1)^2)`` otherwise. One JVP per projection: the full Jacobian of a 64x64x3 map is
  never formed.

  Args:
    map_fn: batched map ``[n, ...] -> [n, ...]``.
    x: [n, ...] input batch.
    y: unused (the JVP recomputes the forward pass).
    key: PRNG key for the directions.
    num_projections: random directions per sample.
    scaled: penalize deviation from a scaled isometry instead of an exact one.

  Returns:
    ``(penalty, aux)``.
  """
  del y

  # All projections in one batched JVP ([p * n, ...]): a `lax.map` over projections kept XLA
  # from fusing the conv JVPs and made a 64x64 decoder step 35x slower than the plain step.
  directions = jax.random.normal(key, (num_projections, *x.shape), x.dtype)
  axes = tuple(range(2, directions.ndim))
  directions = directions / jnp.sqrt(jnp.sum(directions**2, axis=axes, keepdims=True))
  tiled = jnp.broadcast_to(x, directions.shape).reshape(-1, *x.shape[1:])
  _, jv = jax.jvp(map_fn, (tiled,), (directions.reshape(tiled.shape),))
  s = jnp.sum(jnp.reshape(jv, (num_projections, x.shape[0], -1)) ** 2, axis=2)  # [p, n]
  mean_s = jnp.mean(s)
  if scaled:
    value = jnp.var(s) / jnp.maximum(mean_s**2, 1e-12)
  else:
    value = jnp.mean((s - 1.0) ** 2)
  return value, {"jacobian": value, "jacobian_mean_sq_norm": mean_s}


REGULARIZERS: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
  "gmg": gmg,
  "dst": dst,
  "jacobian": jacobian,
}

NAMES = ("none", *REGULARIZERS)


def make_regularizer(config: Any) -> Regularizer | None:
  """Binds a regularizer's hyperparameters from a config (big_vision's `Model(**config.model)`).

  Args:
    config: `config.regularizer`: ``name`` ("none" | "gmg" | "dst" | "jacobian") and, under the
      same name, the group of that regularizer's keyword arguments (``config.gmg.epsilon_0``, ...).
      A key the regularizer does not take fails when the regularizer is called (the trainer
      compiles its step before any work).

  Returns:
    ``regularizer(map_fn, x, y, key) -> (value, aux)``, or None for "none".
  """
  name = config.name
  check_choice(name, NAMES, "regularizer.name")
  if name == "none":
    return None
  return functools.partial(REGULARIZERS[name], **config[name].to_dict())
