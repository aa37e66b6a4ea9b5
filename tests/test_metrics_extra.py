"""Tests of UDR, IRS and the unsupervised scores: closed forms, brute force, invariances."""

from __future__ import annotations

import importlib
import itertools

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from gmg_jax import metrics

# The modules (`gmg_jax.metrics.irs` etc. the attributes are the functions).
irs_lib = importlib.import_module("gmg_jax.metrics.irs")
udr_lib = importlib.import_module("gmg_jax.metrics.udr")
unsupervised_lib = importlib.import_module("gmg_jax.metrics.unsupervised")


def _factors(rng, num, sizes=(4, 3, 5)):
  return np.stack([rng.integers(0, s, num) for s in sizes], axis=1)


# --------------------------------------------------------------------------------------------
# Unsupervised scores.


def test_gaussian_total_correlation_is_minus_half_log_det_correlation(rng):
  a = rng.standard_normal((4, 4))
  cov = a @ a.T + 0.5 * np.eye(4)
  std = np.sqrt(np.diag(cov))
  expected = -0.5 * np.log(np.linalg.det(cov / std[:, None] / std[None, :]))
  assert metrics.gaussian_total_correlation(cov) == pytest.approx(expected, rel=1e-10)
  # KL(N(0, cov) || N(0, diag cov)) from the general Gaussian KL formula.
  diag = np.diag(np.diag(cov))
  kl = 0.5 * (
    np.trace(np.linalg.inv(diag) @ cov) - 4 + np.log(np.linalg.det(diag) / np.linalg.det(cov))
  )
  assert metrics.gaussian_total_correlation(cov) == pytest.approx(kl, rel=1e-10)
  assert metrics.gaussian_total_correlation(np.diag([1.0, 2.0, 3.0])) == pytest.approx(0.0)


def test_gaussian_wasserstein_correlation_closed_forms(rng):
  # Diagonal covariance: the Gaussian is its own product of marginals.
  assert metrics.gaussian_wasserstein_correlation(np.diag([1.0, 4.0])) == pytest.approx(0.0)
  # Unit variances, correlation rho: W2^2 = 4 - 2 tr sqrt(C) = 4 - 2 (sqrt(1+rho) + sqrt(1-rho)).
  rho = 0.6
  cov = np.array([[1.0, rho], [rho, 1.0]])
  expected = 4.0 - 2.0 * (np.sqrt(1 + rho) + np.sqrt(1 - rho))
  assert metrics.gaussian_wasserstein_correlation(cov) == pytest.approx(expected, rel=1e-12)
  # The general Bures formula, with scipy's principal square root of the non-symmetric product.
  a = rng.standard_normal((5, 5))
  cov = a @ a.T + 0.1 * np.eye(5)
  bures = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])).real
  assert metrics.gaussian_wasserstein_correlation(cov) == pytest.approx(bures, rel=1e-9)


def test_unsupervised_scores_by_brute_force_and_invariances(rng):
  codes = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 3))
  scores = metrics.unsupervised(codes)
  cov = np.cov(codes, rowvar=False)
  assert scores["gaussian_total_correlation"] == pytest.approx(
    metrics.gaussian_total_correlation(cov)
  )
  assert scores["gaussian_wasserstein_correlation_norm"] == pytest.approx(
    scores["gaussian_wasserstein_correlation"] / np.trace(cov)
  )
  labels = metrics.histogram_discretize(codes, 20)
  pairs = [(i, j) for i, j in itertools.product(range(3), repeat=2) if i != j]
  mi = [metrics.discrete_mutual_info(labels[:, [i]], labels[:, [j]])[0, 0] for i, j in pairs]
  assert scores["mutual_info_score"] == pytest.approx(np.mean(mi), rel=1e-12)
  fast = metrics.unsupervised(codes, mode="fast")
  assert fast["mutual_info_score"] == pytest.approx(scores["mutual_info_score"], rel=1e-12)
  permuted = metrics.unsupervised(codes[:, [2, 0, 1]])
  for key, value in scores.items():
    assert permuted[key] == pytest.approx(value, rel=1e-9), key
  # Independent dims score ~0 on every key; a correlated copy scores clearly more.
  independent = metrics.unsupervised(rng.standard_normal((5000, 3)))
  assert all(abs(v) < 0.05 for v in independent.values()), independent
  x = rng.standard_normal(5000)
  correlated = metrics.unsupervised(np.stack([x, x + 0.3 * rng.standard_normal(5000)], 1))
  assert all(v > 0.1 for v in correlated.values()), correlated


def test_unsupervised_needs_two_dims(rng):
  with pytest.raises(ValueError, match="D >= 2"):
    metrics.unsupervised(rng.standard_normal((10, 1)))


# --------------------------------------------------------------------------------------------
# IRS.


def _loop_irs(factors, codes, quantile):
  """IRS by explicit loops over (dim, factor, value), with a sorted-list quantile."""
  num, dims = codes.shape
  scores, weights = [], []
  for d in range(dims):
    column = codes[:, d]
    max_dev = max(abs(v - column.mean()) for v in column)
    best = -np.inf
    for k in range(factors.shape[1]):
      values = sorted(set(factors[:, k].tolist()))
      total = 0.0
      for value in values:
        group = column[factors[:, k] == value]
        spread = sorted(abs(g - group.mean()) for g in group)
        position = quantile * (len(spread) - 1)
        low = int(np.floor(position))
        high = min(low + 1, len(spread) - 1)
        total += spread[low] + (position - low) * (spread[high] - spread[low])
      best = max(best, 1.0 - total / len(values) / max_dev)
    scores.append(best)
    weights.append(max_dev)
  return float(np.dot(scores, weights) / np.sum(weights))


def test_irs_matrix_matches_loop(rng):
  factors = _factors(rng, 300)
  codes = factors @ rng.standard_normal((3, 4)) + 0.3 * rng.standard_normal((300, 4))
  for quantile in (0.99, 1.0, 0.5):
    result = metrics.irs_matrix(factors, codes, quantile)
    assert result["avg_score"] == pytest.approx(_loop_irs(factors, codes, quantile), rel=1e-12)
  assert result["IRS_matrix"].shape == (4, 3)
  np.testing.assert_array_equal(result["parents"], result["IRS_matrix"].argmax(axis=1))


def test_irs_perfect_code_is_one_and_ignoring_a_factor_is_lower(rng):
  factors = _factors(rng, 3000)
  perfect = np.exp(factors / 3.0)  # each dim a function of one factor: no deviation in groups
  assert metrics.irs(perfect, factors)["IRS"] == pytest.approx(1.0)
  ignoring = perfect[:, :2]  # factor 2 has no dim: still robust, IRS stays 1
  assert metrics.irs(ignoring, factors)["IRS"] == pytest.approx(1.0)
  mixed = perfect.copy()
  mixed[:, 0] = perfect[:, 0] + perfect[:, 2]  # dim 0 moves with two factors
  noisy = perfect + 0.3 * rng.standard_normal(perfect.shape)
  assert metrics.irs(mixed, factors)["IRS"] < 0.9
  assert metrics.irs(noisy, factors)["IRS"] < 0.9
  # Permuting the dims or the factors changes nothing.
  assert metrics.irs(mixed[:, [2, 0, 1]], factors[:, [1, 2, 0]])["IRS"] == pytest.approx(
    metrics.irs(mixed, factors)["IRS"]
  )


def test_irs_drops_constant_dims_and_discretizes_factors(rng):
  factors = _factors(rng, 500, (50, 3))
  codes = np.stack([factors[:, 0] * 1.0, np.full(500, 2.0), rng.standard_normal(500)], 1)
  assert metrics.irs(codes, factors)["num_active_dims"] == 2
  np.testing.assert_array_equal(irs_lib.drop_constant_dims(codes), codes[:, [0, 2]])
  # Factor 0 has 50 values, binned into 20 groups before grouping: dim 0 deviates within a bin.
  binned = metrics.histogram_discretize(factors, 20)
  expected = metrics.irs_matrix(binned, codes[:, [0, 2]])["avg_score"]
  assert metrics.irs(codes, factors)["IRS"] == pytest.approx(expected)
  assert (
    metrics.irs(codes, factors)["IRS"] < metrics.irs_matrix(factors, codes[:, [0, 2]])["avg_score"]
  )
  assert metrics.irs(np.ones((500, 3)), factors) == {"IRS": 0.0, "num_active_dims": 0.0}


# --------------------------------------------------------------------------------------------
# UDR.


def test_relative_strength_known_answers():
  assert metrics.relative_strength(np.eye(3)) == 1.0
  block = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  assert metrics.relative_strength(block) == pytest.approx(2.0 / 3.0)  # (1/2 + 1/2 + 1) / 3
  assert metrics.relative_strength(np.ones((3, 3))) == pytest.approx(1.0 / 3.0)
  assert metrics.relative_strength(np.zeros((3, 3))) == 0.0
  # An all-zero column counts 0 in the column mean; the rows still see their maxima.
  partial = np.array([[1.0, 0.0], [0.0, 0.0]])
  assert metrics.relative_strength(partial) == pytest.approx(0.5)
  assert metrics.relative_strength(np.array([[np.nan, 1.0], [0.0, 1.0]])) == pytest.approx(
    (0 + 0.5 + 0 + 1) / 4
  )
  assert metrics.relative_strength(np.zeros((0, 3))) == 0.0


def test_spearman_matrix_matches_scipy_per_pair(rng):
  a = rng.standard_normal((50, 3))
  b = np.concatenate([np.round(a[:, :2] * 2), rng.standard_normal((50, 1))], 1)  # with ties
  expected = [[abs(scipy.stats.spearmanr(a[:, i], b[:, j])[0]) for j in range(3)] for i in range(3)]
  np.testing.assert_allclose(metrics.spearman_matrix(a, b), expected, atol=1e-12)


def _permuted_flipped(codes, rng):
  permutation = rng.permutation(codes.shape[1])
  signs = rng.choice([-1.0, 1.0], codes.shape[1])
  return codes[:, permutation] * signs * 3.0 + 1.0


def test_udr_of_identical_models_up_to_permutation_and_sign(rng):
  # Orthogonal +-1 columns (a Hadamard matrix's): their ranks are exactly uncorrelated too.
  codes = np.tile(scipy.linalg.hadamard(8)[:, 1:5].astype(np.float64), (50, 1))
  other = _permuted_flipped(codes, rng)
  spearman = metrics.udr([codes, other, codes], correlation="spearman")
  np.testing.assert_allclose(spearman["model_scores"], 1.0, atol=1e-12)
  # The lasso's L1 shrinks each coefficient of the standardized codes by alpha: 1 - alpha.
  lasso = metrics.udr([codes, other])
  np.testing.assert_allclose(lasso["model_scores"], 0.9, atol=1e-9)
  assert lasso["correlations"].shape == (2, 2, 4, 4)
  np.testing.assert_array_equal(lasso["pairwise_scores"].diagonal(), 0.0)
  # Random codes: a permuted, flipped copy scores as the codes against themselves.
  codes = rng.standard_normal((400, 4))
  self_similarity = metrics.spearman_matrix(codes, codes)
  scores = metrics.udr([codes, _permuted_flipped(codes, rng)], correlation="spearman")
  assert scores["model_scores"] == pytest.approx([metrics.relative_strength(self_similarity)] * 2)
  assert 0.85 < scores["model_scores"][0] < 1.0


def test_udr_of_independent_models_is_low_and_mixing_in_between(rng):
  codes = [rng.standard_normal((1000, 4)) for _ in range(3)]
  for correlation in udr_lib.CORRELATIONS:
    scores = metrics.udr(codes, correlation=correlation)["model_scores"]
    # Random similarities: relative strength near its floor (about 1/D for the Spearman).
    assert np.all(scores < 0.45), (correlation, scores)
  # Dims 0 and 1 rotated by 45 degrees, dims 2 and 3 kept: about (0.35 * 2 + 1 * 2) / 4.
  rotation = np.eye(4)
  rotation[:2, :2] = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2.0)
  rotated = metrics.udr([codes[0], codes[0] @ rotation], correlation="spearman")
  assert 0.55 < rotated["model_scores"][0] < 0.8


def test_udr_median_aggregation_and_kl_filter(rng):
  base = rng.standard_normal((300, 3))
  models = [base, _permuted_flipped(base, rng), rng.standard_normal((300, 3))]
  result = metrics.udr(models, correlation="spearman")
  pairwise = result["pairwise_scores"]
  for i in range(3):
    expected = np.median([pairwise[j, i] for j in range(3) if j != i])
    assert result["model_scores"][i] == pytest.approx(expected)
  # Brute force of one pair.
  matrix = metrics.spearman_matrix(udr_lib.standardize(models[0], np.ones(3)), models[2])
  assert pairwise[0, 2] == pytest.approx(metrics.relative_strength(matrix))
  # A latent with KL <= threshold is zeroed; unless filtered out, its all-zero row and column of
  # lasso coefficients count 0 (0/0), and its NaN Spearman row makes every column's max NaN.
  base = np.tile(scipy.linalg.hadamard(4)[:, 1:].astype(np.float64), (75, 1))
  noisy = np.concatenate([base, rng.standard_normal((300, 1))], 1)
  kl = [np.array([1.0, 1.0, 1.0, 0.0])] * 2
  assert metrics.udr([noisy, noisy], kl)["model_scores"] == pytest.approx([0.9, 0.9])
  unfiltered = metrics.udr([noisy, noisy], kl, filter_low_kl=False)
  assert unfiltered["model_scores"] == pytest.approx([0.9 * 3 / 4] * 2)
  filtered = metrics.udr([noisy, noisy], kl, correlation="spearman")
  assert filtered["model_scores"] == pytest.approx([1.0, 1.0])
  unfiltered = metrics.udr([noisy, noisy], kl, correlation="spearman", filter_low_kl=False)
  assert unfiltered["model_scores"] == pytest.approx([0.0, 0.0])


def test_gaussian_kl_and_udr_input_checks(rng):
  mean, logvar = rng.standard_normal((20, 3)), rng.standard_normal((20, 3))
  expected = np.mean(0.5 * (mean**2 + np.exp(logvar) - logvar - 1), axis=0)
  np.testing.assert_allclose(metrics.gaussian_kl(mean, logvar), expected)
  np.testing.assert_allclose(metrics.gaussian_kl(np.zeros((2, 3)), np.zeros((2, 3))), 0.0)
  with pytest.raises(ValueError, match="need >= 2"):
    metrics.udr([mean])
  with pytest.raises(ValueError, match="one shape"):
    metrics.udr([mean, mean[:, :2]])
  with pytest.raises(ValueError, match="correlation"):
    metrics.udr([mean, mean], correlation="pearson")


# --------------------------------------------------------------------------------------------
# Suite.


def test_suite_accepts_the_new_names_and_rejects_misspellings():
  for name in ("irs", "unsupervised"):
    assert name in metrics.METRIC_NAMES
  metrics.check_names(("irs", "unsupervised", "dci"), "exact")
  with pytest.raises(ValueError, match="Unknown metrics"):
    metrics.check_names(("irs", "unsupervized"), "exact")
  assert "udr" not in metrics.METRIC_NAMES  # needs several models: experiments/udr.py


def test_suite_array_metrics_call_irs_and_unsupervised(rng):
  from gmg_jax.metrics import suite

  factors = _factors(rng, 400)
  codes = np.exp(factors / 3.0) + 0.01 * rng.standard_normal(factors.shape)
  train, test = (codes, factors), (codes[:10], factors[:10])
  assert suite.ARRAY_METRICS["irs"](train, test, "exact", 0) == metrics.irs(codes, factors)
  assert suite.ARRAY_METRICS["unsupervised"](train, test, "fast", 0) == (
    unsupervised_lib.unsupervised(codes, mode="fast")
  )


class _GridDataset:
  """Factors stored in the pixels of a 2x2 image (factor sizes 3, 4, 5)."""

  factor_sizes = (3, 4, 5)
  num_factors = 3

  def sample_factors(self, key, num):
    seed = np.asarray(jax.random.key_data(key)).tolist()
    return np.random.default_rng(seed).integers(0, self.factor_sizes, (num, 3))

  def images_from_factors(self, factors):
    pixels = np.concatenate([np.asarray(factors) * 10, np.zeros((len(factors), 1))], axis=1)
    return pixels.reshape(-1, 2, 2, 1).astype(np.uint8)


def test_compute_metrics_runs_irs_and_unsupervised_on_the_train_split():
  def perfect_code(images):
    return np.asarray(images, np.float64).reshape(len(images), -1)[:, :3] / 10.0

  scores = metrics.compute_metrics(
    ("irs", "unsupervised"),
    _GridDataset(),
    perfect_code,
    jax.random.key(0),
    num_train=500,
    num_test=50,
  )
  assert scores["irs"] == {"IRS": pytest.approx(1.0), "num_active_dims": 3.0}
  assert set(scores["unsupervised"]) == {
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "gaussian_wasserstein_correlation_norm",
    "mutual_info_score",
  }
  assert abs(scores["unsupervised"]["gaussian_total_correlation"]) < 0.05  # independent factors


class _NoiseImages(_GridDataset):
  """16x16x3 images that are a fixed function of the factors (no rendering to compile)."""

  image_shape = (16, 16, 3)

  def images_from_factors(self, factors):
    factors = np.asarray(factors)
    pattern = np.arange(16 * 16 * 3).reshape(16, 16, 3)
    return ((factors @ [7, 31, 101])[:, None, None, None] * pattern % 251).astype(np.uint8)


def test_udr_experiment_scores_runs_and_writes_udr_json(tiny, tmp_path):
  import json
  import os
  import sys

  from conftest import ROOT
  from flax import nnx

  from gmg_jax import train

  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  udr_experiment = importlib.import_module("udr")
  config, dataset = tiny(), _NoiseImages()
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  noise = np.random.default_rng(1)

  def perturb(x):  # another model: numpy noise on every float array (no per-shape compiles)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
      return x
    return (x + 0.3 * noise.standard_normal(x.shape)).astype(x.dtype)

  other = state.replace(modules=jax.tree.map(perturb, state.modules))
  states = [state, other, state]  # the third run is the first one again
  runs = {str(tmp_path / f"run{i}"): (config, graphdef, s, dataset) for i, s in enumerate(states)}
  workdirs = list(runs)
  for workdir in workdirs:
    os.makedirs(workdir)
  records = udr_experiment.udr_of_runs(
    workdirs, num_points=300, correlation="spearman", filter_low_kl=False, load_run=runs.get
  )
  for workdir, record in zip(workdirs, records, strict=True):
    with open(os.path.join(workdir, "udr.json")) as f:
      assert json.load(f) == json.loads(json.dumps(record))
    assert not os.path.exists(os.path.join(workdir, "udr.json.tmp"))
  # The same numbers from encoding the same images here and calling metrics.udr.
  images = dataset.images_from_factors(dataset.sample_factors(jax.random.key(0), 300))
  posteriors = [nnx.merge(graphdef, s.modules)[0].encode(images) for s in states]
  codes = [np.asarray(mean, np.float64) for mean, _ in posteriors]
  kls = [metrics.gaussian_kl(mean, logvar) for mean, logvar in posteriors]
  expected = metrics.udr(codes, kls, correlation="spearman", filter_low_kl=False)
  # (float32 encodings, jitted and batched there, eager here: near-ties may swap ranks)
  np.testing.assert_allclose([r["udr"] for r in records], expected["model_scores"], atol=1e-3)
  np.testing.assert_allclose(records[1]["kl"], kls[1], rtol=1e-5)
  assert records[0]["udr"] == pytest.approx(records[2]["udr"])
  assert records[0]["udr"] != pytest.approx(records[1]["udr"])
  assert "UDR" in udr_experiment.format_table(workdirs, records)
  with pytest.raises(ValueError, match="need >= 2"):
    udr_experiment.udr_of_runs(workdirs[:1], load_run=runs.get)
  with pytest.raises(ValueError, match="more than once"):
    udr_experiment.udr_of_runs([workdirs[0], workdirs[0] + "/"], load_run=runs.get)
