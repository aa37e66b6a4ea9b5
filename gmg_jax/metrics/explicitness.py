"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib
`modularity_explicitness.py`.

Modularity comes from the histogram MI matrix (see `information`). Explicitness of a factor is
the macro one-vs-rest ROC-AUC of `LogisticRegression()` (sklearn defaults) trained on all code
dims, standardized with the training mean and std (a constant code dim is only centred, where
disentanglement_lib divides by its zero std and its LogisticRegression fails on the NaNs).
`exact` fits sklearn per factor and scores with `roc_auc_score`; `fast` fits all factors' models
to the same optimum by Newton steps (`linear.fit_logistic_regression`, converged to sklearn's
gradient tolerance) and computes every class's AUC from one sort of float32 probabilities
(`_rank_aucs`).
"""

from __future__ import annotations

import numpy as np
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
  """`_roc_auc` by ranks (`_rank_aucs`), for float32 or float64 `proba` in [0, 1]."""
  one_hot = labels[None, :] == classes[:, None]  # [classes, N]
  auc = _rank_aucs(np.ascontiguousarray(proba.T), one_hot)
  return float(np.nanmean(auc))


def _rank_aucs(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
  """ROC-AUC of each row of `scores` against the same row of `positive`, by ranks.

  The Mann-Whitney statistic with tied scores given their mean rank (sklearn's trapezoidal
  ROC-AUC). A float score in [0, 1] has increasing bits (below 2^62 for float64), so each
  point is one unsigned key, bits * 2 + is_positive, and one sort of the keys gives every
  rank. Within a tie the sort puts negatives first, which credits each of the group's
  n_pos n_neg mixed pairs with 1 instead of 1/2; such a group shows as one step from an even
  key k to k + 1 (negative to positive of the same score), so only those few groups are
  measured and corrected.

  Args:
    scores: [C, N] float32 or float64 in [0, 1].
    positive: [C, N] bool.

  Returns:
    [C] AUCs (NaN for a row without positives or without negatives).
  """
  unsigned = np.uint32 if scores.dtype == np.float32 else np.uint64
  keys = np.asarray(scores, np.float64 if unsigned == np.uint64 else None).view(unsigned) << 1
  keys |= positive
  keys.sort(axis=1)
  num = keys.shape[1]
  pos_count = np.count_nonzero(positive, axis=1).astype(np.float64)
  neg_count = num - pos_count
  rank_sum = (keys & 1).astype(np.float64) @ np.arange(1.0, num + 1.0)
  rows, steps = np.nonzero(np.diff(keys, axis=1) == 1)
  mixed = (keys[rows, steps] & 1) == 0
  for row in np.unique(rows[mixed]):
    step_keys = keys[row, steps[mixed & (rows == row)]]
    start = np.searchsorted(keys[row], step_keys, side="left")
    stop = np.searchsorted(keys[row], step_keys + 1, side="right")
    negatives = np.searchsorted(keys[row], step_keys, side="right") - start
    rank_sum[row] -= 0.5 * np.sum(negatives * (stop - start - negatives))
  with np.errstate(divide="ignore", invalid="ignore"):
    auc = (rank_sum - pos_count * (pos_count + 1.0) / 2.0) / (pos_count * neg_count)
  return np.where((pos_count > 0) & (neg_count > 0), auc, np.nan)


def _stacked_macro_aucs(
  proba: np.ndarray, labels: np.ndarray, num_classes: np.ndarray
) -> np.ndarray:
  """`_roc_auc` of every factor from `linear.logistic_proba_stacked`'s probabilities.

  A binary factor has one row, p(class 1): class 1's AUC is that of p, class 0's (scored by
  1 - p) is 1 - the AUC of p with class 0 as the positives.

  Args:
    proba: [R, N] float32 stacked class probabilities.
    labels: [N, K] class indices (-1 for a value not among the training classes).
    num_classes: [K].

  Returns:
    [K] macro AUC over the classes that occur and do not fill all of `labels`.
  """
  labels = np.ascontiguousarray(labels.T)  # [K, N]
  scores, positive, factor = [proba], [], []
  for k, width in enumerate(num_classes):
    classes = np.arange(1, 2) if width == 2 else np.arange(width)
    positive.append(labels[k] == classes[:, None])
    factor.append(np.full(len(classes), k))
  binary = np.flatnonzero(num_classes == 2)
  rows = np.where(num_classes == 2, 1, num_classes)
  scores.append(proba[(np.cumsum(rows) - 1)[binary]])  # class 0 of each binary factor
  positive.extend(labels[k][None] == 0 for k in binary)
  factor.append(binary)
  auc = _rank_aucs(np.concatenate(scores), np.concatenate(positive))
  auc[len(proba) :] = 1.0 - auc[len(proba) :]
  factor = np.concatenate(factor)
  scored = ~np.isnan(auc)
  totals = np.bincount(factor, np.where(scored, auc, 0.0), minlength=len(num_classes))
  return totals / np.bincount(factor, scored, minlength=len(num_classes))


def _class_index(classes: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Index of each value in the sorted `classes`, -1 where it is none of them."""
  index = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
  return np.where(classes[index] == values, index, -1)


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
    # Class indices as `linear.encode_labels` gives them, from the classes found above.
    labels = np.stack(
      [_class_index(c, column) for c, column in zip(classes, factors_train.T, strict=True)], 1
    )
    num_classes = np.array([len(c) for c in classes])
    # Small matrix products: BLAS threads only contend for a shared CPU.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
      weights, bias, proba_train = linear.fit_logistic_regression(
        x_train, labels, num_classes, return_proba=True
      )
      proba_test = linear.logistic_proba_stacked(weights, bias, x_test, num_classes)
    test_labels = np.stack(
      [_class_index(c, column) for c, column in zip(classes, factors_test.T, strict=True)], 1
    )
    return (
      _stacked_macro_aucs(proba_train, labels, num_classes),
      _stacked_macro_aucs(proba_test, test_labels, num_classes),
    )
  models = [linear_model.LogisticRegression().fit(x_train, y) for y in factors_train.T]
  proba_train = [m.predict_proba(x_train) for m in models]
  proba_test = [m.predict_proba(x_test) for m in models]
  train = [_roc_auc(y, c, p) for y, c, p in zip(factors_train.T, classes, proba_train, strict=True)]
  test = [_roc_auc(y, c, p) for y, c, p in zip(factors_test.T, classes, proba_test, strict=True)]
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
