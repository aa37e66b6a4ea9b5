"""Map-level regularizers for an encoder or a decoder: GMG, distortion (DST) and Jacobian isometry.

All share one signature so the objective can take any of them in the same slot::

    value, aux = regularizer(map_fn, x, y, key)

* ``map_fn``: the map T, batched: ``[n, ...] -> [n, ...]`` (the decoder, or the encoder mean).
* ``x``: ``[n, ...]`` its input batch (latent codes for the decoder, images for the encoder).
* ``y``: ``T(x)``, already computed by the caller's forward pass (GMG and DST only need ``x``
  and ``y``; the Jacobian penalty calls ``map_fn`` for its JVPs).
* ``key``: PRNG key (random projections of the Jacobian penalty).
* ``aux``: dict of scalar diagnostics for logging.

Each is registered (`gmg_jax.losses.registry.register_regularizer`) with what the rest of the
code needs: its hyperparameters and their checks, the fields a K-run may vary, whether its
gradient w.r.t. the map's outputs can be measured, and (GMG) the picture of its plan.
`make_regularizer(config)` binds the hyperparameters from a config and returns ``None`` for
``name == "none"``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gmg_jax import gmg as gmg_lib
from gmg_jax import gw
from gmg_jax.losses import registry
from gmg_jax.registry import check_choice

Regularizer = Callable[
  [Callable[[jax.Array], jax.Array], jax.Array, jax.Array, jax.Array],
  tuple[jax.Array, dict[str, jax.Array]],
]

# The GMG values that can be trained; the config check reads them here.
ESTIMATORS = gmg_lib.ESTIMATORS
# The GW solve's own settings `gmg` passes through to the solver, with the solver's defaults.
_SOLVE_DEFAULTS = {
  "init": inspect.signature(gmg_lib.entropic_gw_plan_with_stats).parameters["init"].default,
  "solver": inspect.signature(gmg_lib.entropic_gw_plan_with_stats).parameters["solver"].default,
  **gw.Budget._field_defaults,
}


def _gmg_problems(group: Any) -> list[str]:
  floor = gmg_lib.min_normalized_epsilon()
  if group.epsilon_stat == "mean" and 0 < group.epsilon_0 < floor:
    return [
      f"regularizer.gmg.epsilon_0={group.epsilon_0!r}: below {floor:.3g}, the smallest "
      "epsilon the float32 solver uses (smaller values would all give the same run)."
    ]
  return []


@functools.partial(jax.jit, static_argnames=("cost", "epsilon_stat", "solver"))
def _gw_plan(
  x: jax.Array,
  y: jax.Array,
  epsilon_0: float,
  *,
  cost: str,
  epsilon_stat: str,
  solver: tuple[tuple[str, Any], ...],
) -> tuple[jax.Array, jax.Array]:
  """The plan `gmg.gromov_monge_gap(x, y, ...)` solves for (same costs, epsilon rule, solver)."""
  cost_xx, cost_yy = gmg_lib.cost_matrix(x, cost), gmg_lib.cost_matrix(y, cost)
  epsilon = gmg_lib.scaled_epsilon(cost_xx, cost_yy, epsilon_0, epsilon_stat)
  plan, converged, _, _ = gmg_lib.entropic_gw_plan(cost_xx, cost_yy, epsilon, **dict(solver))
  return plan, converged


def _gmg_picture(x: jax.Array, y: jax.Array, group: Any) -> tuple[str, np.ndarray, str]:
  """The GW plan the GMG regularizer solves for on the batch (x, y): name, matrix, title."""
  solver = tuple((f, group[f]) for f in _SOLVE_DEFAULTS if f in group)
  plan, converged = _gw_plan(
    x,
    y,
    float(group.epsilon_0),
    cost=group.cost,
    epsilon_stat=group.epsilon_stat,
    solver=solver,
  )
  title = f"GW plan, {group.cost}, n={len(x)}, epsilon_0={group.epsilon_0:g}"
  return "gw_plan", np.asarray(plan), title + ("" if bool(converged) else " (not converged)")


@registry.register_regularizer(
  "gmg",
  reads_outputs=True,
  distortion=lambda value, aux: aux["gmg_distortion"],
  variable=("epsilon_0",),
  min_batch_size=2,
  choices={
    "cost": gmg_lib.COSTS,
    "estimator": ESTIMATORS,
    "epsilon_stat": gmg_lib.EPSILON_STATS,
    "init": gmg_lib.INITS,
    "solver": gmg_lib.SOLVERS,
  },
  ranges={
    "epsilon_0": registry.POSITIVE,
    "max_iterations": registry.AT_LEAST_1,
    "sinkhorn_max_iterations": registry.AT_LEAST_1,
    "threshold": registry.POSITIVE,
    "sinkhorn_threshold": registry.POSITIVE,
    "inner_iterations": registry.AT_LEAST_1,
  },
  problems=_gmg_problems,
  picture=_gmg_picture,
  defaults=_SOLVE_DEFAULTS,
)
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


def value_itself(value: jax.Array, aux: dict[str, jax.Array]) -> jax.Array:
  """The `distortion` of a regularizer whose value is the distortion (DST)."""
  del aux
  return value


@registry.register_regularizer(
  "dst",
  reads_outputs=True,
  distortion=value_itself,
  min_batch_size=2,
  choices={"cost": gmg_lib.COSTS},
)
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


@registry.register_regularizer("jacobian", ranges={"num_projections": registry.AT_LEAST_1})
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


def make_regularizer(config: Any) -> Regularizer | None:
  """Binds a regularizer's hyperparameters from a config (big_vision's `Model(**config.model)`).

  Args:
    config: `config.regularizer`: ``name`` ("none" or a registered regularizer: "gmg", "dst",
      "jacobian", yours) and, under the same name, the group of that regularizer's keyword
      arguments (``config.gmg.epsilon_0``, ...). A key the regularizer does not take fails when
      the regularizer is called (the config check refuses it before any work).

  Returns:
    ``regularizer(map_fn, x, y, key) -> (value, aux)``, or None for "none".
  """
  if config.name == "none":
    return None
  spec = registry.regularizer_spec(config.name)
  return functools.partial(spec.fn, **config[config.name].to_dict())
