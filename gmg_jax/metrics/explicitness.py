"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib
`modularity_explicitness.py`.

Modularity comes from the histogram MI matrix (see `information`). Explicitness of a factor is
the macro one-vs-rest ROC-AUC of `LogisticRegression()` (sklearn defaults) trained on all code
dims, standardized with the training mean and std (a constant code dim is only centred, where
disentanglement_lib divides by its zero std and its LogisticRegression fails on the NaNs).
`exact` fits sklearn per factor and scores with `roc_auc_score`; `fast` fits all factors' models
in one L-BFGS run (`linear.fit_logistic_regression`) and computes every class's AUC from one
argsort.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import threadpoolctl
from sklearn import linear_model, metrics

from gmg_jax.metrics import linear
from gmg_jax.metrics.information import (
  check_mode,
  discrete_mutual_info,
  histogram_discretize,
  modularity,
)


def _roc_auc(labels: np.ndarray, classes: np.ndarray, proba: np.ndarray) -> float:
  """Macro ROC-AUC of one-hot `labels` [N] against `proba` [N, len(classes)].

  disentanglement_lib binarizes with a MultiLabelBinarizer fit on the evaluated labels, which
  equals this one-hot when every class occurs and fails otherwise; a class absent (or alone) in
  `labels` has no AUC and is left out here instead.
  """
  one_hot = (labels[:, None] == classes[None, :]).astype(int)
  scored = (one_hot.min(axis=0) == 0) & (one_hot.max(axis=0) == 1)
  return float(metrics.roc_auc_score(one_hot[:, scored], proba[:, scored]))


def _roc_auc_ranks(labels: np.ndarray, classes: np.ndarray, proba: np.ndarray) -> float:
  """`_roc_auc` by the Mann-Whitney statistic: for each class, (rank sum of its points'
  scores - n_pos (n_pos + 1) / 2) / (n_pos n_neg) with tied scores given their mean rank,
  which equals sklearn's trapezoidal ROC-AUC.

  All classes are ranked by one argsort; only a column with tied scores (a constant code,
  say) takes `scipy.stats.rankdata`'s slower mean ranks.
  """
  one_hot = labels[:, None] == classes[None, :]
  positives = one_hot.sum(axis=0)
  negatives = len(labels) - positives
  scored = (positives > 0) & (negatives > 0)
  scores, one_hot = proba[:, scored].T, one_hot[:, scored].T  # [classes, N]
  order = np.argsort(scores, axis=1)
  ranks = np.arange(1.0, len(labels) + 1.0)
  rank_sum = np.take_along_axis(one_hot, order, axis=1) @ ranks
  ties = np.any(np.diff(np.take_along_axis(scores, order, axis=1), axis=1) == 0, axis=1)
  for j in np.flatnonzero(ties):
    rank_sum[j] = scipy.stats.rankdata(scores[j])[one_hot[j]].sum()
  pos, neg = positives[scored], negatives[scored]
  return float(np.mean((rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)))


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Scales both sets by the training mean and std (a constant dim is only centred)."""
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = np.where(std == 0.0, 1.0, std)
  return (train - mean) / std, (test - mean) / std


def explicitness(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  mode: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
  """Per-factor explicitness.

  Args:
    codes_train: [N, D] codes.
    factors_train: [N, K] discrete factors, each with >= 2 values.
    codes_test: [M, D] codes.
    factors_test: [M, K] discrete factors.
    mode: "exact" or "fast".

  Returns:
    train, test: [K] ROC-AUC per factor.
  """
  check_mode(mode)
  # Float32 codes stay float32, as sklearn then fits in float32 like disentanglement_lib does.
  x_train, x_test = _standardize(np.asarray(codes_train), np.asarray(codes_test))
  factors_train, factors_test = np.asarray(factors_train), np.asarray(factors_test)
  classes = [np.unique(column) for column in factors_train.T]
  if mode == "fast":
    labels, num_classes = linear.encode_labels(factors_train)
    # Small matrix products: BLAS threads only contend for a shared CPU.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
      weights, bias = linear.fit_logistic_regression(x_train, labels, num_classes)
    proba_train = linear.logistic_predict_proba(weights, bias, x_train, num_classes)
    proba_test = linear.logistic_predict_proba(weights, bias, x_test, num_classes)
  else:
    models = [linear_model.LogisticRegression().fit(x_train, y) for y in factors_train.T]
    proba_train = [m.predict_proba(x_train) for m in models]
    proba_test = [m.predict_proba(x_test) for m in models]
  auc = _roc_auc if mode == "exact" else _roc_auc_ranks
  train = [auc(y, c, p) for y, c, p in zip(factors_train.T, classes, proba_train, strict=True)]
  test = [auc(y, c, p) for y, c, p in zip(factors_test.T, classes, proba_test, strict=True)]
  return np.array(train), np.array(test)


def modularity_explicitness(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  num_bins: int = 20,
  mode: str = "exact",
) -> dict[str, float]:
  """Modularity and explicitness (disentanglement_lib defaults: 10000 / 5000 points, 20 bins).

  Args:
    codes_train: [N, D] codes.
    factors_train: [N, K] discrete factors.
    codes_test: [M, D] codes.
    factors_test: [M, K] discrete factors.
    num_bins: histogram bins per code dim for the MI matrix.
    mode: "exact" or "fast".

  Returns:
    {"modularity_score", "explicitness_score_train", "explicitness_score_test"}.
  """
  bins = histogram_discretize(codes_train, num_bins, mode=mode)
  mi = discrete_mutual_info(bins, factors_train, mode=mode)
  train, test = explicitness(codes_train, factors_train, codes_test, factors_test, mode=mode)
  return {
    "modularity_score": modularity(mi),
    "explicitness_score_train": float(np.mean(train)),
    "explicitness_score_test": float(np.mean(test)),
  }
