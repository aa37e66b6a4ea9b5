"""Entropic Gromov-Wasserstein in one fused loop: the iterations of ott-jax's solver, made cheap.

`solve` runs the algorithm of ott-jax 0.6.0's
``GromovWasserstein(Sinkhorn(lse_mode=True), warm_start=...)`` (Peyre et al. 2016; balanced,
square loss, uniform weights) step for step, and differs in how the steps are executed:

* One ``while_loop`` over Sinkhorn *blocks* of ``inner_iterations`` iterations; a block that ends
  a Sinkhorn solve (marginal error below tolerance, or its iteration cap) also re-linearizes the
  GW cost. ott nests a Sinkhorn ``while_loop`` in the GW one. Under ``vmap`` (several starts, or
  a train step vmapped over replicas) a nested loop costs the sum over outer iterations of the
  slowest member's inner count, with every member's body computed; the flat loop costs the
  slowest member's total count of blocks.
* Each block does one log-domain iteration (ott's update, exact whatever the potentials), which
  leaves a kernel ``K = exp((f + g - C) / epsilon)`` whose rows sum exactly to ``a`` and whose
  columns sum to at least ``b_j / n``; the block's other iterations are kernel-domain scalings
  ``v = b / K^T u``, ``u = a / K v`` (matrix-vector products, no ``exp``), absorbed back into
  the potentials at the end of the block. In exact arithmetic these are the same iterations; a
  block whose scalings overflow keeps the log-domain iteration's potentials instead.
* The stopping rules are ott's: a Sinkhorn solve stops when the L1 error of its column marginal,
  checked after each block, is below ``sinkhorn_threshold``, or after
  ``sinkhorn_max_iterations``; the GW loop stops after at least ``min_iterations`` outer
  iterations when two successive regularized linear costs agree to ``threshold`` (relative), or
  after ``max_iterations``. The budget is bounded: at most ``(max_iterations + 1) *
  ceil(sinkhorn_max_iterations / inner_iterations)`` blocks.

``converged`` is true only when the GW rule stopped the loop and every Sinkhorn solve of the
outer iterations met its tolerance (ott's definition); ``iterations`` counts outer iterations as
ott does (the initial solve at the start coupling is not one).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# Every product of the GW core (here and the costs and energies of `gmg_jax.gmg`) runs at full
# float32 precision on every backend. jax's default lets float32 products use TF32 (a 10-bit
# mantissa) on GPUs, and the core cannot afford it: the costs' Gram expansion
# |x|^2 + |y|^2 - 2 x.y and the GW energy are differences of large terms. The products are
# small (n^2 d for the costs, n^3 in the loop), so this costs little; on CPUs it changes nothing.
PRECISION = jax.lax.Precision.HIGHEST


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` at `PRECISION`."""
  return jnp.matmul(a, b, precision=PRECISION)


class GWResult(NamedTuple):
  """Output of `solve` (no gradient flows through any of it).

  Attributes:
    plan: [n, m] the last Sinkhorn plan (marginals within the tolerance, not rounded).
    converged: the GW rule stopped the loop and every outer Sinkhorn solve converged.
    iterations: outer GW iterations run.
    sinkhorn_iterations: Sinkhorn iterations of the outer iterations (the initial solve at the
      start coupling not counted, as ``iterations``).
  """

  plan: jax.Array
  converged: jax.Array
  iterations: jax.Array
  sinkhorn_iterations: jax.Array


class _State(NamedTuple):
  cost: jax.Array  # [n, m] the current linearization of the GW energy
  f: jax.Array  # [n] potentials of the current Sinkhorn solve
  g: jax.Array  # [m]
  plan: jax.Array  # [n, m] the plan of (f, g, cost)
  inner: jax.Array  # Sinkhorn iterations in the current solve
  sinkhorn_iterations: jax.Array  # in the outer iterations
  outer: jax.Array  # finished outer iterations; -1 while the initial solve runs
  last_costs: jax.Array  # [2] the last two outer iterations' regularized linear costs
  inner_ok: jax.Array  # every outer Sinkhorn solve so far met its tolerance
  done: jax.Array
  converged: jax.Array


class Factors(NamedTuple):
  """A symmetric cost matrix of low rank r as ``left @ right.T`` (`gmg_jax.costs.cost_factors`).

  The linearization's product ``C_X P C_Y`` costs ``2 n^3`` with dense matrices and ``3 r n^2``
  through the factors of one side: at n = 256 with 10-dim codes (r = 12), 14x fewer flops. The
  factors must equal the dense matrix up to round-off (the dense one's zero diagonal and its
  clip at 0 included), so the solve is the same problem.
  """

  left: jax.Array  # [n, r]
  right: jax.Array  # [n, r]


def _cross(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  plan: jax.Array,
  factors_xx: Factors | None,
  factors_yy: Factors | None,
) -> jax.Array:
  """``C_X P C_Y``, through the factors of the sides that have them."""
  if factors_xx is not None:
    t = matmul(factors_xx.right.T, plan)  # [r, m]
    if factors_yy is not None:
      t = matmul(matmul(t, factors_yy.left), factors_yy.right.T)
    else:
      t = matmul(t, cost_yy)
    return matmul(factors_xx.left, t)
  if factors_yy is not None:
    return matmul(matmul(cost_xx, matmul(plan, factors_yy.left)), factors_yy.right.T)
  return matmul(matmul(cost_xx, plan), cost_yy)


def linearized_cost(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  plan: jax.Array,
  factors_xx: Factors | None = None,
  factors_yy: Factors | None = None,
) -> jax.Array:
  """ott's linearization of the GW energy (no 1/2) at a plan, with the plan's own marginals.

  Args:
    cost_xx: [n, n] symmetric source costs.
    cost_yy: [m, m] symmetric target costs.
    plan: [n, m] coupling.
    factors_xx: `Factors` of ``cost_xx`` (optional; used for the n^3 product).
    factors_yy: `Factors` of ``cost_yy`` (optional).

  Returns:
    [n, m] ``C_X^2 p 1^T + 1 (C_Y^2 q)^T - 2 C_X P C_Y`` (squares elementwise).
  """
  p, q = jnp.sum(plan, axis=1), jnp.sum(plan, axis=0)
  return (
    matmul(cost_xx**2, p)[:, None]
    + matmul(cost_yy**2, q)[None, :]
    - 2.0 * _cross(cost_xx, cost_yy, plan, factors_xx, factors_yy)
  )


def _sinkhorn_block(
  cost: jax.Array,
  f: jax.Array,
  g: jax.Array,
  epsilon: jax.Array,
  iterations: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """``iterations`` Sinkhorn iterations (g then f, as ott), the first in the log domain.

  Returns:
    ``(f, g, plan, column error (L1), regularized linear cost)``.
  """
  n, m = cost.shape
  a = jnp.full((n,), 1.0 / n, cost.dtype)
  b = jnp.full((m,), 1.0 / m, cost.dtype)
  log_a, log_b = jnp.log(a), jnp.log(b)
  g = epsilon * log_b - epsilon * jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0)
  z = (g[None, :] - cost) / epsilon
  # The f update's logsumexp and the kernel share one exp pass.
  top = jnp.max(z, axis=1, keepdims=True)
  shifted = jnp.exp(z - top)
  total = jnp.sum(shifted, axis=1, keepdims=True)
  f = epsilon * log_a - epsilon * (top + jnp.log(total))[:, 0]
  # exp((f + g - C) / epsilon): rows sum to a exactly, entries <= a_i, no overflow.
  kernel = (a[:, None] / total) * shifted
  # The transpose materialized once, outside the loop: a product with ``kernel.T`` inside it
  # contracts the kernel's rows, 5x slower on CPU than a product with a row-major matrix.
  kernel_t = kernel.T

  def scaling(_, uv: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    v = b / matmul(kernel_t, uv[0])
    return a / matmul(kernel, v), v

  # A loop, not an unrolled one: the same speed here, and a third less compile time.
  u, v = jax.lax.fori_loop(0, iterations - 1, scaling, (jnp.ones_like(a), jnp.ones_like(b)))
  scaled = u[:, None] * kernel * v[None, :]
  ok = jnp.all(jnp.isfinite(u)) & jnp.all(jnp.isfinite(v)) & jnp.all(u > 0) & jnp.all(v > 0)
  f = jnp.where(ok, f + epsilon * jnp.log(jnp.where(ok, u, 1.0)), f)
  g = jnp.where(ok, g + epsilon * jnp.log(jnp.where(ok, v, 1.0)), g)
  plan = jnp.where(ok, scaled, kernel)
  columns = jnp.sum(plan, axis=0)
  error = jnp.sum(jnp.abs(columns - b))
  # ott's regularized cost of a balanced solve: <a, f - eps log a> + <b, g - eps log b>
  # + eps (1 - total mass).
  reg_cost = (
    jnp.sum(a * (f - epsilon * log_a))
    + jnp.sum(b * (g - epsilon * log_b))
    + epsilon * (1.0 - jnp.sum(columns))
  )
  return f, g, plan, error, reg_cost


class Budget(NamedTuple):
  """The solve's iteration budget and stopping rules (module docstring), and their defaults for
  every caller (`gmg_jax.gmg`, the evaluation's plan pictures; the config states the same values).

  Attributes:
    max_iterations: outer GW iterations cap.
    min_iterations: outer GW iterations before the GW rule is checked.
    threshold: relative tolerance of the GW rule.
    sinkhorn_max_iterations: Sinkhorn iterations cap per solve.
    sinkhorn_threshold: L1 tolerance on the Sinkhorn plan's column marginal (below 1e-5 it never
      converges in float32).
    inner_iterations: Sinkhorn iterations per block (between two error checks).
    warm_start: start each Sinkhorn solve from the previous one's potentials (else from 0).
  """

  max_iterations: int = 50
  min_iterations: int = 5
  threshold: float = 1e-3
  sinkhorn_max_iterations: int = 1000
  sinkhorn_threshold: float = 1e-3
  inner_iterations: int = 10
  warm_start: bool = True


def solve(
  cost_xx: jax.Array,
  cost_yy: jax.Array,
  epsilon: jax.Array | float,
  init_coupling: jax.Array,
  *,
  factors_xx: Factors | None = None,
  factors_yy: Factors | None = None,
  **budget: Any,
) -> GWResult:
  """Entropic GW between two cost matrices, uniform weights (module docstring).

  Args:
    cost_xx: [n, n] symmetric source costs (detached; best mean-normalized).
    cost_yy: [m, m] symmetric target costs.
    epsilon: absolute entropic regularization (ott's convention).
    init_coupling: [n, m] coupling the first linearization is taken at.
    factors_xx: `Factors` of ``cost_xx`` for a side of low rank (detached): the linearizations'
      ``n^3`` product then costs ``O(n^2 r)``. Same iterations and plan up to round-off.
    factors_yy: `Factors` of ``cost_yy``.
    **budget: fields of `Budget` (the others keep its defaults).

  Returns:
    `GWResult`.

  Raises:
    TypeError: a keyword that is not a field of `Budget`.
    ValueError: max_iterations or inner_iterations < 1.
  """
  budget = Budget(**budget)
  if budget.max_iterations < 1 or budget.inner_iterations < 1:
    raise ValueError(
      f"max_iterations and inner_iterations must be >= 1, got {budget.max_iterations} and "
      f"{budget.inner_iterations}."
    )
  cost_xx, cost_yy, factors_xx, factors_yy = jax.lax.stop_gradient(
    (cost_xx, cost_yy, factors_xx, factors_yy)
  )
  epsilon = jax.lax.stop_gradient(jnp.asarray(epsilon, cost_xx.dtype))

  def linearize(plan: jax.Array) -> jax.Array:
    return linearized_cost(cost_xx, cost_yy, plan, factors_xx, factors_yy)

  n, m = cost_xx.shape[0], cost_yy.shape[0]
  dtype = cost_xx.dtype
  blocks_per_solve = math.ceil(budget.sinkhorn_max_iterations / budget.inner_iterations)
  max_blocks = (budget.max_iterations + 1) * blocks_per_solve

  def cond(carry: tuple[jax.Array, _State]) -> jax.Array:
    blocks, state = carry
    return jnp.logical_and(blocks < max_blocks, jnp.logical_not(state.done))

  def body(carry: tuple[jax.Array, _State]) -> tuple[jax.Array, _State]:
    blocks, s = carry
    f, g, plan, error, reg_cost = _sinkhorn_block(
      s.cost, s.f, s.g, epsilon, budget.inner_iterations
    )
    inner = s.inner + budget.inner_iterations
    solve_ok = error < budget.sinkhorn_threshold
    # ott stops a solve on a non-finite error too (diverged).
    finished = solve_ok | (inner >= budget.sinkhorn_max_iterations) | ~jnp.isfinite(error)
    is_outer = s.outer >= 0
    record = finished & is_outer
    last_costs = jnp.where(record, jnp.stack([s.last_costs[1], reg_cost]), s.last_costs)
    outer = jnp.where(finished, s.outer + 1, s.outer)
    inner_ok = jnp.where(record, s.inner_ok & solve_ok, s.inner_ok)
    # ott's GW rule, checked before each outer iteration once `outer` have run.
    settled = (outer > 2) & jnp.isclose(last_costs[0], last_costs[1], rtol=budget.threshold)
    diverged = (outer > 2) & ~jnp.isfinite(last_costs[1])
    stop_rule = (outer >= budget.min_iterations) & (settled | diverged)
    stop = finished & ((outer >= budget.max_iterations) | stop_rule)
    relinearize = finished & ~stop

    def next_solve(operands: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
      plan, f, g = operands
      cost = linearize(plan)
      if not budget.warm_start:
        f, g = jnp.zeros_like(f), jnp.zeros_like(g)
      return cost, f, g

    cost, f, g = jax.lax.cond(
      relinearize, next_solve, lambda ops: (s.cost, ops[1], ops[2]), (plan, f, g)
    )
    state = _State(
      cost=cost,
      f=f,
      g=g,
      plan=plan,
      inner=jnp.where(finished, 0, inner),
      sinkhorn_iterations=s.sinkhorn_iterations + jnp.where(is_outer, budget.inner_iterations, 0),
      outer=outer,
      last_costs=last_costs,
      inner_ok=inner_ok,
      done=stop,
      converged=stop & stop_rule & ~diverged & inner_ok,
    )
    return blocks + 1, state

  init_coupling = jax.lax.stop_gradient(init_coupling).astype(dtype)
  state = _State(
    cost=linearize(init_coupling),
    f=jnp.zeros((n,), dtype),
    g=jnp.zeros((m,), dtype),
    plan=init_coupling,
    inner=jnp.zeros((), jnp.int32),
    sinkhorn_iterations=jnp.zeros((), jnp.int32),
    outer=jnp.full((), -1, jnp.int32),
    last_costs=jnp.full((2,), -1.0, dtype),
    inner_ok=jnp.ones((), bool),
    done=jnp.zeros((), bool),
    converged=jnp.zeros((), bool),
  )
  _, state = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state))
  return GWResult(
    plan=state.plan,
    converged=state.converged,
    iterations=jnp.maximum(state.outer, 0),
    sinkhorn_iterations=state.sinkhorn_iterations,
  )
