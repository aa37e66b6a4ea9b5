"""Metrics that draw their own batches with a fixed factor: FactorVAE and BetaVAE scores.

As disentanglement_lib `factor_vae.py` and `beta_vae.py`. Each training point is a batch of
`batch_size` samples in which one uniformly chosen factor is held fixed:
- FactorVAE (Kim & Mnih 2018): code dims with std < `prune_threshold` (over
  `num_variance_estimate` random samples) are dropped; the point votes for the active dim with
  the smallest variance in the batch relative to its global variance; the classifier maps each
  dim to its majority factor; accuracy = share of votes the classifier gets right.
- BetaVAE (Higgins et al. 2017): two batches share the fixed factor (only); the feature is
  the mean absolute code difference; a `LogisticRegression` predicts the factor (exact:
  sklearn, fast: `linear.fit_logistic_regression`).

A dataset here needs `num_factors`, `sample_factors(key, n) -> [n, K]` and
`images_from_factors([n, K]) -> uint8 [n, H, W, C]`; a representation function maps such
images to codes [n, D]. Samples are drawn with JAX keys, so the batches are not the ones
disentanglement_lib's numpy RandomState would draw; everything after sampling is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from sklearn import linear_model

from gmg_jax.metrics import linear
from gmg_jax.metrics.information import check_mode

RepresentationFn = Callable[[Any], Any]


def encode(
  dataset: Any,
  representation_fn: RepresentationFn,
  factors: np.ndarray,
  *,
  batch_size: int = 256,
  progress: bool = False,
  desc: str = "encode",
) -> np.ndarray:
  """Renders and encodes factor rows in batches.

  Args:
    dataset: has `images_from_factors`.
    representation_fn: uint8 images [n, H, W, C] -> codes [n, D].
    factors: [N, K] factor indices.
    batch_size: images rendered and encoded at once.
    progress: show a tqdm bar.
    desc: label of the bar.

  Returns:
    [N, D] codes as numpy.
  """
  factors = np.asarray(factors)
  starts = range(0, factors.shape[0], batch_size)
  codes = [
    np.asarray(representation_fn(dataset.images_from_factors(factors[s : s + batch_size])))
    for s in tqdm.tqdm(starts, desc=desc, disable=not progress, leave=False)
  ]
  return np.concatenate(codes, axis=0)


def _fix_one_factor(
  key: jax.Array, factors: jax.Array, source: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Copies one random factor per batch from `source` [M, B or 1, K] into `factors` [M, B, K]."""
  index = jax.random.randint(key, (factors.shape[0],), 0, factors.shape[2])
  mask = (jnp.arange(factors.shape[2]) == index[:, None])[:, None, :]
  return index, jnp.where(mask, source, factors)


def sample_factor_vae_batches(
  dataset: Any, key: jax.Array, num_points: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
  """Batches of factors in which one random factor is constant.

  Returns:
    factor_index: [M] the fixed factor of each batch.
    factors: [M, B, K] with factors[m, :, factor_index[m]] constant.
  """
  key_index, key_factors = jax.random.split(key)
  factors = jnp.asarray(dataset.sample_factors(key_factors, num_points * batch_size))
  factors = factors.reshape(num_points, batch_size, -1)
  index, factors = _fix_one_factor(key_index, factors, factors[:, :1])
  return np.asarray(index), np.asarray(factors)


def sample_beta_vae_batches(
  dataset: Any, key: jax.Array, num_points: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pairs of factor batches that share one random factor row by row.

  Returns:
    factor_index: [M] the shared factor.
    factors_1, factors_2: [M, B, K], equal in column factor_index[m] of batch m.
  """
  key_index, key_1, key_2 = jax.random.split(key, 3)
  factors_1 = jnp.asarray(dataset.sample_factors(key_1, num_points * batch_size))
  factors_1 = factors_1.reshape(num_points, batch_size, -1)
  factors_2 = jnp.asarray(dataset.sample_factors(key_2, num_points * batch_size))
  index, factors_2 = _fix_one_factor(key_index, factors_2.reshape(factors_1.shape), factors_1)
  return np.asarray(index), np.asarray(factors_1), np.asarray(factors_2)


def factor_vae_votes(
  codes: np.ndarray,
  factor_index: np.ndarray,
  global_variances: np.ndarray,
  active: np.ndarray,
  num_factors: int,
) -> np.ndarray:
  """Vote counts of FactorVAE training points.

  Args:
    codes: [M, B, D] codes of each fixed-factor batch.
    factor_index: [M] fixed factor of each batch.
    global_variances: [D] variance of each code dim over random samples.
    active: [D] bool, dims kept.
    num_factors: K.

  Returns:
    [K, D] int64 votes; column j counts the points whose argmin is the j-th *active* dim
    (disentanglement_lib's indexing; columns past the number of active dims stay 0).
  """
  local = np.var(codes, axis=1, ddof=1)
  argmin = np.argmin(local[:, active] / global_variances[active], axis=1)
  votes = np.zeros((num_factors, global_variances.shape[0]), dtype=np.int64)
  np.add.at(votes, (factor_index, argmin), 1)
  return votes


def factor_vae_accuracy(train_votes: np.ndarray, eval_votes: np.ndarray) -> tuple[float, float]:
  """Majority-vote classifier (dim -> factor) fit on `train_votes` [K, D], scored on both."""
  classifier = np.argmax(train_votes, axis=0)
  columns = np.arange(train_votes.shape[1])
  return (
    float(train_votes[classifier, columns].sum() / train_votes.sum()),
    float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
  )


def factor_vae_score(
  dataset: Any,
  representation_fn: RepresentationFn,
  key: jax.Array,
  *,
  batch_size: int = 64,
  num_train: int = 10000,
  num_eval: int = 5000,
  num_variance_estimate: int = 10000,
  prune_threshold: float = 0.05,
  encode_batch_size: int = 256,
  progress: bool = False,
) -> dict[str, float]:
  """FactorVAE score with disentanglement_lib's study defaults.

  Args:
    dataset: see the module docstring.
    representation_fn: images -> codes [n, D].
    key: JAX PRNG key.
    batch_size: samples per training point.
    num_train, num_eval: training / evaluation points.
    num_variance_estimate: random samples for the global variances.
    prune_threshold: dims with global std below it are inactive.
    encode_batch_size: images encoded at once.
    progress: tqdm bars while encoding.

  Returns:
    {"train_accuracy", "eval_accuracy", "num_active_dims"}; all 0 without active dims.
    num_active_dims counts the active dims (disentanglement_lib reports the mask's length, D).
  """
  key_variance, key_train, key_eval = jax.random.split(key, 3)
  run = dict(batch_size=encode_batch_size, progress=progress)
  random_codes = encode(
    dataset,
    representation_fn,
    dataset.sample_factors(key_variance, num_variance_estimate),
    desc="factor_vae variances",
    **run,
  )
  global_variances = np.var(random_codes, axis=0, ddof=1)
  active = np.sqrt(global_variances) >= prune_threshold
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
  votes = []
  for split_key, num_points in ((key_train, num_train), (key_eval, num_eval)):
    index, factors = sample_factor_vae_batches(dataset, split_key, num_points, batch_size)
    codes = encode(
      dataset,
      representation_fn,
      factors.reshape(-1, factors.shape[-1]),
      desc="factor_vae batches",
      **run,
    )
    votes.append(
      factor_vae_votes(
        codes.reshape(num_points, batch_size, -1),
        index,
        global_variances,
        active,
        dataset.num_factors,
      )
    )
  train_accuracy, eval_accuracy = factor_vae_accuracy(*votes)
  return {
    "train_accuracy": train_accuracy,
    "eval_accuracy": eval_accuracy,
    "num_active_dims": int(active.sum()),
  }


def beta_vae_accuracy(
  train_features: np.ndarray,
  train_labels: np.ndarray,
  eval_features: np.ndarray,
  eval_labels: np.ndarray,
  *,
  mode: str = "exact",
  random_state: int = 0,
) -> dict[str, float]:
  """Logistic-regression accuracy of predicting the fixed factor from BetaVAE features.

  Args:
    train_features: [M, D] mean absolute code differences.
    train_labels: [M] fixed factor index.
    eval_features: [M', D].
    eval_labels: [M'].
    mode: "exact" (sklearn `LogisticRegression(random_state=...)`) or "fast"
      (`linear.fit_logistic_regression`).
    random_state: seed of the sklearn model.

  Returns:
    {"train_accuracy", "eval_accuracy"}.
  """
  check_mode(mode)
  if mode == "exact":
    model = linear_model.LogisticRegression(random_state=random_state)
    model.fit(train_features, train_labels)
    return {
      "train_accuracy": float(np.mean(model.predict(train_features) == train_labels)),
      "eval_accuracy": float(model.score(eval_features, eval_labels)),
    }
  classes = np.unique(train_labels)
  labels, num_classes = linear.encode_labels(np.asarray(train_labels)[:, None])
  weights, bias = linear.fit_logistic_regression(train_features, labels, num_classes)
  accuracy = []
  for features, target in ((train_features, train_labels), (eval_features, eval_labels)):
    proba = linear.logistic_predict_proba(weights, bias, features, num_classes)[0]
    accuracy.append(float(np.mean(classes[np.argmax(proba, axis=1)] == target)))
  return {"train_accuracy": accuracy[0], "eval_accuracy": accuracy[1]}


def beta_vae_score(
  dataset: Any,
  representation_fn: RepresentationFn,
  key: jax.Array,
  *,
  batch_size: int = 64,
  num_train: int = 10000,
  num_eval: int = 5000,
  mode: str = "exact",
  random_state: int = 0,
  encode_batch_size: int = 256,
  progress: bool = False,
) -> dict[str, float]:
  """BetaVAE score with disentanglement_lib's study defaults.

  Args:
    dataset: see the module docstring.
    representation_fn: images -> codes [n, D].
    key: JAX PRNG key.
    batch_size: samples per batch of a pair.
    num_train, num_eval: training / evaluation points.
    mode: classifier, see `beta_vae_accuracy`.
    random_state: seed of the sklearn model.
    encode_batch_size: images encoded at once.
    progress: tqdm bars while encoding.

  Returns:
    {"train_accuracy", "eval_accuracy"}.
  """
  check_mode(mode)
  splits = []
  for split_key, num_points in zip(jax.random.split(key), (num_train, num_eval), strict=True):
    index, factors_1, factors_2 = sample_beta_vae_batches(
      dataset, split_key, num_points, batch_size
    )
    codes = [
      encode(
        dataset,
        representation_fn,
        f.reshape(-1, f.shape[-1]),
        batch_size=encode_batch_size,
        progress=progress,
        desc="beta_vae batches",
      ).reshape(num_points, batch_size, -1)
      for f in (factors_1, factors_2)
    ]
    splits += [np.mean(np.abs(codes[0] - codes[1]), axis=1), index]
  return beta_vae_accuracy(*splits, mode=mode, random_state=random_state)
