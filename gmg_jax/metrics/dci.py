"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018).

As disentanglement_lib `dci.py`: one gradient-boosted tree classifier per factor on all code
dims; the importance matrix R [D, K] (rows codes, columns factors) holds each classifier's
feature importances; with P_ij = R_ij / sum_k R_ik and H_K the entropy in base K,
  disentanglement = sum_i rho_i (1 - H_K(P_i.)),  rho_i = sum_j R_ij / sum R,
completeness likewise per factor over codes (base D), informativeness = mean accuracy.

`exact`: `sklearn.ensemble.GradientBoostingClassifier()` with its defaults (100 stages, depth 3,
learning rate 0.1, friedman_mse), one per factor in factor order, all drawing from one
`np.random.RandomState(random_state)`. disentanglement_lib leaves the classifiers unseeded, so
they draw one after another from numpy's global stream: ours equal its values after
`np.random.seed(random_state)` (experiments/crosscheck_dlib.py), and its values move with that
seed (the draws order the features of each split search, which breaks ties between equally good
splits: up to 4e-3 in D and C, 1e-2 in an importance, on 1,000 points).
`fast`: the same boosting algorithm (prior-log-odds start, per stage and class a depth-3
regression tree on the residuals one-hot - probability, GradientBoostingClassifier's Newton
leaf values and its importances: each split's decrease of the residuals' squared error,
averaged over trees with a split), but with HistGradientBoosting's `TreeGrower` searching
splits on <= 254 quantile thresholds per code dim instead of all of them. With unit hessians
its split gain is exactly the squared-error decrease GradientBoostingClassifier maximizes, so
the trees only differ where the best threshold falls between two candidates. Factors are fit
in parallel threads, each tree on one OpenMP thread. `HistGradientBoostingClassifier` itself
is not used: its hessian-weighted split gains pick other splits, which moved D and C by 0.02.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
from sklearn import ensemble

try:  # A private module of scikit-learn (tested with 1.9); only the fast mode needs it.
  from sklearn.ensemble._hist_gradient_boosting.grower import TreeGrower
except ImportError as _error:  # pragma: no cover - depends on the installed scikit-learn.
  TreeGrower = None
  _TREE_GROWER_ERROR = _error

from gmg_jax.metrics.information import check_mode

# GradientBoostingClassifier's defaults, which the fast mode reproduces.
_NUM_STAGES = 100
_LEARNING_RATE = 0.1
_MAX_DEPTH = 3
# Split candidates per code dim (TreeGrower's uint8 bins, one kept for missing values).
_MAX_SPLITS = 254
# Binned features per code dim to keep all candidates (up to 254 * 8 + 1 distinct values).
_MAX_COPIES = 8
_EPS = np.finfo(np.float64).eps


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


def _bin_codes(
  codes_train: np.ndarray, codes_test: np.ndarray, max_copies: int
) -> tuple[np.ndarray, np.ndarray]:
  """Bins the code dims on GradientBoostingClassifier's split candidates, or quantiles of them.

  The candidates are the midpoints between consecutive distinct training values (the
  thresholds GradientBoostingClassifier considers). A uint8 feature holds 254 of them, so
  each dim gets up to `max_copies` binned features: copy m of dim d (feature m * D + d) holds
  every copies-th candidate, which makes a split on any copy a split of dim d at one of
  GradientBoostingClassifier's thresholds. All candidates are kept when they fit in
  `max_copies` features, else one feature holds 254 evenly spaced in rank (training-set
  quantiles): on the benchmark's 10,000 codes, 1016 quantile candidates per dim moved D and C
  further from exact (0.012) than 254 did (0.004), at twice the cost.

  Returns:
    train [N, copies * D] and test [M, copies * D] uint8 bins (Fortran order).
  """
  num_dims = codes_train.shape[1]
  thresholds = []
  for column in codes_train.T:
    values = np.unique(column)
    thresholds.append((values[:-1] + values[1:]) / 2.0)
  most = max(len(t) for t in thresholds)
  copies = -(-most // _MAX_SPLITS)
  copies = copies if 1 <= copies <= max_copies else 1
  train = np.zeros((codes_train.shape[0], copies * num_dims), np.uint8, order="F")
  test = np.zeros((codes_test.shape[0], copies * num_dims), np.uint8, order="F")
  for d, candidates in enumerate(thresholds):
    if len(candidates) > copies * _MAX_SPLITS:
      ranks = np.linspace(0, len(candidates) - 1, copies * _MAX_SPLITS + 2)[1:-1]
      candidates = candidates[np.round(ranks).astype(np.int64)]
    for m in range(copies):
      train[:, m * num_dims + d] = np.searchsorted(candidates[m::copies], codes_train[:, d])
      test[:, m * num_dims + d] = np.searchsorted(candidates[m::copies], codes_test[:, d])
  return train, test


def _replay_tree(node, features, count, total, value, bins_test, raw_test, improvement, rows=None):
  """Adds a grown tree's leaf values to `raw_test` and its splits' improvements.

  Args:
    node: a `TreeGrower` node whose leaves have `leaf_index`.
    features: the binned feature of each of the grower's features.
    count, total: [L] training points and residual sums per leaf.
    value: [L] leaf values.
    bins_test: [M, F] binned test codes.
    raw_test: [M] raw test predictions of this tree's class, updated in place.
    improvement: [D] per code dim, the residuals' squared-error decrease (in place).
    rows: test rows reaching `node` (None: all).

  Returns:
    (training points, residual sum) of `node`.
  """
  if rows is None:
    rows = np.arange(bins_test.shape[0])
  if node.is_leaf:
    raw_test[rows] += value[node.leaf_index]
    return count[node.leaf_index], total[node.leaf_index]
  split = node.split_info
  feature = features[split.feature_idx]
  go_left = bins_test[rows, feature] <= split.bin_idx
  args = (features, count, total, value, bins_test, raw_test, improvement)
  n_l, s_l = _replay_tree(node.left_child, *args, rows[go_left])
  n_r, s_r = _replay_tree(node.right_child, *args, rows[~go_left])
  improvement[feature % len(improvement)] += n_l * n_r / (n_l + n_r) * (s_l / n_l - s_r / n_r) ** 2
  return n_l + n_r, s_l + s_r


def _fit_gbc_histogram(
  bins_train: np.ndarray,
  y_train: np.ndarray,
  bins_test: np.ndarray,
  num_classes: int,
  num_dims: int,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """GradientBoostingClassifier's algorithm with split search on binned codes.

  Per stage and class: a depth-3 regression tree on the residuals (one-hot label minus
  probability) grown by HistGradientBoosting's `TreeGrower` with unit hessians (its split
  gain is then the residuals' squared-error decrease, GradientBoostingClassifier's split
  criterion), leaves set to GradientBoostingClassifier's Newton step, and the importance of
  a split the squared-error decrease of the residuals, averaged over trees with a split.

  Args:
    bins_train: [N, F] binned codes (`_bin_codes`).
    y_train: [N] class indices.
    bins_test: [M, F] binned codes.
    num_classes: classes of the factor (2 trains one tree per stage, as GBC does).
    num_dims: code dims D; binned feature f is code dim f % D.
    rng: shuffles the features of every tree. Splits of equal gain (common in small nodes,
      where several dims separate the same points) go to the first feature; a random order
      spreads them over the dims as GradientBoostingClassifier's shuffled search does,
      instead of crediting the lowest dim.

  Returns:
    importances [D] summing to 1 (zeros if no tree split), raw train and test predictions.
  """
  if TreeGrower is None:
    raise ImportError(
      "The fast DCI grows its trees with scikit-learn's private TreeGrower "
      "(sklearn.ensemble._hist_gradient_boosting.grower), which this scikit-learn does not "
      "have; use mode='exact' (--config.eval.mode=exact) or scikit-learn 1.9."
    ) from _TREE_GROWER_ERROR
  num = len(y_train)
  prior = np.clip(np.bincount(y_train, minlength=num_classes) / num, _EPS, 1 - _EPS)
  if num_classes == 2:
    one_hot = (y_train == 1).astype(np.float64)[:, None]
    init = np.log(prior[1:] / (1 - prior[1:]))
    factor = 1.0
  else:
    one_hot = (y_train[:, None] == np.arange(num_classes)).astype(np.float64)
    init = np.log(prior)
    factor = (num_classes - 1) / num_classes
  raw = np.tile(init, (num, 1))
  raw_test = np.tile(init, (bins_test.shape[0], 1))
  unit_hessian = np.ones(1, np.float32)
  improvements = []
  for _ in range(_NUM_STAGES):
    if num_classes == 2:
      prob = 1.0 / (1.0 + np.exp(-raw))
    else:
      prob = np.exp(raw - raw.max(axis=1, keepdims=True))
      prob /= prob.sum(axis=1, keepdims=True)
    residuals = one_hot - prob
    hessians = prob * (1.0 - prob)
    for k in range(raw.shape[1]):
      residual = residuals[:, k]
      features = rng.permutation(bins_train.shape[1])
      grower = TreeGrower(
        np.asfortranarray(bins_train[:, features]),
        (-residual).astype(np.float32),
        unit_hessian,
        max_depth=_MAX_DEPTH,
        min_samples_leaf=1,
        n_bins=_MAX_SPLITS + 2,
        n_bins_non_missing=_MAX_SPLITS + 1,
        n_threads=1,
      )
      grower.grow()
      leaves = grower.finalized_leaves
      leaf = np.empty(num, np.int64)
      for index, node in enumerate(leaves):
        node.leaf_index = index
        leaf[node.sample_indices] = index
      count = np.bincount(leaf, minlength=len(leaves)).astype(np.float64)
      total = np.bincount(leaf, weights=residual, minlength=len(leaves))
      hessian = np.bincount(leaf, weights=hessians[:, k], minlength=len(leaves))
      with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(np.abs(hessian) < 1e-150, 0.0, factor * total / hessian)
      value *= _LEARNING_RATE
      raw[:, k] += value[leaf]
      improvement = np.zeros(num_dims)
      _replay_tree(
        grower.root, features, count, total, value, bins_test, raw_test[:, k], improvement
      )
      if len(leaves) == 1:
        continue
      improvements.append(improvement)
  if not improvements:
    return np.zeros(num_dims), raw, raw_test
  mean = np.mean(improvements, axis=0)
  return mean / mean.sum(), raw, raw_test


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
  bins_train, bins_test = _bin_codes(codes_train, codes_test, _MAX_COPIES)
  importance, raw, raw_test = _fit_gbc_histogram(
    bins_train,
    labels.reshape(-1),
    bins_test,
    len(classes),
    codes_train.shape[1],
    np.random.default_rng(random_state),
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
    mode: "exact" (GradientBoostingClassifier) or "fast" (the same boosting on binned
      split candidates, see the module docstring).
    random_state: exact: seed of the one stream the classifiers draw from in factor order;
      fast: seed of each factor's feature shuffles.

  Returns:
    importance: [D, K], rows codes, columns factors.
    train_accuracy, test_accuracy: mean over factors.
  """
  check_mode(mode)
  codes_train, codes_test = np.asarray(codes_train), np.asarray(codes_test)
  factors_train, factors_test = np.asarray(factors_train), np.asarray(factors_test)
  num_factors = factors_train.shape[1]
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
