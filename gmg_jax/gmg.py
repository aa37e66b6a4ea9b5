"""The Gromov-Monge Gap (GMG) of a map on a mini-batch, with ott-jax's entropic GW.

The GW solve runs ott-jax's algorithm either in ott-jax itself (``solver="ott"``, the reference)
or in `gmg_jax.gw` (``solver="fused"``, the default: the same iterations and stopping rules in
one flat loop with kernel-domain Sinkhorn blocks, 2-7x faster on CPU, and vmapped K times it
costs the slowest member's iterations, not a sum over outer iterations of slowest inner ones).

Given a reference batch ``x_1..x_n`` (uniform weights) and its image ``y_i = T(x_i)``:

* ``C_X``, ``C_Y`` are the pairwise cost matrices of the batch and of its image.
* The GW energy of a coupling ``P`` is ``E(P) = 1/2 sum_{ijkl} (C_X[i,k] - C_Y[j,l])^2 P_ij P_kl``.
  One convention for the 1/2 everywhere: ott-jax's energy has no 1/2, ours has it.
* The distortion of ``T`` is the energy of the map's own coupling ``I/n``:
  ``DST = E(I/n) = 1/2 mean_{ik} (C_X[i,k] - C_Y[i,k])^2``.
* ott-jax's entropic GW (Peyre et al. 2016, linearized without a factor 2; either solver) returns
  a plan ``P_eps`` that is stationary for ``E(P) + epsilon * KL(P | a b^T)`` in this convention.
* Two estimators of the gap ``GMG = DST - GW`` come from that plan; ``estimator`` picks the one
  `gromov_monge_gap` returns (and a trainer trains), and `GMGInfo` holds both:

  - "entropic" (default; the paper's ``DST - GW_eps``): ``DST - (E(P_eps) + epsilon KL(P_eps))``
    (``info.entropic_gap``). It carries the entropic bias: it can be negative, and is
    ``<= -epsilon KL(P_eps)`` on an exact isometry. Its gradient (below) is never switched off.
  - "certified": ``DST - min(DST, E(P_eps))`` (``info.certified_gap``). Both ``I/n`` and
    ``P_eps`` are feasible couplings, so ``min(DST, E(P_eps))`` is the energy of a coupling we
    hold, an upper bound on the exact GW value, and the gap is a certified lower bound on the
    exact (unregularized) GMG: ``>= 0`` and ``<= DST`` by construction and exactly 0 for an
    isometry. Entropy only selects the plan; it is not part of this value, so there is no
    ``epsilon * log n`` bias to correct (``DST - E(P_eps)`` goes negative on near-isometries).
    When the solver's plan is no better than the map's own coupling (GW is non-convex; or
    epsilon is so large that the plan is close to the product coupling) this gap and its
    gradient are 0 and ``info.identity_won`` says so.

Epsilon follows the paper's scaled rule ``epsilon = epsilon_0 * stat(C_X) * stat(C_Y)`` (stat =
mean, max or std; computed on detached costs). The solver works on mean-normalized costs, where
the mean rule is simply ``epsilon_0``; this keeps float32 Sinkhorn accurate when the two spaces'
scales differ by orders of magnitude (image vs code distances) and when one side is flat (all
``y`` nearly equal, e.g. a freshly initialized decoder's sigmoid outputs), see `entropic_gw_plan`.

Gradients use the envelope theorem: the GW problem is solved on detached cost matrices, the plan is
held fixed, and ``E(P)`` is rebuilt from the traced costs (epsilon is held fixed too). For the
entropic estimator the result is the exact gradient of its value, the quantity the paper
differentiates. The certified estimator has the same gradient where the solver's plan won and 0
where ``identity_won``; it differs from the derivative of the certified value by
``epsilon * d KL(P_eps) / dy``, which vanishes as epsilon -> 0. This avoids differentiating
through the solver's ``while_loop`` and is cheaper than ott's own backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.initializers.quadratic import initializers as quad_initializers
from ott.problems.quadratic import quadratic_problem
from ott.solvers.linear import sinkhorn
from ott.solvers.quadratic import gromov_wasserstein

from gmg_jax import gw

# The costs stay part of this module's API (`gmg.cost_matrix`, `gmg.COSTS`, ...).
from gmg_jax.costs import COSTS as COSTS
from gmg_jax.costs import TINY as _TINY
from gmg_jax.costs import CostName, cost_matrix, solver_factors
from gmg_jax.costs import cost_factors as cost_factors
from gmg_jax.registry import check_choice, lookup

StatName = Literal["mean", "max", "std"]
EstimatorName = Literal["entropic", "certified"]
SolverName = Literal["fused", "ott"]

INITS = ("both", "product", "identity")
# The values `gromov_monge_gap` can return (module docstring); the first is the default.
ESTIMATORS = ("entropic", "certified")
# GW solvers of `entropic_gw_plan`; the first is the default.
SOLVERS = ("fused", "ott")


EPSILON_STATS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "mean": jnp.mean,
  "max": jnp.max,
  "std": jnp.std,
}


def min_normalized_epsilon(dtype: jnp.dtype = jnp.float32) -> float:
  """Smallest epsilon the solver uses on mean-normalized costs (smaller ones are raised to it).

  Below ~1e3 machine epsilons the kernel exp(-C / epsilon) underflows for most entries.
  """
  return 1e3 * float(jnp.finfo(dtype).eps)


def distortion(cost_xx: jax.Array, cost_yy: jax.Array) -> jax.Array:
  """Distortion ``1/2 mean_{ik} (C_X[i,k] - C_Y[i,k])^2`` of the map ``x_i -> y_i``.

  Args:
    cost_xx: [n, n] costs in the source space.
    cost_yy: [n, n] costs in the target space.

  Returns:
    Scalar distortion (the GW energy of the map's own coupling I/n).
  """
  return 0.5 * jnp.mean((cost_xx - cost_yy) ** 2)


def gw_energy(cost_xx: jax.Array, cost_yy: jax.Array, plan: jax.Array) -> jax.Array:
  """GW energy ``1/2 sum_{ijkl} (C_X[i,k] - C_Y[j,l])^2 P_ij P_kl`` of a coupling.

  Uses the plan's own marginals ``p = P 1``, ``q = P^T 1``, so the value is exact for a plan
  whose marginals are only approximately uniform (a Sinkhorn plan stopped at a tolerance).

  Args:
    cost_xx: [n, n] symmetric costs in the source space.
    cost_yy: [m, m] symmetric costs in the target space.
    plan: [n, m] coupling.

  Returns:
    Scalar energy, differentiable in both cost matrices.
  """
  p, q = jnp.sum(plan, axis=1), jnp.sum(plan, axis=0)
  cross = jnp.sum(gw.matmul(gw.matmul(cost_xx, plan), cost_yy) * plan)
  # A sum of squares with non-negative weights; the clip removes float cancellation below 0.
  own = gw.matmul(gw.matmul(p, cost_xx**2), p) + gw.matmul(gw.matmul(q, cost_yy**2), q)
  return jnp.maximum(0.5 * own - cross, 0.0)


def _kl_to_product(plan: jax.Array) -> jax.Array:
  """``KL(P | a b^T)`` for uniform a, b (generalized KL, ``0 log 0 = 0``)."""
  n, m = plan.shape
  safe = jnp.where(plan > 0, plan, 1.0)
  return jnp.sum(plan * jnp.log(safe * (n * m))) - jnp.sum(plan) + 1.0


def scaled_epsilon(
  cost_xx: jax.Array, cost_yy: jax.Array, epsilon_0: float, stat: StatName = "mean"
) -> jax.Array:
  """The paper's ``epsilon = epsilon_0 * stat(C_X) * stat(C_Y)``, detached.

  With the mean statistic this is exactly ``epsilon_0`` on the mean-normalized problem that
  `entropic_gw_plan` solves, so epsilon_0 means the same for every cost and data scale.

  Args:
    cost_xx: [n, n] source costs.
    cost_yy: [m, m] target costs.
    epsilon_0: relative entropic regularization.
    stat: statistic of each cost matrix, "mean", "max" or "std".

  Returns:
    Scalar epsilon (no gradient flows through it).
  """
  stat_fn = lookup(EPSILON_STATS, stat, "epsilon statistic")
  sx = stat_fn(jax.lax.stop_gradient(cost_xx))
  sy = stat_fn(jax.lax.stop_gradient(cost_yy))
  return epsilon_0 * sx * sy


class GMGInfo(NamedTuple):
  """Diagnostics of one GMG evaluation (all scalars).

  Attributes:
    distortion: ``DST = E(I/n)``, the GW energy of the map's own coupling.
    gw_energy: ``E(P_eps)``, GW energy of the solver's plan (no entropy).
    gw_cost: ``F(P_eps) = E(P_eps) + epsilon * KL(P_eps | ab^T)``.
    epsilon: the absolute epsilon used.
    converged: whether the GW solve converged within its budget: its outer rule stopped it and
      every Sinkhorn solve met its tolerance.
    iterations: number of outer GW iterations run.
    sinkhorn_iterations: Sinkhorn iterations in those outer iterations (the initial solve at
      the start coupling not counted).
    plan_entropy_ratio: ``H(P_eps) / log n``: 1 for a one-to-one matching, 2 for the product
      coupling (no matching at all; epsilon too large).
    identity_won: the solver's plan was no better than the map's own coupling (the certified
      gap is 0).
    entropic_gap: ``DST - gw_cost``, the "entropic" estimator (can be negative).
    certified_gap: ``DST - min(DST, E(P_eps))``, the "certified" estimator, in ``[0, DST]``.
  """

  distortion: jax.Array
  gw_energy: jax.Array
  gw_cost: jax.Array
  epsilon: jax.Array
  converged: jax.Array
  iterations: jax.Array
  sinkhorn_iterations: jax.Array
  plan_entropy_ratio: jax.Array
  identity_won: jax.Array
  entropic_gap: jax.Array
  certified_gap: jax.Array


def round_to_coupling(plan: jax.Array) -> jax.Array:
  """Projects a nearly feasible plan onto the couplings of uniform marginals exactly.

  The rounding of Altschuler, Weed and Rigollet (2017, Alg. 2): scale rows and then columns down
  to their marginals, and put the missing mass back as a rank-one term. A Sinkhorn plan stopped at
  tolerance ``delta`` moves by ``O(delta)``; without the rounding, its energy carries a bias of
  ``delta * mean(C^2)``, which dominates the gap when one space's costs are much larger than the
  other's.

  Args:
    plan: [n, m] non-negative matrix with marginals close to uniform.

  Returns:
    [n, m] coupling with row sums 1/n and column sums 1/m.
  """
  n, m = plan.shape
  plan = plan * jnp.minimum(1.0 / (n * jnp.maximum(jnp.sum(plan, axis=1), _TINY)), 1.0)[:, None]
  plan = plan * jnp.minimum(1.0 / (m * jnp.maximum(jnp.sum(plan, axis=0), _TINY)), 1.0)[None, :]
  missing_rows = 1.0 / n - jnp.sum(plan, axis=1)
  missing_cols = 1.0 / m - jnp.sum(plan, axis=0)
  return plan + jnp.outer(missing_rows, missing_cols) / jnp.maximum(jnp.sum(missing_rows), _TINY)


def entropic_gw_plan(
  cost_xx: jax.Array, cost_yy: jax.Array, epsilon: jax.Array | float, **solver_kwargs
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """``(plan, converged, outer iterations, epsilon used)`` of `entropic_gw_plan_with_stats`."""
  return entropic_gw_plan_with_stats(cost_xx, cost_yy, epsilon, **solver_kwargs)[:4]


def entropic_gw_plan_with_stats(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  epsilon: jax.Array | float,
  *,
  init: Literal["both", "product", "identity"] = "both",
  solver: SolverName = "fused",
  factors_xx: gw.Factors | None = None,
  factors_yy: gw.Factors | None = None,
  **budget: Any,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Entropic GW plan between two cost matrices with uniform weights.

  The solve runs on the mean-normalized costs ``C / mean(C)`` at ``epsilon / (s_X s_Y)``. With
  exact marginals the energy is ``const - 2 <C_X P C_Y, P>``, so this is the same problem and has
  the same plan, but in float32 it is the one that can be solved: on raw costs the separable
  terms (``mean(C_X^2)``, 1e7 for image batches) swamp both Sinkhorn's precision and ott's
  outer stopping rule (relative change of the linearized cost), which then stops at its
  minimum iterations with a blurred plan. The normalized epsilon is floored at ``1e3 * u``
  (``u`` the unit round-off, 1.2e-4 in float32): below that Sinkhorn cannot meet its tolerance.
  A flat side (all points nearly equal, e.g. a fresh decoder's sigmoid outputs) is normalized
  too, so its epsilon does not collapse to ~0.

  Args:
    cost_xx: [n, n] source costs (treated as constants).
    cost_yy: [m, m] target costs (treated as constants).
    epsilon: absolute entropic regularization in ott's convention (see module docstring).
    init: the coupling the first linearization is taken at: the product coupling ``ab^T``, the
      map's own coupling ``I/n`` (needs n == m), or "both": one batched solve from each, the
      lower-energy plan kept. GW is non-convex and neither start dominates: on 10 random maps
      (n = 64, epsilon_0 = 0.01) the product start found the lower energy 8 times, and it
      recovers a shuffled batch (GW = 0) where the identity start stops at 50-70% of the gap;
      on a trained decoder's batches the product start never beat the decoder's own coupling,
      while the identity start found couplings 3% (ScL2) below it.
    solver: "fused" (`gmg_jax.gw.solve`: ott's iterations in one loop with kernel-domain
      Sinkhorn blocks; the default) or "ott" (ott-jax's ``GromovWasserstein``, the reference).
      Both run the same algorithm with the same stopping rules and return the same plan up to
      float32 round-off (tests/test_gw.py).
    factors_xx: `cost_factors` of the points behind ``cost_xx``, for a side of low rank: the
      fused solver's linearizations then cost ``O(n^2 d)`` instead of ``O(n^3)`` (same plan up to
      round-off). The "ott" reference solver always uses the dense matrices.
    factors_yy: the same for ``cost_yy``.
    **budget: the solve's iteration budget and stopping rules, fields of `gmg_jax.gw.Budget`
      (both solvers take them; a misspelled field raises TypeError).

  Returns:
    ``(plan [n, m], converged, outer iterations, epsilon used, Sinkhorn iterations of the outer
    iterations)``, all without gradient. The
    plan is rounded onto the exact couplings (`round_to_coupling`); the epsilon used differs
    from ``epsilon`` only where the floor applies.
  """
  scale_x = jnp.maximum(jnp.mean(jax.lax.stop_gradient(cost_xx)), _TINY)
  scale_y = jnp.maximum(jnp.mean(jax.lax.stop_gradient(cost_yy)), _TINY)
  cost_xx = jax.lax.stop_gradient(cost_xx) / scale_x
  cost_yy = jax.lax.stop_gradient(cost_yy) / scale_y
  floor = min_normalized_epsilon(cost_xx.dtype)
  normalized_epsilon = jnp.maximum(jax.lax.stop_gradient(epsilon) / (scale_x * scale_y), floor)
  n, m = cost_xx.shape[0], cost_yy.shape[0]
  check_choice(init, INITS, "init")
  check_choice(solver, SOLVERS, "solver")
  if init != "product" and n != m:
    raise ValueError(f"init={init!r} needs equal batch sizes, got {n} and {m}.")
  budget = gw.Budget(**budget)._asdict()
  if solver == "fused":
    # The factors of the mean-normalized matrices.
    def normalized(factors: gw.Factors | None, scale: jax.Array) -> gw.Factors | None:
      return None if factors is None else gw.Factors(factors.left / scale, factors.right)

    solve_fn = functools.partial(
      _solve_fused,
      factors_xx=normalized(factors_xx, scale_x),
      factors_yy=normalized(factors_yy, scale_y),
    )
  else:
    solve_fn = _solve_ott

  def solve(init_coupling: jax.Array) -> tuple[jax.Array, ...]:
    plan, converged, iterations, sinkhorn_iterations = solve_fn(
      cost_xx, cost_yy, normalized_epsilon, init_coupling, **budget
    )
    # A diverged Sinkhorn yields a NaN plan; the product coupling is then a feasible stand-in
    # and `converged` reports the failure.
    ok = jnp.all(jnp.isfinite(plan))
    plan = jnp.where(ok, round_to_coupling(plan), jnp.full((n, m), 1.0 / (n * m), plan.dtype))
    return plan, jnp.logical_and(converged, ok), iterations, sinkhorn_iterations

  starts = {
    "product": jnp.full((n, m), 1.0 / (n * m), cost_xx.dtype),
    "identity": jnp.eye(n, m, dtype=cost_xx.dtype) / n,
  }
  names = ("product", "identity") if init == "both" else (init,)
  if len(names) == 1:
    plan, converged, iterations, sinkhorn_iterations = solve(starts[init])
  else:
    # Both starts run as one batched solve (GW is non-convex); the lower-energy plan wins.
    plans, *stats = jax.vmap(solve)(jnp.stack([starts[k] for k in names]))
    best = jnp.argmin(jax.vmap(lambda p: gw_energy(cost_xx, cost_yy, p))(plans))
    plan = plans[best]
    converged, iterations, sinkhorn_iterations = (stat[best] for stat in stats)
  plan = jax.lax.stop_gradient(plan)
  epsilon_used = normalized_epsilon * scale_x * scale_y
  return plan, converged, iterations, epsilon_used, sinkhorn_iterations


def _solve_fused(
  cost_xx: jax.Array, cost_yy: jax.Array, epsilon: jax.Array, init_coupling: jax.Array, **kwargs
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """``(plan, converged, outer iterations, Sinkhorn iterations)`` of `gmg_jax.gw.solve`."""
  out = gw.solve(cost_xx, cost_yy, epsilon, init_coupling, **kwargs)
  return out.plan, out.converged, out.iterations, out.sinkhorn_iterations


def _solve_ott(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  epsilon: jax.Array,
  init_coupling: jax.Array,
  *,
  inner_iterations: int,
  sinkhorn_max_iterations: int,
  sinkhorn_threshold: float,
  warm_start: bool,
  **outer,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """``(plan, converged, outer iterations, Sinkhorn iterations)`` of ott's ``GromovWasserstein``."""
  problem = quadratic_problem.QuadraticProblem(
    geometry.Geometry(cost_matrix=cost_xx), geometry.Geometry(cost_matrix=cost_yy)
  )
  solver = gromov_wasserstein.GromovWasserstein(
    sinkhorn.Sinkhorn(
      max_iterations=sinkhorn_max_iterations,
      threshold=sinkhorn_threshold,
      inner_iterations=inner_iterations,
    ),
    epsilon=epsilon,
    initializer=quad_initializers.QuadraticInitializer(init_coupling=init_coupling),
    warm_start=warm_start,
    store_inner_errors=True,
    **outer,
  )
  # ott takes no precision argument; its products follow jax's default, set here for the trace.
  with jax.default_matmul_precision(gw.PRECISION.name.lower()):
    out = solver(problem)
  sinkhorn_iterations = inner_iterations * jnp.sum(out.errors != -1)
  return out.matrix, out.converged, jnp.sum(out.costs != -1), sinkhorn_iterations


def gromov_monge_gap_from_costs(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  *,
  epsilon_0: float = 0.01,
  epsilon_stat: StatName = "mean",
  epsilon: float | jax.Array | None = None,
  estimator: EstimatorName = "entropic",
  **solver_kwargs,
) -> tuple[jax.Array, GMGInfo]:
  """GMG of the map ``x_i -> y_i`` given its two cost matrices.

  Args:
    cost_xx: [n, n] symmetric costs between source points.
    cost_yy: [n, n] symmetric costs between their images (same order).
    epsilon_0: relative entropic regularization (see `scaled_epsilon`).
    epsilon_stat: statistic for the epsilon scaling.
    epsilon: absolute epsilon; overrides the scaled rule when given.
    estimator: the value returned, "entropic" or "certified" (module docstring).
    **solver_kwargs: passed to `entropic_gw_plan_with_stats`.

  Returns:
    ``(gap, info)``: the chosen estimator's value, with the envelope gradient, and the
    diagnostics, which hold both estimators' values.
  """
  check_choice(estimator, ESTIMATORS, "estimator")
  n = cost_xx.shape[0]
  if epsilon is None:
    epsilon = scaled_epsilon(cost_xx, cost_yy, epsilon_0, epsilon_stat)
  epsilon = jax.lax.stop_gradient(jnp.asarray(epsilon, cost_xx.dtype))
  plan, converged, iterations, epsilon, sinkhorn_iterations = entropic_gw_plan_with_stats(
    cost_xx, cost_yy, epsilon, **solver_kwargs
  )
  dst = distortion(cost_xx, cost_yy)
  energy = gw_energy(cost_xx, cost_yy, plan)
  kl = _kl_to_product(plan)
  log_n = jnp.log(jnp.asarray(n, dst.dtype))
  gw_cost = energy + epsilon * kl
  identity_won = energy >= dst
  gaps = {"entropic": dst - gw_cost, "certified": jnp.where(identity_won, 0.0, dst - energy)}
  info = GMGInfo(
    distortion=dst,
    gw_energy=energy,
    gw_cost=gw_cost,
    epsilon=epsilon,
    converged=converged,
    iterations=iterations,
    sinkhorn_iterations=sinkhorn_iterations,
    plan_entropy_ratio=(2.0 * log_n - kl) / log_n,
    identity_won=identity_won,
    entropic_gap=gaps["entropic"],
    certified_gap=gaps["certified"],
  )
  return gaps[estimator], info


def gromov_monge_gap(
  x: jax.Array,
  y: jax.Array,
  *,
  cost: CostName = "cosine",
  epsilon_0: float = 0.01,
  epsilon_stat: StatName = "mean",
  epsilon: float | jax.Array | None = None,
  estimator: EstimatorName = "entropic",
  **solver_kwargs,
) -> tuple[jax.Array, GMGInfo]:
  """Gromov-Monge Gap of a map on a batch: ``x [n, ...]`` and its image ``y = T(x) [n, ...]``.

  Jittable and differentiable in ``x`` and ``y``; never NaN (zero vectors, duplicated points,
  flat batches, tiny or huge ``epsilon_0`` and non-converged solves give finite values, and
  ``info.converged`` says whether the solve converged).

  Example:
    >>> x = jax.random.normal(jax.random.key(0), (64, 12))
    >>> gap, info = gromov_monge_gap(x, 3.0 * x, cost="cosine", epsilon_0=0.01)
    >>> # gap == info.entropic_gap < 0 (entropic bias); info.certified_gap ~ 0 (an isometry).

  Args:
    x: [n, ...] batch in the source space (flattened internally).
    y: [n, ...] its image under the map, same order.
    cost: "sqeuclidean", "scaled_sqeuclidean" or "cosine" (the same cost on both sides).
    epsilon_0: relative entropic regularization (see `scaled_epsilon`).
    epsilon_stat: statistic for the epsilon scaling: "mean", "max" or "std".
    epsilon: absolute epsilon; overrides the scaled rule when given.
    estimator: the value returned (and differentiated): "entropic" (default, the paper's
      ``DST - GW_eps``, can be negative) or "certified" (``0 <= gap <= info.distortion``); see
      the module docstring. ``info`` holds both (``entropic_gap``, ``certified_gap``).
    **solver_kwargs: solver and budget, see `entropic_gw_plan_with_stats`.

  Returns:
    ``(gap, info)``: the chosen estimator's value and the diagnostics.
  """
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x and y need the same batch size, got {x.shape[0]} and {y.shape[0]}.")
  # A side with few features (the codes) hands its cost matrix's factors to the solver.
  solver_kwargs.setdefault("factors_xx", solver_factors(x, cost))
  solver_kwargs.setdefault("factors_yy", solver_factors(y, cost))
  return gromov_monge_gap_from_costs(
    cost_matrix(x, cost),
    cost_matrix(y, cost),
    epsilon_0=epsilon_0,
    epsilon_stat=epsilon_stat,
    epsilon=epsilon,
    estimator=estimator,
    **solver_kwargs,
  )
