"""Tests for experiments/decoder_free_controls.py: the PCA codes are the principal components,
the untrained encoder is the cpu32 encoder at initialization, and the table's intervals."""

import os
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT
from scipy import stats as sps

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import decoder_free_controls as controls  # noqa: E402

from gmg_jax import data as data_lib  # noqa: E402
from gmg_jax import models  # noqa: E402


@pytest.fixture(scope="module")
def setting():
  config = controls.cpu32_config()
  return config, data_lib.get_dataset(config.data)


def test_pca_codes_are_uncorrelated_with_decreasing_variance_on_the_fitted_images(setting):
  config, dataset = setting
  encode = controls.pca_encoder(dataset, seed=3, dims=5, num_images=400)
  images, _ = dataset.sample_batch(jax.random.key(3 + 10_000), 400)  # The fitted images.
  codes = np.asarray(encode(images), np.float64)
  assert codes.shape == (400, 5)
  np.testing.assert_allclose(codes.mean(axis=0), 0.0, atol=1e-4)
  covariance = np.cov(codes, rowvar=False)
  variances = np.diag(covariance)
  assert np.all(np.diff(variances) < 0)
  off_diagonal = covariance - np.diag(variances)
  assert np.max(np.abs(off_diagonal)) < 1e-4 * variances[0]
  # The same variances as numpy's eigen-decomposition of the pixels' covariance.
  flat = np.asarray(models.to_float(images), np.float64).reshape(400, -1)
  eigenvalues = np.linalg.eigvalsh(np.cov(flat, rowvar=False))[::-1][:5]
  np.testing.assert_allclose(variances, eigenvalues, rtol=1e-3)


def test_the_untrained_encoder_is_the_cpu32_encoder_at_its_seed(setting):
  config, dataset = setting
  assert (config.data.image_size, config.model.arch) == (32, "mlp")
  images, _ = dataset.sample_batch(jax.random.key(0), 8)
  a = controls.untrained_encoder(config, dataset.image_shape, 1)(images)
  b = controls.untrained_encoder(config, dataset.image_shape, 1)(images)
  c = controls.untrained_encoder(config, dataset.image_shape, 2)(images)
  assert a.shape == (8, config.model.latent_dim)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_table_cells_are_the_mean_and_its_t_interval():
  values = [0.1, 0.3, 0.2, 0.4]
  half = sps.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
  assert controls._cell(values) == f"0.250 [{0.25 - half:.3f}, {0.25 + half:.3f}]"
  rows = [
    {"config": "pca", "seed": s, "num_train": 20, "num_test": 10, "dci/disentanglement": v}
    for s, v in enumerate(values)
  ]
  line = controls.table(rows).splitlines()[2]
  assert line.startswith("| pca | 20/10 | 4 | 0.250 [")
