"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018).

As disentanglement_lib `dci.py`: one gradient-boosted tree classifier per factor on all code
dims; the importance matrix R [D, K] (rows codes, columns factors) holds each classifier's
feature importances; with P_ij = R_ij / sum_k R_ik and H_K the entropy in base K,
  disentanglement = sum_i rho_i (1 - H_K(P_i.)),  rho_i = sum_j R_ij / sum R,
completeness likewise per factor over codes (base D), informativeness = mean accuracy.

`exact`: `sklearn.ensemble.GradientBoostingClassifier()` with its defaults (100 stages, depth 3,
learning rate 0.1, squared-error splits), one per factor in factor order, all drawing from one
`np.random.RandomState(random_state)`. disentanglement_lib leaves the classifiers unseeded, so
they draw one after another from numpy's global stream: ours equal its values after
`np.random.seed(random_state)` (experiments/crosscheck_dlib.py), and its values move with that
seed (the draws order the features of each split search, which breaks ties between equally good
splits: up to 4e-3 in D and C, 1e-2 in an importance, on 1,000 points).
`fast`: the same estimator, step for step, compiled with numba (`gmg_jax.metrics.gbt`): each
feature is sorted once and each depth of a tree is one pass over that order, instead of a sort
per node. It considers the same thresholds and maximizes the same criterion; ties between
features go to the first of a random order per node, drawn from its own generator, so its
values differ from exact's as exact's differ between two seeds. Factors are fit in parallel
threads.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
from sklearn import ensemble

from gmg_jax.metrics import gbt
from gmg_jax.metrics.information import check_mode


def _entropy_base(p: np.ndarray, base: int, axis: int) -> np.ndarray:
  """Entropy of `p` normalized along `axis`, in base `base` (`scipy.stats.entropy`)."""
  p = p / np.sum(p, axis=axis, keepdims=True)
  return -np.sum(p * np.log(p), axis=axis) / np.log(base)


def disentanglement(importance_matrix: np.ndarray) -> float:
  """Importance-weighted mean over codes of 1 - H_K(P_i.); R is [D codes, K factors]."""
  # The 1e-11 keeps log finite for zero importances, as disentanglement_lib does.
  per_code = 1.0 - _entropy_base(importance_matrix + 1e-11, importance_matrix.shape[1], axis=1)
  if importance_matrix.sum() == 0.0:
    importance_matrix = np.ones_like(importance_matrix)
  code_importance = importance_matrix.sum(axis=1) / importance_matrix.sum()
  return float(np.sum(per_code * code_importance))


def completeness(importance_matrix: np.ndarray) -> float:
  """Importance-weighted mean over factors of 1 - H_D(P_.j); R is [D codes, K factors]."""
  per_factor = 1.0 - _entropy_base(importance_matrix + 1e-11, importance_matrix.shape[0], axis=0)
  if importance_matrix.sum() == 0.0:
    importance_matrix = np.ones_like(importance_matrix)
  factor_importance = importance_matrix.sum(axis=0) / importance_matrix.sum()
  return float(np.sum(per_factor * factor_importance))


def _fit_factor(codes_train, y_train, codes_test, y_test, mode, random_state):
  """Importances [D], train and test accuracy of one factor's classifier.

  `random_state`: an int, or (exact) a `np.random.RandomState` that the classifier draws from.
  """
  if mode == "exact":
    model = ensemble.GradientBoostingClassifier(random_state=random_state)
    model.fit(codes_train, y_train)
    importance = np.abs(model.feature_importances_)
    return (
      importance,
      np.mean(model.predict(codes_train) == y_train),
      np.mean(model.predict(codes_test) == y_test),
    )
  classes, labels = np.unique(y_train, return_inverse=True)
  importance, raw, raw_test = gbt.fit_predict(
    codes_train, labels.reshape(-1), codes_test, len(classes), np.random.default_rng(random_state)
  )
  if len(classes) == 2:
    predicted, predicted_test = (raw[:, 0] > 0).astype(int), (raw_test[:, 0] > 0).astype(int)
  else:
    predicted, predicted_test = raw.argmax(axis=1), raw_test.argmax(axis=1)
  return (
    importance,
    np.mean(classes[predicted] == y_train),
    np.mean(classes[predicted_test] == y_test),
  )


def importance_matrix(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  mode: str = "exact",
  random_state: int = 0,
) -> tuple[np.ndarray, float, float]:
  """Tree-ensemble importance matrix and accuracies (dlib `compute_importance_gbt`).

  Args:
    codes_train: [N, D] codes.
    factors_train: [N, K] discrete factors.
    codes_test: [M, D] codes.
    factors_test: [M, K] discrete factors.
    mode: "exact" (GradientBoostingClassifier) or "fast" (the same estimator compiled, see
      the module docstring).
    random_state: exact: seed of the one stream the classifiers draw from in factor order;
      fast: seed of each factor's tie-breaking feature orders.

  Returns:
    importance: [D, K], rows codes, columns factors.
    train_accuracy, test_accuracy: mean over factors.
  """
  check_mode(mode)
  codes_train, codes_test = np.asarray(codes_train), np.asarray(codes_test)
  factors_train, factors_test = np.asarray(factors_train), np.asarray(factors_test)
  num_factors = factors_train.shape[1]
  for k in range(num_factors):
    if len(np.unique(factors_train[:, k])) < 2:
      raise ValueError(
        f"DCI: factor {k} takes a single value in the {len(factors_train)} training points; "
        "a classifier needs at least two classes. Use more points or leave that factor out."
      )
  if mode == "exact":
    # One stream in factor order, as disentanglement_lib's unseeded classifiers share numpy's.
    stream = np.random.RandomState(random_state)
    results = [
      _fit_factor(codes_train, factors_train[:, k], codes_test, factors_test[:, k], mode, stream)
      for k in range(num_factors)
    ]
  else:
    results = joblib.Parallel(n_jobs=min(num_factors, os.cpu_count() or 1), prefer="threads")(
      joblib.delayed(_fit_factor)(
        codes_train, factors_train[:, k], codes_test, factors_test[:, k], mode, random_state
      )
      for k in range(num_factors)
    )
  importance = np.stack([r[0] for r in results], axis=1).astype(np.float64)
  return (
    importance,
    float(np.mean([r[1] for r in results])),
    float(np.mean([r[2] for r in results])),
  )


def dci(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  mode: str = "exact",
  random_state: int = 0,
) -> dict[str, float]:
  """DCI scores (disentanglement_lib defaults: 10000 train, 5000 test points).

  Args:
    codes_train: [N, D] codes.
    factors_train: [N, K] discrete factors.
    codes_test: [M, D] codes.
    factors_test: [M, K] discrete factors.
    mode: "exact" or "fast" (see the module docstring).
    random_state: seed of the tree ensembles.

  Returns:
    {"disentanglement", "completeness", "informativeness_train", "informativeness_test"}.
  """
  importance, train_accuracy, test_accuracy = importance_matrix(
    codes_train, factors_train, codes_test, factors_test, mode=mode, random_state=random_state
  )
  return {
    "informativeness_train": train_accuracy,
    "informativeness_test": test_accuracy,
    "disentanglement": disentanglement(importance),
    "completeness": completeness(importance),
  }
