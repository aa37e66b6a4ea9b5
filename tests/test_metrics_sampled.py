"""Tests of the FactorVAE / BetaVAE scores, their samplers, and `compute_metrics`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmg_jax import metrics


class FakeDataset:
  """Ground-truth dataset whose 2x2 image stores the factor values in its pixels."""

  factor_sizes = (3, 4, 5)
  num_factors = 3
  image_shape = (2, 2, 1)

  def sample_factors(self, key, n):
    keys = jax.random.split(key, self.num_factors)
    return jnp.stack(
      [jax.random.randint(k, (n,), 0, s) for k, s in zip(keys, self.factor_sizes, strict=True)],
      axis=1,
    ).astype(jnp.int32)

  def images_from_factors(self, factors):
    factors = np.asarray(factors)
    pixels = np.concatenate([factors * 10, np.zeros((len(factors), 1))], axis=1)
    return pixels.reshape(-1, *self.image_shape).astype(np.uint8)

  def sample_batch(self, key, n):
    factors = self.sample_factors(key, n)
    return self.images_from_factors(factors), factors


def perfect_code(images):
  """Reads the factors back, plus one constant (collapsed) dim."""
  flat = np.asarray(images, np.float64).reshape(len(images), -1)
  return np.concatenate([flat[:, :3] / 10.0, np.zeros((len(images), 1))], axis=1)


@pytest.fixture
def dataset():
  return FakeDataset()


def test_factor_vae_sampler_fixes_one_factor(dataset):
  index, factors = metrics.sample_factor_vae_batches(dataset, jax.random.key(0), 50, 16)
  assert factors.shape == (50, 16, 3) and index.shape == (50,)
  assert set(index.tolist()) == {0, 1, 2}
  for m in range(50):
    assert np.all(factors[m, :, index[m]] == factors[m, 0, index[m]])
    others = np.delete(factors[m], index[m], axis=1)
    assert np.all(others.std(axis=0) > 0)  # the other factors still vary


def test_beta_vae_sampler_shares_one_factor(dataset):
  index, first, second = metrics.sample_beta_vae_batches(dataset, jax.random.key(1), 50, 16)
  assert first.shape == second.shape == (50, 16, 3)
  for m in range(50):
    np.testing.assert_array_equal(first[m, :, index[m]], second[m, :, index[m]])
    others = np.delete(first[m] != second[m], index[m], axis=1)
    assert others.any(axis=0).all()


def test_encode_in_batches_equals_one_batch(dataset):
  factors = np.asarray(dataset.sample_factors(jax.random.key(2), 37))
  codes = metrics.encode(dataset, perfect_code, factors, batch_size=8)
  np.testing.assert_array_equal(codes, perfect_code(dataset.images_from_factors(factors)))


def test_factor_vae_votes_by_loop():
  rng = np.random.default_rng(0)
  codes = rng.standard_normal((30, 8, 4))
  index = rng.integers(0, 3, 30)
  global_var = rng.random(4) + 0.5
  active = np.array([True, False, True, True])
  votes = metrics.factor_vae_votes(codes, index, global_var, active, 3)
  expected = np.zeros((3, 4), dtype=int)
  for m in range(30):
    ratios = [np.var(codes[m, :, d], ddof=1) / global_var[d] for d in (0, 2, 3)]
    expected[index[m], int(np.argmin(ratios))] += 1
  np.testing.assert_array_equal(votes, expected)
  train, evaluation = metrics.factor_vae_accuracy(expected, expected)
  assert train == evaluation == pytest.approx(expected.max(axis=0).sum() / 30)


def test_factor_vae_score_perfect_code(dataset):
  scores = metrics.factor_vae_score(
    dataset,
    perfect_code,
    jax.random.key(3),
    batch_size=16,
    num_train=200,
    num_eval=100,
    num_variance_estimate=500,
  )
  assert scores == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}


def test_factor_vae_score_all_pruned(dataset):
  scores = metrics.factor_vae_score(
    dataset,
    lambda x: perfect_code(x) * 1e-3,
    jax.random.key(3),
    num_train=10,
    num_eval=10,
    num_variance_estimate=100,
  )
  assert scores == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_beta_vae_score(dataset, mode):
  kwargs = dict(batch_size=16, num_train=300, num_eval=150, mode=mode)
  good = metrics.beta_vae_score(dataset, perfect_code, jax.random.key(4), **kwargs)
  assert good["train_accuracy"] > 0.95 and good["eval_accuracy"] > 0.95

  def noise_code(images):
    seed = int(np.asarray(images, np.int64).sum())
    return np.random.default_rng(seed).standard_normal((len(images), 4))

  bad = metrics.beta_vae_score(dataset, noise_code, jax.random.key(4), **kwargs)
  assert bad["eval_accuracy"] < 0.6


def test_beta_vae_fast_close_to_exact():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, 400)
  features = rng.random((400, 4)) + 0.3 * np.eye(4)[labels]
  exact = metrics.beta_vae_accuracy(features[:300], labels[:300], features[300:], labels[300:])
  fast = metrics.beta_vae_accuracy(
    features[:300], labels[:300], features[300:], labels[300:], mode="fast"
  )
  for key in exact:
    assert fast[key] == pytest.approx(exact[key], abs=0.01)


def test_compute_metrics_keys_and_modes(dataset):
  names = ("mig", "sap", "modularity_explicitness", "factor_vae", "beta_vae")
  kwargs = dict(num_train=300, num_test=200, batch_size=8)
  exact = metrics.compute_metrics(names, dataset, perfect_code, jax.random.key(6), **kwargs)
  fast = metrics.compute_metrics(
    names, dataset, perfect_code, jax.random.key(6), mode="fast", **kwargs
  )
  expected_keys = {
    "mig": {"discrete_mig"},
    "sap": {"SAP_score"},
    "modularity_explicitness": {
      "modularity_score",
      "explicitness_score_train",
      "explicitness_score_test",
    },
    "factor_vae": {"train_accuracy", "eval_accuracy", "num_active_dims"},
    "beta_vae": {"train_accuracy", "eval_accuracy"},
  }
  for name in names:
    assert set(exact[name]) == set(fast[name]) == expected_keys[name]
    for key, value in exact[name].items():
      assert fast[name][key] == pytest.approx(value, abs=0.02), (name, key)
  assert exact["mig"]["discrete_mig"] > 0.9
  with pytest.raises(ValueError, match="Unknown metrics"):
    metrics.compute_metrics(["irz"], dataset, perfect_code, jax.random.key(0))


def test_compute_metrics_takes_the_callers_codes_of_its_own_points(dataset):
  names, key = ("mig", "sap"), jax.random.key(3)
  kwargs = dict(num_train=300, num_test=200)
  expected = metrics.compute_metrics(names, dataset, perfect_code, key, **kwargs)
  factors = metrics.split_factors(dataset, key, 300, 200)
  codes = tuple(perfect_code(dataset.images_from_factors(f)) for f in factors)

  def never(images):
    raise AssertionError("the array metrics' points were given: nothing to encode")

  assert metrics.compute_metrics(names, dataset, never, key, codes=codes, **kwargs) == expected
  # Codes of other points (another key's draw) give other scores: the points are matched.
  other = tuple(
    perfect_code(dataset.images_from_factors(f))
    for f in metrics.split_factors(dataset, jax.random.key(4), 300, 200)
  )
  assert metrics.compute_metrics(names, dataset, never, key, codes=other, **kwargs) != expected
  with pytest.raises(ValueError, match=r"codes has \[300, 100\] rows.*num_test = 300, 200"):
    metrics.compute_metrics(names, dataset, never, key, codes=(codes[0], codes[1][:100]), **kwargs)
