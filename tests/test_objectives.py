"""Tests for gmg_jax.losses (objectives, loss): each term against an independent formula, and
vae_loss.

References are written here in float64 numpy / Python loops (or scipy quadrature), never by
calling the function under test. Models are tiny MLPs whose parameters are filled from numpy
(eager initialization would compile a random kernel per shape, seconds each on 2 shared cores).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads
from scipy import integrate, special, stats

from gmg_jax import models
from gmg_jax.config import get_config
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses import objectives
from gmg_jax.losses import terms as loss_terms
from gmg_jax.models import to_float

IMAGE_SHAPE = (4, 4, 1)
LATENT = 3


def _log_normal(x, mean, logvar):
  return -0.5 * ((x - mean) ** 2 / math.exp(logvar) + logvar + math.log(2 * math.pi))


def _posterior(rng, batch=5, dim=LATENT):
  mu = rng.normal(size=(batch, dim))
  logvar = rng.normal(scale=0.5, size=(batch, dim))
  z = mu + np.exp(0.5 * logvar) * rng.normal(size=(batch, dim))
  return z, mu, logvar


# ---- array functions ------------------------------------------------------------------------


def test_gaussian_log_density_matches_scipy(rng):
  x, mean, logvar = rng.normal(size=(3, 4, 2))
  expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar))
  np.testing.assert_allclose(loss_terms.gaussian_log_density(x, mean, logvar), expected, rtol=1e-5)


def test_gaussian_kl_matches_numerical_integration(rng):
  _, mu, logvar = _posterior(rng, batch=2, dim=3)
  per_sample = np.zeros(2)
  for b, d in itertools.product(range(2), range(3)):
    q = stats.norm(mu[b, d], math.exp(0.5 * logvar[b, d]))
    per_sample[b] += integrate.quad(
      lambda t, q=q: q.pdf(t) * (q.logpdf(t) - stats.norm.logpdf(t)), -20, 20, limit=200
    )[0]
  np.testing.assert_allclose(loss_terms.gaussian_kl(mu, logvar), per_sample.mean(), rtol=1e-4)


def test_bernoulli_reconstruction_matches_cross_entropy(rng):
  logits = rng.normal(scale=3.0, size=(2, 4, 4, 1))
  targets = rng.uniform(size=(2, 4, 4, 1))
  p = 1.0 / (1.0 + np.exp(-logits))
  expected = -np.sum(targets * np.log(p) + (1 - targets) * np.log(1 - p), axis=(1, 2, 3)).mean()
  np.testing.assert_allclose(
    loss_terms.bernoulli_reconstruction(logits, targets), expected, rtol=1e-5
  )
  # Saturated logits stay finite in float32 (the naive log(sigmoid) would give inf).
  extreme = jnp.array([[200.0, -200.0]], jnp.float32)
  np.testing.assert_allclose(
    loss_terms.bernoulli_reconstruction(extreme, jnp.array([[0.0, 1.0]])), 400.0, rtol=1e-6
  )


def test_total_correlation_matches_loops(rng):
  z, mu, logvar = _posterior(rng, batch=4, dim=3)
  batch, dim = z.shape
  expected = 0.0
  for j in range(batch):
    log_joint = [
      sum(_log_normal(z[j, d], mu[i, d], logvar[i, d]) for d in range(dim)) for i in range(batch)
    ]
    log_qz = math.log(sum(math.exp(v) for v in log_joint))
    log_prod = sum(
      math.log(sum(math.exp(_log_normal(z[j, d], mu[i, d], logvar[i, d])) for i in range(batch)))
      for d in range(dim)
    )
    expected += (log_qz - log_prod) / batch
  np.testing.assert_allclose(loss_terms.total_correlation(z, mu, logvar), expected, rtol=1e-5)


def _reference_weights(batch, n):
  """Chen et al.'s layout written out: column 0 -> 1/N, column 1 -> strat, W[B-2, 0] -> strat."""
  m = batch - 1
  strat = (n - m) / (n * m)
  weights = [
    [1 / n if i == 0 else strat if i == 1 else 1 / m for i in range(batch)] for _ in range(batch)
  ]
  weights[m - 1][0] = strat
  return weights


def test_log_importance_weights_layout():
  np.testing.assert_allclose(
    np.exp(loss_terms.log_importance_weights(5, 1000)), _reference_weights(5, 1000)
  )
  with pytest.raises(ValueError, match="at least 2"):
    loss_terms.log_importance_weights(1, 1000)


def test_tcvae_decomposition_matches_loops(rng):
  z, mu, logvar = _posterior(rng, batch=4, dim=3)
  batch, dim, n = 4, 3, 1000
  weights = _reference_weights(batch, n)
  mi = tc = dim_kl = 0.0
  for j in range(batch):
    q = [
      [math.exp(_log_normal(z[j, d], mu[i, d], logvar[i, d])) for d in range(dim)]
      for i in range(batch)
    ]
    log_qz = math.log(sum(weights[j][i] * math.prod(q[i]) for i in range(batch)))
    log_prod = sum(math.log(sum(weights[j][i] * q[i][d] for i in range(batch))) for d in range(dim))
    log_qzx = math.log(math.prod(q[j]))
    log_pz = sum(_log_normal(z[j, d], 0.0, 0.0) for d in range(dim))
    mi += (log_qzx - log_qz) / batch
    tc += (log_qz - log_prod) / batch
    dim_kl += (log_prod - log_pz) / batch
  terms = loss_terms.tcvae_decomposition(z, mu, logvar, n)
  np.testing.assert_allclose(
    [terms["mi"], terms["tc"], terms["dim_kl"]], [mi, tc, dim_kl], rtol=1e-4, atol=1e-5
  )


def test_dip_vae_penalty_matches_loops(rng):
  _, mu, logvar = _posterior(rng, batch=6, dim=3)
  batch, dim = mu.shape
  mean = [sum(mu[b, i] for b in range(batch)) / batch for i in range(dim)]
  cov = [
    [
      sum((mu[b, i] - mean[i]) * (mu[b, j] - mean[j]) for b in range(batch)) / batch
      for j in range(dim)
    ]
    for i in range(dim)
  ]
  for kind, extra in (
    ("i", [0.0] * dim),
    ("ii", [sum(math.exp(logvar[b, i]) for b in range(batch)) / batch for i in range(dim)]),
  ):
    expected = sum(
      2.0 * (cov[i][j] ** 2) if i != j else 5.0 * (cov[i][i] + extra[i] - 1.0) ** 2
      for i in range(dim)
      for j in range(dim)
    )
    np.testing.assert_allclose(
      loss_terms.dip_vae_penalty(mu, logvar, 2.0, 5.0, kind), expected, rtol=1e-5
    )
  with pytest.raises(ValueError, match="dip_type"):
    loss_terms.dip_vae_penalty(mu, logvar, 1.0, 1.0, "iii")


def test_annealed_capacity_schedule():
  values = [loss_terms.annealed_capacity(s, 25.0, 1000) for s in (0, 100, 500, 1000, 5000)]
  np.testing.assert_allclose(values, [0.0, 2.5, 12.5, 25.0, 25.0], rtol=1e-6)
  assert jax.jit(loss_terms.annealed_capacity, static_argnums=(1, 2))(
    jnp.int32(250), 25.0, 1000
  ) == pytest.approx(6.25)


def _hfs_brute_force(mu, pairs):
  total = 0.0
  for a, b in pairs:
    worst = 0.0
    for i, j in itertools.product(range(len(mu)), repeat=2):
      nearest = min((mu[i, a] - mu[k, a]) ** 2 + (mu[j, b] - mu[k, b]) ** 2 for k in range(len(mu)))
      worst = max(worst, nearest)
    total += worst
  return total


def test_hfs_matches_brute_force_on_all_and_sampled_pairs(rng):
  mu = rng.normal(size=(5, 4))
  all_pairs = list(itertools.combinations(range(4), 2))
  np.testing.assert_allclose(
    loss_terms.hfs(mu, jax.random.key(0), num_pairs=100), _hfs_brute_force(mu, all_pairs), rtol=1e-5
  )
  key = jax.random.key(3)
  pairs = np.asarray(loss_terms.latent_pairs(key, 4, 3))
  assert pairs.shape == (3, 2) and np.all(pairs[:, 0] < pairs[:, 1])
  assert len({tuple(p) for p in pairs}) == 3
  np.testing.assert_allclose(
    loss_terms.hfs(mu, key, num_pairs=3), _hfs_brute_force(mu, pairs.tolist()), rtol=1e-5
  )


def test_hfs_closed_form_cases():
  key = jax.random.key(0)
  grid = np.array([[a, b] for a in (0.0, 1.0, 2.0) for b in (0.0, 1.0)])
  assert float(loss_terms.hfs(grid, key)) == 0.0  # a factorized support matches itself
  diagonal = np.array([[0.0, 0.0], [1.0, 1.0]])
  np.testing.assert_allclose(loss_terms.hfs(diagonal, key), 1.0)  # (0, 1) is 1 from both
  with pytest.raises(ValueError, match="2 latent"):
    loss_terms.hfs(np.zeros((3, 1)), key)


def test_gradients_match_finite_differences(rng, enable_x64):
  z, mu, logvar = _posterior(rng, batch=4, dim=3)
  key = jax.random.key(0)
  check_grads(
    jax.jit(lambda m: loss_terms.hfs(m, key, num_pairs=2)),
    (jnp.asarray(mu),),
    order=1,
    modes=["rev"],
  )
  check_grads(
    jax.jit(lambda z, m, lv: loss_terms.tcvae_decomposition(z, m, lv, 100)["tc"]),
    (jnp.asarray(z), jnp.asarray(mu), jnp.asarray(logvar)),
    order=1,
    modes=["rev"],
  )


def _reg_ot_cost(x, y, epsilon, iterations=2000):
  """Entropic OT dual value <f, a> + <g, b> by log-domain Sinkhorn (uniform weights)."""
  cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  log_a, log_b = -np.log(len(x)), -np.log(len(y))
  f, g = np.zeros(len(x)), np.zeros(len(y))
  for _ in range(iterations):
    f = -epsilon * special.logsumexp((g[None, :] - cost) / epsilon + log_b, axis=1)
    g = -epsilon * special.logsumexp((f[:, None] - cost) / epsilon + log_a, axis=0)
  return f.mean() + g.mean()


def test_sinkhorn_prior_matching_matches_reference(rng):
  z = rng.normal(size=(6, 2)).astype(np.float32) + 1.0
  key = jax.random.key(4)
  noise = np.asarray(jax.random.normal(key, z.shape, jnp.float32), np.float64)
  z64 = z.astype(np.float64)
  expected = (
    _reg_ot_cost(z64, noise, 1.0)
    - 0.5 * _reg_ot_cost(z64, z64, 1.0)
    - 0.5 * _reg_ot_cost(noise, noise, 1.0)
  )
  divergence = jax.jit(lambda z: loss_terms.sinkhorn_prior_matching(z, key, epsilon=1.0))
  value = divergence(jnp.asarray(z))
  np.testing.assert_allclose(value, expected, rtol=2e-2)
  far = divergence(jnp.asarray(z) + 5.0)
  assert far > value > 0.0


def test_permute_dims_shuffles_each_column_independently(rng):
  z = rng.normal(size=(16, 6)).astype(np.float32)
  shuffled = np.asarray(loss_terms.permute_dims(jnp.asarray(z), jax.random.key(0)))
  np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(z, axis=0))
  perms = [tuple(np.argsort(np.argsort(shuffled[:, d]))[np.argsort(z[:, d])]) for d in range(6)]
  assert len(set(perms)) > 1


def test_factor_vae_terms_match_formulas(rng):
  real, permuted = rng.normal(size=(2, 5, 2))
  np.testing.assert_allclose(
    loss_terms.factor_vae_tc(real), np.mean(real[:, 0] - real[:, 1]), rtol=1e-6
  )
  p_real = np.exp(real) / np.exp(real).sum(1, keepdims=True)
  p_perm = np.exp(permuted) / np.exp(permuted).sum(1, keepdims=True)
  expected = -(0.5 * np.log(p_real[:, 0]).mean() + 0.5 * np.log(p_perm[:, 1]).mean())
  np.testing.assert_allclose(loss_terms.discriminator_loss(real, permuted), expected, rtol=1e-5)


# ---- vae_loss -------------------------------------------------------------------------------


def _materialize(abstract: nnx.Module, seed: int) -> nnx.Module:
  rng = np.random.default_rng(seed)
  graphdef, state = nnx.split(abstract)
  state = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), state)
  return nnx.merge(graphdef, state)


def _model_config():
  return ml_collections.ConfigDict(
    dict(arch="mlp", latent_dim=LATENT, mlp_hidden=(8,), disc_hidden=8, disc_layers=2)
  )


@pytest.fixture
def model():
  return _materialize(
    nnx.eval_shape(
      lambda: models.make_vae(_model_config(), IMAGE_SHAPE, decoder=True, rngs=nnx.Rngs(0))
    ),
    seed=1,
  )


@pytest.fixture
def encoder_only():
  return _materialize(
    nnx.eval_shape(
      lambda: models.make_vae(_model_config(), IMAGE_SHAPE, decoder=False, rngs=nnx.Rngs(0))
    ),
    seed=1,
  )


@pytest.fixture
def discriminator():
  return _materialize(
    nnx.eval_shape(lambda: models.make_discriminator(_model_config(), rngs=nnx.Rngs(0))), seed=2
  )


@pytest.fixture(scope="module")
def images():
  return jnp.asarray(np.random.default_rng(5).integers(0, 256, (6, *IMAGE_SHAPE)), jnp.uint8)


KEY = jax.random.key(7)
NO_REGULARIZER = ml_collections.ConfigDict(
  dict(name="none", on="decoder", weight=0.0, target="logits")
)


def _objective(**overrides):
  cfg = get_config().objective
  cfg.update(overrides)
  return cfg


def _jit_loss(objective_config, regularizer_fn=None, regularizer_config=NO_REGULARIZER):
  @nnx.jit
  def loss(model, images, key, step, discriminator=None):
    return loss_lib.vae_loss(
      model, images, key, step, objective_config, regularizer_fn, regularizer_config, discriminator
    )

  return loss


@nnx.jit
def _reference_forward(model, images, key):
  z = objectives.sample_codes(model, images, key)
  mu, logvar = model.encode(images)
  return z, mu, logvar, model.decode(z)


def _np(*arrays):
  return [np.asarray(a, np.float64) for a in arrays]


def test_beta_vae_loss_is_reconstruction_plus_beta_kl(model, images):
  loss, aux = _jit_loss(_objective(beta=3.0))(model, images, KEY, 0)
  z, mu, logvar, logits = _np(*_reference_forward(model, images, KEY))
  x = np.asarray(images, np.float64) / 255.0
  p = 1.0 / (1.0 + np.exp(-logits))
  rec = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3)).mean()
  kl = np.mean(0.5 * np.sum(mu**2 + np.exp(logvar) - logvar - 1, axis=1))
  np.testing.assert_allclose(
    [loss, aux["reconstruction"], aux["kl"]], [rec + 3 * kl, rec, kl], rtol=1e-5
  )
  np.testing.assert_allclose(aux["elbo"], -(rec + kl), rtol=1e-5)
  assert all(v.shape == () and v.dtype == jnp.float32 for v in aux.values())


def test_vae_loss_jit_equals_eager(model, images):
  def fake_regularizer(map_fn, x, y, key):
    del map_fn, key
    return jnp.mean(y**2) + jnp.mean(x), {"size": jnp.float32(x.shape[0])}

  cfg = _objective(name="beta_tcvae", hfs_weight=2.0, hfs_pairs=2, dataset_size=100)
  reg = ml_collections.ConfigDict(dict(name="gmg", on="decoder", weight=0.5, target="mean"))
  eager = loss_lib.vae_loss(model, images, KEY, 3, cfg, fake_regularizer, reg)
  jitted = _jit_loss(cfg, fake_regularizer, reg)(model, images, KEY, 3)
  assert eager[1].keys() == jitted[1].keys()
  for name in eager[1]:
    np.testing.assert_allclose(eager[1][name], jitted[1][name], rtol=1e-5, err_msg=name)


def test_beta_tcvae_estimators(model, images):
  _, aux = _jit_loss(_objective(name="beta_tcvae", beta=5.0))(model, images, KEY, 0)
  assert "mi" not in aux  # dlib form without HFS
  z, mu, logvar, _ = _reference_forward(model, images, KEY)
  np.testing.assert_allclose(aux["tc"], loss_terms.total_correlation(z, mu, logvar), rtol=1e-5)
  np.testing.assert_allclose(
    aux["loss"], aux["reconstruction"] + aux["kl"] + 4.0 * aux["tc"], rtol=1e-5
  )

  cfg = _objective(
    name="beta_tcvae",
    hfs_weight=2.0,
    hfs_pairs=100,
    tcvae_alpha=1.5,
    tcvae_beta=6.0,
    tcvae_gamma=0.5,
    dataset_size=100,
  )
  _, aux = _jit_loss(cfg)(model, images, KEY, 0)
  terms = loss_terms.tcvae_decomposition(z, mu, logvar, 100)
  for name in ("mi", "tc", "dim_kl"):
    np.testing.assert_allclose(aux[name], terms[name], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(aux["hfs"], loss_terms.hfs(mu, KEY, num_pairs=100), rtol=1e-5)
  np.testing.assert_allclose(
    aux["loss"],
    aux["reconstruction"]
    + 1.5 * aux["mi"]
    + 6.0 * aux["tc"]
    + 0.5 * aux["dim_kl"]
    + 2.0 * aux["hfs"],
    rtol=1e-5,
  )


def test_dip_and_annealed_losses(model, images):
  z, mu, logvar, _ = _reference_forward(model, images, KEY)
  _, aux = _jit_loss(_objective(name="dip_vae", dip_type="ii", lambda_od=2.0, lambda_d_factor=1.0))(
    model, images, KEY, 0
  )
  np.testing.assert_allclose(
    aux["dip_penalty"], loss_terms.dip_vae_penalty(mu, logvar, 2.0, 2.0, "ii"), rtol=1e-5
  )
  np.testing.assert_allclose(
    aux["loss"], aux["reconstruction"] + aux["kl"] + aux["dip_penalty"], rtol=1e-5
  )

  loss_fn = _jit_loss(
    _objective(name="annealed_vae", c_max=10.0, iteration_threshold=100, gamma_annealed=7.0)
  )
  for step in (0, 50, 400):
    _, aux = loss_fn(model, images, KEY, jnp.int32(step))
    capacity = min(10.0, 10.0 * step / 100)
    np.testing.assert_allclose(aux["capacity"], capacity, rtol=1e-6)
    np.testing.assert_allclose(
      aux["loss"], aux["reconstruction"] + 7.0 * abs(float(aux["kl"]) - capacity), rtol=1e-5
    )


def test_factor_vae_critic_gets_no_gradient_from_vae_loss(model, images, discriminator):
  cfg = _objective(name="factor_vae", gamma=20.0)
  disc_key = jax.random.key(11)

  @nnx.jit
  def step(model, discriminator):
    """The trainer's FactorVAE step as documented in the objectives module."""

    def loss(model, discriminator):
      return loss_lib.vae_loss(model, images, KEY, 0, cfg, None, NO_REGULARIZER, discriminator)

    (_, aux), (vae_grads, disc_grads) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      model, discriminator
    )
    z = objectives.sample_codes(model, images, KEY)
    (d_loss, d_aux), d_grads = nnx.value_and_grad(
      objectives.factor_vae_discriminator_loss, has_aux=True
    )(discriminator, z, disc_key)
    references = (
      loss_terms.factor_vae_tc(discriminator(z)),
      loss_terms.discriminator_loss(
        discriminator(z), discriminator(loss_terms.permute_dims(z, disc_key))
      ),
    )
    return aux, vae_grads, disc_grads, d_loss, d_aux, d_grads, references

  aux, vae_grads, disc_grads, d_loss, d_aux, d_grads, (tc, expected) = step(model, discriminator)
  np.testing.assert_allclose(aux["tc"], tc, rtol=1e-5)
  np.testing.assert_allclose(
    aux["loss"], aux["reconstruction"] + aux["kl"] + 20.0 * aux["tc"], rtol=1e-5
  )
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(disc_grads))
  assert float(jnp.max(jnp.abs(vae_grads["encoder"]["mean"]["kernel"][...]))) > 0.0
  np.testing.assert_allclose(d_loss, expected, rtol=1e-6)
  assert 0.0 <= d_aux["discriminator_accuracy"] <= 1.0
  assert float(jnp.max(jnp.abs(d_grads["out"]["kernel"][...]))) > 0.0

  with pytest.raises(ValueError, match="discriminator"):
    _jit_loss(cfg)(model, images, KEY, 0)


@pytest.mark.parametrize(
  "on,target", [("encoder", "logits"), ("decoder", "logits"), ("decoder", "mean")]
)
def test_regularizer_slot(model, images, on, target):
  def fake_regularizer(map_fn, x, y, key):
    del key
    aux = {"mismatch": jnp.max(jnp.abs(map_fn(x) - y)), "x_sum": jnp.sum(x), "y_sum": jnp.sum(y)}
    return jnp.mean(y**2), aux

  reg = ml_collections.ConfigDict(dict(name="gmg", on=on, weight=0.25, target=target))
  loss, aux = _jit_loss(_objective(beta=2.0), fake_regularizer, reg)(model, images, KEY, 0)
  np.testing.assert_allclose(
    loss, aux["reconstruction"] + 2.0 * aux["kl"] + 0.25 * aux["regularizer"], rtol=1e-6
  )
  assert float(aux["regularizer/mismatch"]) < 1e-5
  z, mu, _, logits = _reference_forward(model, images, KEY)
  expected_x, expected_y = {
    "encoder": (images.astype(jnp.float32) / 255.0, mu),
    "decoder": (z, logits if target == "logits" else jax.nn.sigmoid(logits)),
  }[on]
  np.testing.assert_allclose(aux["regularizer/x_sum"], jnp.sum(expected_x), rtol=1e-5)
  np.testing.assert_allclose(aux["regularizer/y_sum"], jnp.sum(expected_y), rtol=1e-5)
  np.testing.assert_allclose(aux["regularizer"], jnp.mean(expected_y**2), rtol=1e-5)


def test_decoder_free(encoder_only, images):
  mu, logvar = nnx.jit(lambda m, x: m.encode(x))(encoder_only, images)
  loss, aux = _jit_loss(_objective(name="decoder_free"))(encoder_only, images, KEY, 0)
  assert "reconstruction" not in aux
  np.testing.assert_allclose(loss, loss_terms.gaussian_kl(mu, logvar), rtol=1e-5)

  cfg = _objective(name="decoder_free", prior_matching="sinkhorn")
  (loss, aux), grads = nnx.jit(
    nnx.value_and_grad(
      lambda m: loss_lib.vae_loss(m, images, KEY, 0, cfg, None, NO_REGULARIZER), has_aux=True
    )
  )(encoder_only)
  assert loss == aux["prior_matching"]
  # The divergence of the sampled codes (not the means) to N(0, I) samples drawn with the
  # objective's key (the term itself: test_sinkhorn_prior_matching_matches_reference), and its
  # gradient flows to the encoder through the codes.
  keys = objectives.split_keys(KEY)

  def by_hand(m):
    mu, logvar = m.encode(to_float(images))
    z = objectives.reparameterize(mu, logvar, keys.sample)
    return loss_terms.sinkhorn_prior_matching(z, keys.objective)

  expected, expected_grads = nnx.jit(nnx.value_and_grad(by_hand))(encoder_only)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert not np.isclose(loss, loss_terms.sinkhorn_prior_matching(mu, keys.objective), rtol=1e-3)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) > 0


def test_bad_configurations_fail_with_names(model, encoder_only, images):
  with pytest.raises(ValueError, match="'vae'"):
    _jit_loss(_objective(name="vae"))(model, images, KEY, 0)
  with pytest.raises(ValueError, match="needs a decoder"):
    _jit_loss(_objective(name="beta_vae"))(encoder_only, images, KEY, 0)
  reg = ml_collections.ConfigDict(dict(name="gmg", on="decoder", weight=1.0, target="logits"))
  with pytest.raises(ValueError, match="regularizer.on='decoder'"):
    _jit_loss(_objective(name="decoder_free"), lambda *a: (0.0, {}), reg)(
      encoder_only, images, KEY, 0
    )
  with pytest.raises(ValueError, match="tcvae_estimator"):
    _jit_loss(_objective(name="beta_tcvae", tcvae_estimator="mws"))(model, images, KEY, 0)
  with pytest.raises(ValueError, match="prior_matching"):
    _jit_loss(_objective(name="decoder_free", prior_matching="mmd"))(encoder_only, images, KEY, 0)
  assert objectives.get_objective("decoder_free").uses_decoder is False
  assert objectives.get_objective("beta_tcvae").uses_decoder is True
