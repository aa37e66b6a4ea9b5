"""SAP score (Kumar et al. 2018), as disentanglement_lib `sap_score.py`.

For discrete factors (disentanglement_lib's setting), S_ij is the test accuracy of
`LinearSVC(C=0.01, class_weight="balanced")` predicting factor j from code dim i alone; SAP is
the mean over factors of the gap between the two best codes. For continuous factors S_ij is
the squared correlation (0 for a code of variance <= 1e-12).

`exact` fits the D x K sklearn classifiers one by one; `fast` solves the same liblinear
objective for all of them at once to its exact optimum (`svc.fit_linear_svc_1d`: Newton
steps on the active set, whose sums come from prefix sums of each sorted code dim) and reads
the test predictions off each classifier's upper envelope; its slopes agree with liblinear's
to ~1e-5, so the accuracies differ only for a test point between the two decision points.
"""

from __future__ import annotations

import numpy as np
from sklearn import svm

from gmg_jax.metrics import linear, svc
from gmg_jax.metrics.information import check_mode


def _continuous_score_matrix(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """Squared correlation of each code dim with each factor, [D, K]."""
  matrix = np.zeros([codes.shape[1], factors.shape[1]])
  for i in range(codes.shape[1]):
    for j in range(factors.shape[1]):
      cov = np.cov(codes[:, i], factors[:, j], ddof=1)
      if cov[0, 0] > 1e-12:
        matrix[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
  return matrix


def sap_score_matrix(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  continuous_factors: bool = False,
  mode: str = "exact",
  random_state: int = 0,
) -> np.ndarray:
  """Predictability of each factor from each single code dim.

  Args:
    codes_train: [N, D] codes.
    factors_train: [N, K] factors.
    codes_test: [M, D] codes (unused for continuous factors).
    factors_test: [M, K] factors.
    continuous_factors: squared correlation instead of classifier accuracy.
    mode: "exact" or "fast".
    random_state: seed of the sklearn classifiers (exact mode).

  Returns:
    [D, K] score matrix, rows codes, columns factors.
  """
  check_mode(mode)
  codes_train, factors_train = np.asarray(codes_train), np.asarray(factors_train)
  codes_test, factors_test = np.asarray(codes_test), np.asarray(factors_test)
  if continuous_factors:
    return _continuous_score_matrix(codes_train, factors_train)
  if mode == "fast":
    labels, num_classes = linear.encode_labels(factors_train)
    classes = [np.unique(column) for column in factors_train.T]
    # Test values never seen in training can never be predicted: map them to -1.
    test_labels = np.stack(
      [
        np.where(np.isin(column, values), np.searchsorted(values, column), -1)
        for column, values in zip(factors_test.T, classes, strict=True)
      ],
      axis=1,
    )
    w, b = svc.fit_linear_svc_1d(codes_train, labels, num_classes)
    return svc.linear_svc_1d_accuracy(w, b, codes_test, test_labels, num_classes)
  matrix = np.zeros([codes_train.shape[1], factors_train.shape[1]])
  for i in range(codes_train.shape[1]):
    for j in range(factors_train.shape[1]):
      classifier = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=random_state)
      classifier.fit(codes_train[:, i : i + 1], factors_train[:, j])
      matrix[i, j] = np.mean(classifier.predict(codes_test[:, i : i + 1]) == factors_test[:, j])
  return matrix


def sap(
  codes_train: np.ndarray,
  factors_train: np.ndarray,
  codes_test: np.ndarray,
  factors_test: np.ndarray,
  *,
  continuous_factors: bool = False,
  mode: str = "exact",
  random_state: int = 0,
) -> dict[str, float]:
  """SAP score (disentanglement_lib defaults: 10000 train, 5000 test, discrete factors).

  Args: as `sap_score_matrix`.

  Returns:
    {"SAP_score": mean over factors of (best - second best) score}.
  """
  matrix = sap_score_matrix(
    codes_train,
    factors_train,
    codes_test,
    factors_test,
    continuous_factors=continuous_factors,
    mode=mode,
    random_state=random_state,
  )
  ordered = np.sort(matrix, axis=0)
  return {"SAP_score": float(np.mean(ordered[-1] - ordered[-2]))}
