"""Tests for gmg_jax.gmg: costs, distortion, entropic GW and the Gromov-Monge gap."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

from gmg_jax import gmg

COSTS = ("sqeuclidean", "scaled_sqeuclidean", "cosine")

# Jitted once per module with epsilon traced: tests on the same shapes and options share one
# compilation (compiling, not solving, is what these tests spend their time on).
_gap = jax.jit(gmg.gromov_monge_gap, static_argnames=("cost", "estimator", "init", "epsilon_stat"))
_plan = jax.jit(
  gmg.entropic_gw_plan,
  static_argnames=(
    "init",
    "solver",
    "max_iterations",
    "threshold",
    "sinkhorn_threshold",
    "sinkhorn_max_iterations",
  ),
)


def _rotation(rng, d):
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return q


def _brute_force_gw(cost_xx, cost_yy):
  """Exact GW energy (our 1/2 convention) by enumerating permutation couplings.

  For (scaled) squared Euclidean costs, both conditionally negative definite, the energy is
  concave on the transport polytope, so its minimum over all couplings is at a permutation.
  """
  n = cost_xx.shape[0]
  best = np.inf
  for perm in itertools.permutations(range(n)):
    diff = cost_xx - cost_yy[np.ix_(perm, perm)]
    best = min(best, 0.5 * np.mean(diff**2))
  return best


# ---------------------------------------------------------------------------- costs


def test_cost_matrices_against_loops(rng):
  x = rng.normal(size=(7, 3, 2)).astype(np.float32)
  x[2] = 0.0  # a zero vector under the cosine cost
  flat = x.reshape(7, -1)
  sq = np.array([[np.sum((a - b) ** 2) for b in flat] for a in flat])
  norms = np.maximum(np.linalg.norm(flat, axis=1), 1e-6)
  cos = np.array(
    [
      [1 - a @ b / (na * nb) for b, nb in zip(flat, norms, strict=True)]
      for a, na in zip(flat, norms, strict=True)
    ]
  )
  np.fill_diagonal(cos, 0.0)
  np.testing.assert_allclose(gmg.cost_matrix(x, "sqeuclidean"), sq, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    gmg.cost_matrix(x, "scaled_sqeuclidean"), sq / sq.mean(), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(gmg.cost_matrix(x, "cosine"), cos, rtol=1e-5, atol=1e-5)


def test_cost_matrices_of_a_flat_batch_keep_their_digits(rng):
  """A fresh decoder's outputs: 0.62 +- 2e-5 in every pixel. Squared distances ~1e-7 against
  squared norms ~25 (and 1 - cos ~1e-9): float32 must still give them to ~1%, not round-off."""
  y = np.asarray(jax.nn.sigmoid(0.5 + 1e-4 * rng.normal(size=(16, 64)).astype(np.float32)))
  flat = y.astype(np.float64)
  diff = flat[:, None, :] - flat[None, :, :]
  sq = np.sum(diff**2, axis=-1)
  unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
  cos = 0.5 * np.sum((unit[:, None, :] - unit[None, :, :]) ** 2, axis=-1)  # 1 - cos, exactly
  off = ~np.eye(16, dtype=bool)
  for cost, expected in (
    ("sqeuclidean", sq),
    ("scaled_sqeuclidean", sq / sq.mean()),
    ("cosine", cos),
  ):
    got = np.asarray(gmg.cost_matrix(y, cost), np.float64)
    np.testing.assert_allclose(got[off], expected[off], rtol=0.02, err_msg=cost)
    np.testing.assert_allclose(
      np.asarray(jax.jit(gmg.cost_matrix, static_argnums=1)(y, cost)), got, rtol=1e-3, err_msg=cost
    )
    left, right = gmg.cost_factors(y, cost)
    if cost != "cosine":  # The cosine's factors keep 1 - u.u (codes are never this flat).
      np.testing.assert_allclose((left @ right.T)[off], expected[off], rtol=0.02, err_msg=cost)


def test_unknown_cost_names_the_choices():
  with pytest.raises(ValueError, match="cosine"):
    gmg.cost_matrix(jnp.ones((3, 2)), "l1")


def test_gw_energy_of_identity_is_distortion_and_matches_quadruple_sum(rng):
  n = 5
  cx = gmg.cost_matrix(rng.normal(size=(n, 3)), "sqeuclidean")
  cy = gmg.cost_matrix(rng.normal(size=(n, 2)), "sqeuclidean")
  plan = rng.random((n, n))
  plan /= plan.sum()
  loops = 0.5 * sum(
    (cx[i, k] - cy[j, m]) ** 2 * plan[i, j] * plan[k, m]
    for i, j, k, m in itertools.product(range(n), repeat=4)
  )
  np.testing.assert_allclose(gmg.gw_energy(cx, cy, plan), loops, rtol=1e-5)
  np.testing.assert_allclose(
    gmg.gw_energy(cx, cy, jnp.eye(n) / n), gmg.distortion(cx, cy), rtol=1e-5
  )


def test_rounding_gives_an_exact_coupling_close_to_the_plan(rng):
  n = 12
  plan = np.full((n, n), 1.0 / n**2) * (1 + 1e-3 * rng.normal(size=(n, n)))
  plan[3] *= 1.01  # a row with excess mass
  rounded = np.asarray(gmg.round_to_coupling(jnp.asarray(plan)))
  np.testing.assert_allclose(rounded.sum(1), 1.0 / n, rtol=1e-5)
  np.testing.assert_allclose(rounded.sum(0), 1.0 / n, rtol=1e-5)
  assert rounded.min() >= 0 and np.abs(rounded - plan).sum() < 2e-2 * plan.sum()


# ---------------------------------------------------------------------------- GW solver


# Sinkhorn converges slowly where the entropic plan is nearly a permutation (entries ~1e-20),
# so each size gets an epsilon at which both solvers reach the tight tolerances below.
@pytest.mark.parametrize(("n", "epsilon"), [(8, 0.2), (16, 0.1), (32, 0.1), (64, 0.1)])
def test_entropic_gw_matches_pot(rng, n, epsilon, enable_x64):
  # ott at epsilon equals POT at 2 * epsilon (POT's inner Sinkhorn runs on twice the linearized
  # cost: ott 0.231012 at e / 2 vs POT 0.231010 at e); both energies without the 1/2.
  x, y = rng.normal(size=(n, 5)), np.tanh(rng.normal(size=(n, 3)))
  cx = np.asarray(gmg.cost_matrix(jnp.asarray(x), "scaled_sqeuclidean"))
  cy = np.asarray(gmg.cost_matrix(jnp.asarray(y), "scaled_sqeuclidean"))
  plan, converged, _, _ = _plan(
    cx,
    cy,
    epsilon,
    init="product",
    threshold=1e-8,
    sinkhorn_threshold=1e-9,
    max_iterations=500,
    sinkhorn_max_iterations=5000,
  )
  ours = 2.0 * float(gmg.gw_energy(cx, cy, plan))
  p = np.full(n, 1.0 / n)
  theirs = ot.gromov.entropic_gromov_wasserstein2(
    cx, cy, p, p, loss_fun="square_loss", epsilon=2 * epsilon, tol=1e-11, max_iter=1000
  )
  assert bool(converged)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_small_epsilon_recovers_a_planted_matching_like_brute_force(rng, enable_x64):
  # y is a rotated, permuted, slightly noisy copy of x: the exact GW optimum is the
  # permutation, found by brute force; the solver at small epsilon must reach its value.
  n = 6
  for _ in range(3):
    x = rng.normal(size=(n, 3))
    perm = rng.permutation(n)
    y = x[perm] @ _rotation(rng, 3) + 0.01 * rng.normal(size=(n, 3))
    cx = np.asarray(gmg.cost_matrix(jnp.asarray(x), "scaled_sqeuclidean"))
    cy = np.asarray(gmg.cost_matrix(jnp.asarray(y), "scaled_sqeuclidean"))
    plan, _, _, _ = _plan(
      cx,
      cy,
      1e-3,
      threshold=1e-9,
      sinkhorn_threshold=1e-10,
      max_iterations=300,
      sinkhorn_max_iterations=20000,
    )
    # Entropic optimality: E(P_eps) + eps KL(P_eps) <= E(P*) + eps KL(P*), and
    # 0 <= KL <= log n, so E* <= E(P_eps) <= E* + eps log n.
    exact, energy = _brute_force_gw(cx, cy), float(gmg.gw_energy(cx, cy, plan))
    assert exact - 1e-12 <= energy <= exact + 1e-3 * np.log(n)
    # The plan is the planted permutation: x_i is matched to y_{perm^-1(i)}.
    np.testing.assert_array_equal(np.argmax(plan, axis=1), np.argsort(perm))


@jax.jit
def _gap_from_costs(cost_xx, cost_yy, epsilon_0):
  return gmg.gromov_monge_gap_from_costs(
    cost_xx, cost_yy, epsilon_0=epsilon_0, estimator="certified"
  )


def test_solver_energy_never_beats_the_exact_optimum(rng, enable_x64):
  n = 6
  for _ in range(4):
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    cx = np.asarray(gmg.cost_matrix(jnp.asarray(x), "sqeuclidean"))
    cy = np.asarray(gmg.cost_matrix(jnp.asarray(y), "sqeuclidean"))
    exact = _brute_force_gw(cx, cy)
    gap, info = _gap_from_costs(cx, cy, 1e-3)
    assert float(info.gw_energy) >= exact * (1 - 1e-6)
    # The certified gap never exceeds the exact GMG, DST - GW_exact.
    assert float(gap) <= float(info.distortion) - exact + 1e-9


# ---------------------------------------------------------------------------- the certified gap


def _isometric_images(rng, x, cost):
  q = _rotation(rng, x.shape[1])
  if cost == "sqeuclidean":
    return x @ q + 3.0  # rotation + translation
  if cost == "scaled_sqeuclidean":
    return 2.5 * x @ q - 1.0  # + global scale
  return 0.3 * x @ q  # cosine: scaling and rotation, no translation


@pytest.mark.parametrize("cost", COSTS)
def test_gap_of_an_isometry_is_zero(rng, cost):
  x = rng.normal(size=(64, 12)).astype(np.float32)
  y = _isometric_images(rng, x, cost).astype(np.float32)
  f = functools.partial(_gap, cost=cost, estimator="certified")
  # The gap is bounded by the distortion, which for an isometry is float32 round-off of the
  # cost matrices (relative 1e-6 of the squared cost scale). The entropic bias never enters
  # the value (module docstring): no epsilon-sized tolerance is needed.
  scale = float(jnp.mean(gmg.cost_matrix(x, cost))) ** 2
  for epsilon_0 in (0.003, 0.01, 0.1):
    gap, info = f(x, y, epsilon_0=epsilon_0)
    assert 0.0 <= float(gap) <= float(info.distortion) <= 1e-5 * scale


@pytest.mark.parametrize("cost", COSTS)
def test_gap_of_a_tearing_map_is_its_distortion(rng, cost):
  # A map that shuffles the batch onto itself: the image cloud is isometric to the source,
  # so GW = 0, while the map's own coupling has a large distortion: GMG = DST > 0.
  x = rng.normal(size=(64, 12)).astype(np.float32)
  y = x[rng.permutation(64)]
  gap, info = _gap(x, y, cost=cost, epsilon_0=0.003, estimator="certified")
  assert float(info.distortion) > 0.05 * float(jnp.mean(gmg.cost_matrix(x, cost))) ** 2
  np.testing.assert_allclose(gap, info.distortion, rtol=2e-2)


@pytest.mark.parametrize("cost", COSTS)
def test_gap_is_between_zero_and_distortion_on_random_maps(rng, cost):
  f = functools.partial(_gap, cost=cost, estimator="certified")
  positive = 0
  for seed in range(6):
    x = rng.normal(size=(48, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    y = np.tanh(x @ w * (seed + 1) / 3) + 0.2 * rng.normal(size=(48, 4)).astype(np.float32)
    for epsilon_0 in (0.003, 0.01, 0.1):
      gap, info = f(x, y, epsilon_0=epsilon_0)
      assert 0.0 <= float(gap) <= float(info.distortion)
      assert float(info.gw_energy) + float(gap) >= float(info.distortion) * (1 - 1e-6)
      positive += float(gap) > 0
  assert positive >= 6  # the small-epsilon solves find couplings better than the map's own


def test_near_isometry_at_small_epsilon_is_non_negative(rng):
  # Where a naive DST - E(P_eps) goes negative (E(P_eps) upper-bounds GW, so on near-isometries
  # DST - E(P_eps) measured -0.03 to -0.007), the gap stays >= 0.
  x = rng.normal(size=(64, 12)).astype(np.float32)
  y = x @ _rotation(rng, 12) + 1e-3 * rng.normal(size=(64, 12)).astype(np.float32)
  for epsilon_0 in (0.003, 0.01, 0.03):
    # From the product coupling the entropic plan stays blurred: the naive gap is negative.
    gap, info = _gap(
      x, y, cost="cosine", epsilon_0=epsilon_0, init="product", estimator="certified"
    )
    assert float(info.distortion) - float(info.gw_energy) < 0  # the naive gap's sign
    assert float(gap) == 0.0 and bool(info.identity_won)
    # The default also starts from I/n and lands next to it: the gap is at round-off level.
    gap, info = _gap(x, y, cost="cosine", epsilon_0=epsilon_0, estimator="certified")
    assert 0.0 <= float(gap) <= float(info.distortion) < 1e-5


# ---------------------------------------------------------------------------- the estimators


@functools.partial(jax.jit, static_argnames=("estimator",))
def _estimator_value(x, y, epsilon_0, estimator):
  """``(value, info)`` of one estimator on a float32 batch (epsilon_0 traced)."""
  return gmg.gromov_monge_gap(
    x, y, cost="scaled_sqeuclidean", epsilon_0=epsilon_0, estimator=estimator
  )


@jax.jit
def _plan_by_hand(x, y, epsilon_0):
  """The plan and epsilon `gromov_monge_gap` solves for, from the module's public pieces."""
  cost_xx = gmg.cost_matrix(x, "scaled_sqeuclidean")
  cost_yy = gmg.cost_matrix(y, "scaled_sqeuclidean")
  epsilon = gmg.scaled_epsilon(cost_xx, cost_yy, epsilon_0)
  plan, _, _, epsilon = gmg.entropic_gw_plan(cost_xx, cost_yy, epsilon)
  return plan, epsilon


@pytest.mark.parametrize("batch", ["random", "structured"])
def test_each_estimator_returns_its_own_value(rng, batch):
  # ott's monge_gap_from_samples returns the value it trains; so does gromov_monge_gap.
  n = 32
  x = rng.normal(size=(n, 8)).astype(np.float32)
  if batch == "random":
    y = rng.normal(size=(n, 4)).astype(np.float32)  # a map that ignores x
  else:
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 4))) + 0.05 * rng.normal(size=(n, 4))
    y = y.astype(np.float32)
  for epsilon_0 in (0.01, 0.1):
    entropic, info = _estimator_value(x, y, epsilon_0, "entropic")
    certified, info_certified = _estimator_value(x, y, epsilon_0, "certified")
    # One solve: the diagnostics do not depend on the estimator.
    for a, b in zip(info, info_certified, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6)
    plan, epsilon = _plan_by_hand(x, y, epsilon_0)
    plan = np.asarray(plan, np.float64)
    kl = np.sum(plan * np.log(np.where(plan > 0, plan, 1.0) * n * n)) - np.sum(plan) + 1.0
    np.testing.assert_allclose(info.epsilon, epsilon, rtol=1e-6)
    dst, energy = float(info.distortion), float(info.gw_energy)
    scale = dst + energy + float(epsilon) * kl  # the terms that cancel in the value
    np.testing.assert_allclose(entropic, dst - (energy + float(epsilon) * kl), atol=1e-5 * scale)
    np.testing.assert_allclose(info.entropic_gap, entropic, rtol=1e-6)
    assert float(certified) == float(info.certified_gap)
    np.testing.assert_allclose(certified, dst - min(dst, energy), rtol=1e-6, atol=1e-7 * scale)
    assert 0.0 <= float(certified) <= dst
    # certified - entropic = E - min(DST, E) + epsilon KL >= epsilon KL >= 0.
    assert float(certified) - float(entropic) >= float(epsilon) * kl - 1e-5 * scale
    if epsilon_0 == 0.1:  # a non-isometry at a blurred plan: the two values differ
      assert float(certified) - float(entropic) > 0.1 * dst, (batch, certified, entropic)


_FD_SOLVER = dict(
  cost="scaled_sqeuclidean",
  threshold=1e-10,
  sinkhorn_threshold=1e-12,
  max_iterations=1000,
  sinkhorn_max_iterations=20000,
)


@functools.partial(jax.jit, static_argnames=("estimator",))
def _fd_value_and_grad(y, x, epsilon, estimator):
  """``((value, info), (d value / d y, d value / d x))`` at the tolerances that FD needs."""

  def value(y, x):
    return gmg.gromov_monge_gap(x, y, epsilon=epsilon, estimator=estimator, **_FD_SOLVER)

  return jax.value_and_grad(value, argnums=(0, 1), has_aux=True)(y, x)


def _fd_batch():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(16, 5))
  y = np.tanh(x @ rng.normal(size=(5, 3))) + 0.3 * rng.normal(size=(16, 3))
  return rng, x, y


def _assert_matches_central_differences(grad_y, value_fn, y, rng, h=1e-5, directions=3):
  """``<grad_y, v>`` equals the central difference of ``value_fn`` along random ``v``."""
  for _ in range(directions):
    v = rng.normal(size=y.shape)
    fd = (value_fn(y + h * v) - value_fn(y - h * v)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(grad_y * v)), float(fd), rtol=1e-4, atol=1e-8)


def test_gradient_is_the_exact_gradient_of_the_entropic_gap(enable_x64):
  # Envelope theorem: grad(gap) equals the derivative of DST - (E + eps KL) at fixed epsilon.
  rng, x, y = _fd_batch()
  (gap, info), (grad_y, grad_x) = _fd_value_and_grad(y, x, 0.02, "entropic")
  assert float(info.certified_gap) > 0  # the solver's plan beats the map's own coupling

  def entropic_gap(y):
    return _fd_value_and_grad(y, x, 0.02, "entropic")[0][1].entropic_gap

  _assert_matches_central_differences(grad_y, entropic_gap, y, rng)

  # The inputs' side too: the trainer's step uses d gap / d x on the encoder (x = images).
  def entropic_gap_of_x(x_):
    return _fd_value_and_grad(y, x_, 0.02, "entropic")[0][1].entropic_gap

  _assert_matches_central_differences(grad_x, entropic_gap_of_x, x, rng)


# epsilon = 0.02: the plan beats I/n; 2.0: the plan is ~the product coupling and I/n wins. The
# entropic estimator at 0.02 is the test above.
@pytest.mark.parametrize(
  ("estimator", "epsilon"), [("entropic", 2.0), ("certified", 0.02), ("certified", 2.0)]
)
def test_gradient_of_each_estimator_against_finite_differences(enable_x64, estimator, epsilon):
  rng, x, y = _fd_batch()
  (value, info), (grad_y, _) = _fd_value_and_grad(y, x, epsilon, estimator)
  assert bool(info.identity_won) == (epsilon == 2.0)

  def value_of(name):
    return lambda y: getattr(_fd_value_and_grad(y, x, epsilon, estimator)[0][1], name)

  if estimator == "entropic":
    np.testing.assert_allclose(value, info.entropic_gap, rtol=1e-12)
    _assert_matches_central_differences(grad_y, value_of("entropic_gap"), y, rng, directions=2)
  elif bool(info.identity_won):
    # The certified gap is 0 near y, and so is its gradient: the regularizer does nothing.
    assert float(value) == 0.0 and float(jnp.abs(grad_y).max()) == 0.0
    _assert_matches_central_differences(grad_y, value_of("certified_gap"), y, rng, directions=2)
  else:
    # Where the plan won, the certified estimator's gradient is the envelope gradient, the
    # entropic value's exact gradient (it differs from the certified value's by eps dKL/dy).
    np.testing.assert_allclose(value, info.certified_gap, rtol=1e-12)
    _assert_matches_central_differences(grad_y, value_of("entropic_gap"), y, rng, directions=2)


@pytest.mark.parametrize("cost", COSTS)
def test_gradient_of_distortion_matches_finite_differences(cost, enable_x64):
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))

  def dst(y):
    return gmg.distortion(gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost))

  g = jax.grad(dst)(jnp.asarray(y))
  v = rng.normal(size=y.shape)
  h = 1e-6
  fd = (dst(y + h * v) - dst(y - h * v)) / (2 * h)
  np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=1e-6)


# ---------------------------------------------------------------------------- robustness


@functools.partial(jax.jit, static_argnames=("cost", "max_iterations", "sinkhorn_max_iterations"))
def _value_and_grad(x, y, epsilon_0, **kwargs):
  """Entropic gap, info and gradients w.r.t. (x, y); one compilation per cost and budget."""
  fn = lambda x, y: gmg.gromov_monge_gap(x, y, epsilon_0=epsilon_0, **kwargs)  # noqa: E731
  return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(x, y)


def _assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf, dtype=np.float64))), tree


@pytest.mark.parametrize("cost", COSTS)
def test_no_nan_on_degenerate_inputs(rng, cost):
  n = 32
  x = rng.normal(size=(n, 10)).astype(np.float32)
  y = rng.normal(size=(n, 64)).astype(np.float32)
  cases = {
    "all zero": np.zeros_like(y),
    "zero rows": np.concatenate([np.zeros((5, 64), np.float32), y[5:]]),
    "duplicated points": np.concatenate([y[: n // 2], y[: n // 2]]),
    "all equal": np.ones_like(y),
    # A freshly initialized decoder's sigmoid outputs: all ~0.5, mean cost ~7e-6.
    "flat sigmoid": jax.nn.sigmoid(0.5 + 1e-4 * y),
  }
  for name, y_case in cases.items():
    for epsilon_0 in (1e-6, 0.01, 1e6):
      (gap, info), grads = _value_and_grad(x, y_case, epsilon_0, cost=cost)
      _assert_finite((gap, info, grads))
      assert float(info.certified_gap) >= 0.0, name


def test_flat_side_converges_with_the_paper_epsilon(rng):
  # The rule's absolute epsilon collapses (~1e-6) on a flat side; the normalized solve keeps it
  # at epsilon_0 relative to the costs and converges (an early prototype's epsilon fell to ~6e-7
  # here, Sinkhorn diverged and the parameters were NaN after one step).
  x = rng.normal(size=(32, 10)).astype(np.float32)
  y = jax.nn.sigmoid(0.5 + 1e-4 * rng.normal(size=(32, 64)).astype(np.float32))
  for cost in COSTS:
    cx, cy = gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost)
    (gap, info), grads = _value_and_grad(x, y, 0.01, cost=cost)
    np.testing.assert_allclose(info.epsilon, 0.01 * jnp.mean(cx) * jnp.mean(cy), rtol=1e-5)
    assert bool(info.converged), cost
    _assert_finite((gap, info, grads))


def test_plan_is_invariant_to_the_scale_of_each_space(rng):
  # Squared Euclidean and its mean-normalized version pose the same GW problem under the mean
  # rule, even when the two spaces' distances differ by 100x: same plan, and the gap scales by
  # mean(C_X) * mean(C_Y).
  x = rng.normal(size=(48, 8)).astype(np.float32)
  # 4-d images: the shapes of the random-map test (one compilation per cost).
  y = 100.0 * np.tanh(x[:, :4] @ rng.normal(size=(4, 4)).astype(np.float32)) ** 3
  cx, cy = gmg.cost_matrix(x, "sqeuclidean"), gmg.cost_matrix(y, "sqeuclidean")
  assert float(jnp.mean(cy) / jnp.mean(cx)) > 100
  gap_raw, info_raw = _gap(x, y, cost="sqeuclidean", epsilon_0=0.01, estimator="certified")
  gap_scl, info_scl = _gap(x, y, cost="scaled_sqeuclidean", epsilon_0=0.01, estimator="certified")
  assert bool(info_raw.converged) and bool(info_scl.converged)
  assert int(info_raw.iterations) == int(info_scl.iterations)
  np.testing.assert_allclose(info_raw.plan_entropy_ratio, info_scl.plan_entropy_ratio, rtol=1e-3)
  assert float(gap_scl) > 0
  np.testing.assert_allclose(gap_raw, gap_scl * jnp.mean(cx) * jnp.mean(cy), rtol=2e-2)


def test_non_converged_solve_is_reported_and_finite(rng):
  x = rng.normal(size=(32, 10)).astype(np.float32)
  y = np.tanh(rng.normal(size=(32, 6))).astype(np.float32)
  (gap, info), grads = _value_and_grad(
    x, y, 1e-3, cost="cosine", max_iterations=5, sinkhorn_max_iterations=3
  )
  assert not bool(info.converged)
  assert int(info.iterations) == 5
  _assert_finite((gap, info, grads))


# ---------------------------------------------------------------------------- jit


@pytest.mark.parametrize("cost", COSTS)
def test_jit_equals_eager(rng, cost):
  x = rng.normal(size=(24, 6)).astype(np.float32)
  y = np.sin(x[:, :3] * 2).astype(np.float32)
  eager = gmg.gromov_monge_gap(x, y, cost=cost, epsilon_0=0.01)
  jitted = jax.jit(lambda x, y: gmg.gromov_monge_gap(x, y, cost=cost, epsilon_0=0.01))(x, y)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compiles_once_across_batches(rng):
  traces = 0

  @jax.jit
  def loss(x, y):
    nonlocal traces
    traces += 1
    return jax.value_and_grad(lambda y: gmg.gromov_monge_gap(x, y, epsilon_0=0.01)[0])(y)

  for _ in range(4):
    x = rng.normal(size=(16, 5)).astype(np.float32)
    loss(x, np.tanh(x[:, :2] + rng.normal(size=(16, 2)).astype(np.float32)))
  assert traces == 1
