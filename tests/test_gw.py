"""Tests for gmg_jax.gw: the fused GW solver runs ott-jax's iterations and reports them honestly."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmg_jax import gmg, gw

N = 24


@functools.partial(jax.jit, static_argnames=("solver", "init", "budget"))
def _plan(cost_xx, cost_yy, epsilon, solver, init, budget=()):
  """`gmg.entropic_gw_plan_with_stats` (epsilon traced: one compile per solver, init, budget)."""
  return gmg.entropic_gw_plan_with_stats(
    cost_xx, cost_yy, epsilon, solver=solver, init=init, **dict(budget)
  )


def _problem(rng, kind, cost, dtype=np.float64, n=N):
  """Cost matrices of a random map, a structured one, or a shuffled rotation (GW = 0)."""
  x = rng.normal(size=(n, 6))
  if kind == "random":
    y = rng.normal(size=(n, 4))
  elif kind == "structured":
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 4))) + 0.05 * rng.normal(size=(n, 4))
  else:
    y = x[rng.permutation(n)] @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
  return gmg.cost_matrix(x.astype(dtype), cost), gmg.cost_matrix(y.astype(dtype), cost)


def _assert_same_solve(ours, theirs, plan_atol):
  plan, converged, iterations, epsilon, sinkhorn_iterations = ours
  np.testing.assert_allclose(plan, theirs[0], rtol=0, atol=plan_atol)
  assert bool(converged) == bool(theirs[1])
  assert int(iterations) == int(theirs[2])
  assert int(sinkhorn_iterations) == int(theirs[4])
  assert float(epsilon) == float(theirs[3])


# float64: the two solvers run the same iterations; only round-off separates the plans (measured
# <= 1e-14 / n on these problems). Each case converges after a different number of outer and
# Sinkhorn iterations (5 to 26 and 50 to 2,770 in float32, where the counts also agree).
@pytest.mark.parametrize("kind", ["random", "structured", "shuffled"])
@pytest.mark.parametrize("cost", ["cosine", "scaled_sqeuclidean"])
def test_fused_solver_runs_otts_iterations(rng, kind, cost, enable_x64):
  cost_xx, cost_yy = _problem(rng, kind, cost)
  scale = float(jnp.mean(cost_xx) * jnp.mean(cost_yy))
  for epsilon_0, init in ((0.1, "product"), (0.01, "identity")):
    epsilon = epsilon_0 * scale
    ours = _plan(cost_xx, cost_yy, epsilon, "fused", init)
    theirs = _plan(cost_xx, cost_yy, epsilon, "ott", init)
    assert bool(ours[1]) and int(ours[2]) >= 5
    _assert_same_solve(ours, theirs, plan_atol=1e-12 / N)


def test_fused_solver_matches_ott_in_float32_on_a_decoder_batch():
  # The trainer's setting (float32, 10-d codes -> positive pixels, n = 64): the same iterations,
  # plans within float32 round-off (measured max |diff| * n: 3e-7 at epsilon_0 0.1, 8e-4 at
  # 0.01, where the plan is nearly a matching) and gaps within 5e-6 of the distortion.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(64, 10)).astype(np.float32)
  pixels = jax.nn.sigmoid(np.tanh(x @ rng.normal(size=(10, 768))) * 2.0).astype(np.float32)
  gaps = {}
  for epsilon_0, init, plan_atol in ((0.1, "product", 1e-5), (0.01, "both", 2e-3)):
    for solver in gmg.SOLVERS:
      gaps[solver] = _gap(x, pixels, epsilon_0, solver, init)
    (gap, info), (gap_ott, info_ott) = gaps["fused"], gaps["ott"]
    assert bool(info.converged) and bool(info_ott.converged)
    assert int(info.iterations) == int(info_ott.iterations)
    assert int(info.sinkhorn_iterations) == int(info_ott.sinkhorn_iterations)
    np.testing.assert_allclose(gap, gap_ott, rtol=0, atol=2e-5 * float(info.distortion))
    np.testing.assert_allclose(info.gw_energy, info_ott.gw_energy, rtol=1e-4)
    cost_xx, cost_yy = gmg.cost_matrix(x, "cosine"), gmg.cost_matrix(pixels, "cosine")
    epsilon = jnp.float32(epsilon_0) * jnp.mean(cost_xx) * jnp.mean(cost_yy)
    plan = _plan(cost_xx, cost_yy, epsilon, "fused", init)[0]
    plan_ott = _plan(cost_xx, cost_yy, epsilon, "ott", init)[0]
    np.testing.assert_allclose(plan, plan_ott, rtol=0, atol=plan_atol / 64)


@functools.partial(jax.jit, static_argnames=("solver", "init"))
def _gap(x, y, epsilon_0, solver, init):
  return gmg.gromov_monge_gap(x, y, epsilon_0=epsilon_0, solver=solver, init=init)


@pytest.mark.parametrize(
  ("budget", "why"),
  [
    ((("sinkhorn_max_iterations", 20),), "Sinkhorn stops at its cap"),
    ((("max_iterations", 6), ("threshold", 1e-12)), "the GW rule is never met"),
  ],
)
def test_an_exhausted_budget_is_reported_as_ott_reports_it(rng, budget, why, enable_x64):
  cost_xx, cost_yy = _problem(rng, "structured", "scaled_sqeuclidean")
  epsilon = 0.01 * float(jnp.mean(cost_xx) * jnp.mean(cost_yy))
  ours = _plan(cost_xx, cost_yy, epsilon, "fused", "product", budget)
  theirs = _plan(cost_xx, cost_yy, epsilon, "ott", "product", budget)
  assert not bool(ours[1]), why
  if dict(budget).get("max_iterations") == 6:
    assert int(ours[2]) == 6
  _assert_same_solve(ours, theirs, plan_atol=1e-12 / N)


def test_warm_start_off_matches_ott(rng, enable_x64):
  cost_xx, cost_yy = _problem(rng, "structured", "cosine")
  epsilon = 0.03 * float(jnp.mean(cost_xx) * jnp.mean(cost_yy))
  budget = (("warm_start", False),)
  ours = _plan(cost_xx, cost_yy, epsilon, "fused", "product", budget)
  warm = _plan(cost_xx, cost_yy, epsilon, "fused", "product")
  # Cold starts cost Sinkhorn iterations (the reason warm starts are the default).
  assert int(ours[4]) > int(warm[4])
  _assert_same_solve(ours, _plan(cost_xx, cost_yy, epsilon, "ott", "product", budget), 1e-12 / N)


def test_vmapped_solves_equal_solves_one_at_a_time(rng, enable_x64):
  # Vmapped over K problems (a train step vmapped over replicas), each member stops at its own
  # iteration counts and returns its own plan: finished members are frozen, not iterated on.
  problems = [_problem(rng, kind, "cosine") for kind in ("random", "structured", "shuffled")]
  cost_xx = jnp.stack([p[0] for p in problems])
  cost_yy = jnp.stack([p[1] for p in problems])
  epsilon = 0.01 * jnp.mean(cost_xx, axis=(1, 2)) * jnp.mean(cost_yy, axis=(1, 2))
  start = jnp.full((N, N), 1.0 / N**2)
  batched = jax.jit(jax.vmap(lambda cx, cy, e: gw.solve(cx, cy, e, start)))(
    cost_xx, cost_yy, epsilon
  )
  single = jax.jit(lambda cx, cy, e: gw.solve(cx, cy, e, start))
  counts = set()
  for k in range(len(problems)):
    one = single(cost_xx[k], cost_yy[k], epsilon[k])
    np.testing.assert_allclose(batched.plan[k], one.plan, rtol=0, atol=1e-14)
    assert bool(batched.converged[k]) == bool(one.converged)
    assert int(batched.iterations[k]) == int(one.iterations)
    assert int(batched.sinkhorn_iterations[k]) == int(one.sinkhorn_iterations)
    counts.add(int(one.sinkhorn_iterations))
  assert len(counts) == len(problems)  # the members do differ in the work they need


@pytest.mark.parametrize("cost", sorted(gmg.COSTS))
def test_cost_factors_are_the_cost_matrix(rng, cost, enable_x64):
  z = rng.normal(size=(12, 3, 2))
  z[[2, 7]] = 0.0  # two zero vectors
  z[9] *= 1e-7  # |z|^2 below the cosine's floor
  left, right = gmg.cost_factors(z, cost)
  assert left.shape == right.shape == (12, 8)  # rank d + 2
  dense = gmg.cost_matrix(z, cost)
  np.testing.assert_allclose(left @ right.T, dense, rtol=0, atol=1e-12 * float(jnp.max(dense)))
  if cost == "cosine":  # the same point at 0, a zero vector at 1 from every nonzero vector
    assert float(dense[2, 7]) == 0.0
    # 1 as the centered distance of unit vectors computes it: to float64 round-off.
    np.testing.assert_allclose(np.delete(dense[2], [2, 7, 9]), 1.0, rtol=4e-16)


@jax.jit
def _factored_plan(cost_xx, cost_yy, epsilon, factors_xx, factors_yy):
  return gmg.entropic_gw_plan_with_stats(
    cost_xx, cost_yy, epsilon, init="both", factors_xx=factors_xx, factors_yy=factors_yy
  )


@pytest.mark.parametrize("sides", ["x", "y", "both"])
def test_factored_linearizations_run_the_same_solve(rng, sides, enable_x64):
  # The factors change how C_X P C_Y is computed, not the problem: the same iterations and plan.
  x = rng.normal(size=(N, 3))
  y = np.tanh(x @ rng.normal(size=(3, 2))) + 0.05 * rng.normal(size=(N, 2))
  for cost in gmg.COSTS:
    cost_xx, cost_yy = gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost)
    epsilon = 0.01 * float(jnp.mean(cost_xx) * jnp.mean(cost_yy))
    factors_xx = gmg.cost_factors(x, cost) if sides in ("x", "both") else None
    factors_yy = gmg.cost_factors(y, cost) if sides in ("y", "both") else None
    factored = _factored_plan(cost_xx, cost_yy, epsilon, factors_xx, factors_yy)
    dense = _plan(cost_xx, cost_yy, epsilon, "fused", "both")
    assert int(dense[2]) >= 5
    _assert_same_solve(factored, dense, plan_atol=1e-12 / N)


def test_the_gap_factors_the_codes_side_only():
  codes, images = jnp.ones((64, 10)), jnp.ones((64, 3, 16, 16))
  assert gmg.solver_factors(codes, "cosine") is not None
  assert gmg.solver_factors(images, "cosine") is None
  # Too few points for the codes' rank (12) to pay: 3 * 12 >= 2 * 16.
  assert gmg.solver_factors(codes[:16], "sqeuclidean") is None


def test_linearized_cost_is_twice_the_energy_at_the_plan(rng):
  # <L(P), P> = 2 E(P) (ott's linearization has no 1/2; ours has it in the energy).
  cost_xx, cost_yy = _problem(rng, "random", "sqeuclidean", np.float32, n=9)
  plan = rng.random((9, 9))
  plan = jnp.asarray(plan / plan.sum(), jnp.float32)
  np.testing.assert_allclose(
    jnp.sum(gw.linearized_cost(cost_xx, cost_yy, plan) * plan),
    2.0 * gmg.gw_energy(cost_xx, cost_yy, plan),
    rtol=1e-5,
  )


def test_solve_rejects_an_empty_budget():
  with pytest.raises(ValueError, match="inner_iterations"):
    gw.solve(jnp.ones((3, 3)), jnp.ones((3, 3)), 0.1, jnp.ones((3, 3)) / 9, inner_iterations=0)


@pytest.mark.parametrize("solver", gmg.SOLVERS)
def test_a_misspelled_budget_field_fails_for_both_solvers(solver):
  costs = jnp.ones((3, 3)) - jnp.eye(3)
  with pytest.raises(TypeError, match="max_iteration"):
    gmg.entropic_gw_plan(costs, costs, 0.1, solver=solver, max_iteration=5)


@pytest.mark.parametrize("solver", gmg.SOLVERS)
@pytest.mark.parametrize("cost", sorted(gmg.COSTS))
def test_every_product_of_the_gap_and_its_gradient_runs_at_full_float32_precision(cost, solver):
  """No TF32 on GPUs (jax's default there): every dot of the GMG value and its gradient, costs,
  solve (ours or ott's) and energies included, is lowered with HIGHEST precision (a
  backend-independent check)."""
  x = jax.random.normal(jax.random.key(0), (16, 48))
  y = jax.random.normal(jax.random.key(1), (16, 3))
  value = lambda x, y: gmg.gromov_monge_gap(x, y, cost=cost, solver=solver)[0]  # noqa: E731
  text = jax.jit(jax.value_and_grad(value, argnums=(0, 1))).lower(x, y).as_text()
  dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  assert len(dots) >= 10  # costs, forward and backward Gram, linearizations, Sinkhorn, energies
  assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), [
    line for line in dots if "HIGHEST" not in line
  ][:3]


def test_the_tf32_emulation_rounds_default_products_only():
  """`tests/tf32_emulation.py` (a plugin for finding TF32-sensitive code without a GPU) still
  rounds default-precision products to 10 mantissa bits and leaves full-precision ones alone."""
  script = """
import jax, jax.numpy as jnp, numpy as np
import tf32_emulation
a = jnp.asarray([[1.0 + 2.0**-12]], jnp.float32)
one = jnp.ones((1, 1), jnp.float32)
print(float((a @ one)[0, 0]) - 1.0)
print(float(jnp.matmul(a, one, precision=jax.lax.Precision.HIGHEST)[0, 0]) - 1.0)
with jax.default_matmul_precision("highest"):
  print(float(jax.jit(lambda a: a @ one)(a)[0, 0]) - 1.0)
print(float(tf32_emulation.to_tf32(jnp.float32(np.inf))))
print(float(tf32_emulation.to_tf32(1 + 2.0**-10 + 2.0**-11)))
print(float(jax.grad(lambda a: jnp.sum(a @ one))(a)[0, 0]))
"""
  env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.split()
  assert float(lines[0]) == 0.0  # 1 + 2^-12 needs 12 mantissa bits: rounded away.
  assert float(lines[1]) == float(lines[2]) == 2.0**-12
  assert float(lines[3]) == np.inf and float(lines[4]) == 1 + 2.0**-9  # Halfway rounds up.
  assert float(lines[5]) == 1.0  # Gradients pass through the rounding.
