"""Tests for gmg_jax.losses.regularizers: the shared slot for GMG, DST and the Jacobian penalty."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gmg_jax import gmg
from gmg_jax.losses import regularizers


def _config(**fields):
  return ml_collections.ConfigDict(dict(name="gmg", gmg=fields))


def test_none_and_unknown_names():
  assert regularizers.make_regularizer(ml_collections.ConfigDict(dict(name="none"))) is None
  with pytest.raises(ValueError, match="jacobian"):
    regularizers.make_regularizer(ml_collections.ConfigDict(dict(name="gmm")))
  # The config check refuses what the regularizer would refuse, naming the core's estimators.
  from conftest import tiny_config

  from gmg_jax import checks

  config = tiny_config("gmg_cos_decoder")
  config.regularizer.gmg.estimator = "exact"
  (problem,) = checks.problems(config)
  assert "regularizer.gmg.estimator 'exact'" in problem
  assert all(repr(e) in problem for e in gmg.ESTIMATORS)
  reg = regularizers.make_regularizer(_config(estimator="exact"))
  with pytest.raises(ValueError, match=r"regularizer.gmg.estimator 'exact'.*certified"):
    reg(None, np.ones((4, 2), np.float32), np.ones((4, 2), np.float32), jax.random.key(0))


def test_gmg_and_dst_match_the_core_functions():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 6)).astype(np.float32)
  y = np.tanh(x @ rng.normal(size=(6, 3)).astype(np.float32))
  key = jax.random.key(0)
  expected, info = gmg.gromov_monge_gap(
    x, y, cost="scaled_sqeuclidean", epsilon_0=0.003, estimator="certified"
  )
  reg = regularizers.make_regularizer(
    _config(cost="scaled_sqeuclidean", epsilon_0=0.003, estimator="certified")
  )
  value, aux = reg(None, x, y, key)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  entropic = regularizers.make_regularizer(_config(cost="scaled_sqeuclidean", epsilon_0=0.003))
  value_entropic, aux_entropic = entropic(None, x, y, key)
  # The default trains the core's default value, the entropic one.
  np.testing.assert_allclose(value_entropic, info.entropic_gap, rtol=1e-5)
  np.testing.assert_allclose(value_entropic, info.distortion - info.gw_cost, rtol=1e-5)
  assert float(value_entropic) < float(value)  # the entropic term makes it smaller
  # Both values are logged under names that say which is which, whichever is trained.
  for logged in (aux, aux_entropic):
    assert "gmg" not in logged
    np.testing.assert_allclose(logged["gmg_certified"], expected, rtol=1e-6)
    np.testing.assert_allclose(logged["gmg_entropic"], value_entropic, rtol=1e-5)
    assert set(logged) >= {"gmg_distortion", "gmg_gw_energy", "gmg_converged", "gmg_identity_won"}
  np.testing.assert_allclose(aux["gmg_distortion"], info.distortion, rtol=1e-6)
  assert float(aux["gmg_converged"]) == float(info.converged) and float(value) > 0

  dst = regularizers.make_regularizer(
    ml_collections.ConfigDict(dict(name="dst", dst=dict(cost="cosine")))
  )
  value, aux = dst(None, x, y, key)
  np.testing.assert_allclose(
    value, gmg.distortion(gmg.cost_matrix(x, "cosine"), gmg.cost_matrix(y, "cosine")), rtol=1e-6
  )


def _jacobian_config(**fields):
  return ml_collections.ConfigDict(dict(name="jacobian", jacobian=fields))


def test_jacobian_penalty_of_isometries():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  q = jnp.asarray(q[:, :4], jnp.float32)  # 4 -> 5, orthonormal columns: an isometric embedding.
  x = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
  key = jax.random.key(1)
  scaled = regularizers.make_regularizer(_jacobian_config(num_projections=8, scaled=True))
  strict = regularizers.make_regularizer(_jacobian_config(num_projections=8, scaled=False))
  for c in (1.0, 3.0):
    # At full precision: in TF32 (a GPU's default) the map is an isometry to ~1e-8 only.
    fn = lambda z, c=c: c * jnp.matmul(z, q.T, precision="highest")  # noqa: E731
    assert float(scaled(fn, x, fn(x), key)[0]) < 1e-10
    np.testing.assert_allclose(strict(fn, x, fn(x), key)[0], (c**2 - 1) ** 2, rtol=1e-5, atol=1e-10)


def test_jacobian_penalty_matches_full_jacobians():
  rng = np.random.default_rng(2)
  w = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  fn = lambda z: jnp.tanh(z @ w) * jnp.sum(z, axis=1, keepdims=True)  # noqa: E731
  x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  key = jax.random.key(3)
  value, aux = regularizers.jacobian(fn, x, None, key, num_projections=5, scaled=True)
  # The same directions, applied to per-sample Jacobians formed in full.
  jac = jax.vmap(jax.jacfwd(lambda z: fn(z[None])[0]))(x)  # [n, 4, 3]
  v = jax.random.normal(key, (5, *x.shape), x.dtype)
  v = v / jnp.linalg.norm(v, axis=2, keepdims=True)
  s = jnp.sum(jnp.einsum("nij,pnj->pni", jac, v) ** 2, axis=2)
  np.testing.assert_allclose(value, jnp.var(s) / jnp.mean(s) ** 2, rtol=1e-4)
  np.testing.assert_allclose(aux["jacobian_mean_sq_norm"], jnp.mean(s), rtol=1e-5)

  # Its gradient w.r.t. the map's parameters (the decoder's, in training) equals the gradient of
  # the full-Jacobian formula: differentiating through the JVPs loses nothing.
  def map_of(w_):
    return lambda z: jnp.tanh(z @ w_) * jnp.sum(z, axis=1, keepdims=True)

  def full(w_):
    jac = jax.vmap(jax.jacfwd(lambda z: map_of(w_)(z[None])[0]))(x)
    s = jnp.sum(jnp.einsum("nij,pnj->pni", jac, v) ** 2, axis=2)
    return jnp.var(s) / jnp.mean(s) ** 2

  grad = jax.grad(lambda w_: regularizers.jacobian(map_of(w_), x, None, key, num_projections=5)[0])(
    w
  )
  np.testing.assert_allclose(grad, jax.grad(full)(w), rtol=1e-3, atol=1e-6)
  assert float(jnp.abs(grad).max()) > 1e-3


def test_a_key_the_regularizer_does_not_take_fails_when_called():
  reg = regularizers.make_regularizer(_config(cost="cosine", epsilon0=0.1))  # misspelled
  x = np.ones((4, 3), np.float32)
  with pytest.raises(TypeError, match="epsilon0"):
    reg(None, x, x, jax.random.key(0))
