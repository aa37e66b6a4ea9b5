"""GradientBoostingClassifier's algorithm compiled with numba: the trees of DCI's fast mode.

The same estimator as `sklearn.ensemble.GradientBoostingClassifier()` with its defaults (100
stages, learning rate 0.1, depth-3 trees, one tree per stage and class, or one for two
classes), step for step:
- start: the log prior (multiclass; softmax is shift invariant) or the prior log-odds (binary);
- each stage: residuals = one-hot labels - probabilities, one regression tree per class grown
  to depth 3 on float32 codes, each node split where the residuals' squared error
  drops most (`squared_error`: maximize S_L^2 / n_L + S_R^2 / n_R over all thresholds halfway
  between consecutive node values more than 1e-7 apart, min 1 sample per leaf, no split of a
  node with < 2 samples or impurity <= float64 eps);
- leaves: the Newton step (K - 1) / K * sum(r) / sum(p (1 - p)) (binary: without the factor),
  times the learning rate;
- importances: per tree the squared-error decrease of each split summed per feature, averaged
  over trees with a split and normalized.

What differs is the split search: sklearn sorts each node's values per feature (O(n log n) per
node); here every feature is sorted once and each depth of a tree is one pass over the sorted
order per feature, tracking all nodes of that depth at once. Splits of equal gain (common in
small nodes late in boosting, where several features separate the same points, or samples with
the same residual make two thresholds equally good) are decided as in sklearn, but not with
its random draws or its rounding: ties between features go to the first of a random order
drawn per node from our own generator, ties within a feature to the first threshold up to
rounding (sklearn accumulates the node sums in another order). So the trees equal sklearn's
until the first such tie (tests/test_metrics.py), and the values differ from exact's as exact's
differ between two seeds.
"""

from __future__ import annotations

import numba
import numpy as np

# GradientBoostingClassifier's defaults.
NUM_STAGES = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 3
# sklearn's tree constants: values closer than this are never split between
# (`FEATURE_THRESHOLD`), and a node whose residuals' variance is at most eps is a leaf.
_FEATURE_THRESHOLD = np.float32(1e-7)
_EPSILON = np.finfo(np.float64).eps


@numba.njit(nogil=True, cache=True)
def _grow_tree(order, sorted_values, columns, residual, priority, max_depth):
  """One regression tree on `residual`, grown depth by depth.

  Args:
    order: [D, N] sample indices sorting each feature.
    sorted_values: [D, N] each feature's values in that order (float32).
    columns: [D, N] the features (float32).
    residual: [N] float64 targets.
    priority: [2^max_depth - 1, D] random keys: ties between features go to the smaller key.
    max_depth: depth of the tree.

  Returns:
    node_of [N] (leaf of each sample, heap numbering: children of j are 2j + 1, 2j + 2),
    feature [nodes] (-1 for no split), threshold [nodes], improvement [nodes] (squared-error
    decrease of each split).
  """
  num_dims, num = order.shape
  num_nodes = 2 ** (max_depth + 1) - 1
  feature = np.full(num_nodes, -1, np.int64)
  threshold = np.zeros(num_nodes)
  improvement = np.zeros(num_nodes)
  count = np.zeros(num_nodes)
  total = np.zeros(num_nodes)
  squares = np.zeros(num_nodes)
  node_of = np.zeros(num, np.int8)
  for i in range(num):
    total[0] += residual[i]
    squares[0] += residual[i] * residual[i]
  count[0] = num
  # The residuals in each feature's order: the scans below read them sequentially.
  sorted_residual = np.empty((num_dims, num))
  for d in range(num_dims):
    for p in range(num):
      sorted_residual[d, p] = residual[order[d, p]]
  for depth in range(max_depth):
    first, width = 2**depth - 1, 2**depth
    splittable = np.zeros(width, np.bool_)
    for j in range(width):
      n = count[first + j]
      if n >= 2 and squares[first + j] / n - (total[first + j] / n) ** 2 > _EPSILON:
        splittable[j] = True
    if not splittable.any():
      break
    best = np.full(width, -np.inf)
    best_dim = np.full(width, -1, np.int64)
    best_threshold = np.zeros(width)
    left_sum = np.zeros(width)
    left_count = np.zeros(width)
    last = np.zeros(width, np.float32)
    for d in range(num_dims):
      left_sum[:] = 0.0
      left_count[:] = 0.0
      for p in range(num):
        j = np.int64(node_of[order[d, p]]) - first
        if j < 0 or not splittable[j]:
          continue
        value = sorted_values[d, p]
        n_left = left_count[j]
        if n_left > 0 and value > last[j] + _FEATURE_THRESHOLD:
          node = first + j
          s_left = left_sum[j]
          s_right = total[node] - s_left
          gain = s_left * s_left / n_left + s_right * s_right / (count[node] - n_left)
          if gain > best[j] or (
            gain == best[j] and priority[node, d] < priority[node, best_dim[j]]
          ):
            best[j] = gain
            best_dim[j] = d
            best_threshold[j] = np.float64(last[j]) / 2.0 + np.float64(value) / 2.0
        left_sum[j] += sorted_residual[d, p]
        left_count[j] += 1.0
        last[j] = value
    for j in range(width):
      if best_dim[j] >= 0:
        node = first + j
        feature[node] = best_dim[j]
        threshold[node] = best_threshold[j]
        improvement[node] = best[j] - total[node] * total[node] / count[node]
    for i in range(num):
      node = node_of[i]
      if node >= first and feature[node] >= 0:
        child = 2 * node + (2 if columns[feature[node], i] > threshold[node] else 1)
        node_of[i] = child
        count[child] += 1.0
        total[child] += residual[i]
        squares[child] += residual[i] * residual[i]
  return node_of, feature, threshold, improvement


@numba.njit(nogil=True, cache=True)
def _boost(order, sorted_values, columns, labels, test_columns, raw, raw_test, priority):
  """Boosting stages; updates `raw` [N, T] and `raw_test` [M, T] in place.

  T = 1 (two classes, binomial loss) or the number of classes (multinomial loss).

  Returns:
    [D] squared-error decrease per feature summed over trees, and the number of trees with a
    split.
  """
  num_dims, num = order.shape
  num_trees = raw.shape[1]
  binary = num_trees == 1
  factor = 1.0 if binary else (num_trees - 1) / num_trees
  importance = np.zeros(num_dims)
  trees_with_split = 0
  residuals = np.empty((num, num_trees))
  hessians = np.empty((num, num_trees))
  for stage in range(priority.shape[0]):
    for i in range(num):
      if binary:
        prob = 1.0 / (1.0 + np.exp(-raw[i, 0]))
        residuals[i, 0] = (1.0 if labels[i] == 1 else 0.0) - prob
        hessians[i, 0] = prob * (1.0 - prob)
      else:
        top = raw[i].max()
        norm = 0.0
        for k in range(num_trees):
          norm += np.exp(raw[i, k] - top)
        for k in range(num_trees):
          prob = np.exp(raw[i, k] - top) / norm
          residuals[i, k] = (1.0 if labels[i] == k else 0.0) - prob
          hessians[i, k] = prob * (1.0 - prob)
    for k in range(num_trees):
      residual = residuals[:, k].copy()
      node_of, feature, threshold, improvement = _grow_tree(
        order, sorted_values, columns, residual, priority[stage, k], MAX_DEPTH
      )
      if feature[0] >= 0:
        trees_with_split += 1
        for node in range(feature.shape[0]):
          if feature[node] >= 0:
            importance[feature[node]] += improvement[node]
      leaf_sum = np.zeros(feature.shape[0])
      leaf_hessian = np.zeros(feature.shape[0])
      for i in range(num):
        leaf_sum[node_of[i]] += residual[i]
        leaf_hessian[node_of[i]] += hessians[i, k]
      value = np.zeros(feature.shape[0])
      for node in range(feature.shape[0]):
        if abs(leaf_hessian[node]) >= 1e-150:  # sklearn's _safe_divide
          value[node] = LEARNING_RATE * factor * leaf_sum[node] / leaf_hessian[node]
      for i in range(num):
        raw[i, k] += value[node_of[i]]
      for m in range(raw_test.shape[0]):
        node = 0
        while feature[node] >= 0:
          node = 2 * node + (2 if test_columns[feature[node], m] > threshold[node] else 1)
        raw_test[m, k] += value[node]
  return importance, trees_with_split


def sort_columns(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Codes [N, D] as float32 columns [D, N], the order sorting each and the sorted values."""
  columns = np.ascontiguousarray(np.asarray(codes, np.float32).T)
  order = np.argsort(columns, axis=1, kind="stable")
  return columns, order, np.take_along_axis(columns, order, axis=1)


def fit_predict(
  codes_train: np.ndarray,
  labels: np.ndarray,
  codes_test: np.ndarray,
  num_classes: int,
  rng: np.random.Generator,
  num_stages: int = NUM_STAGES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """GradientBoostingClassifier's fit: importances and raw predictions.

  Args:
    codes_train: [N, D] codes (cast to float32, as sklearn's trees do).
    labels: [N] class indices in [0, num_classes).
    codes_test: [M, D] codes.
    num_classes: number of classes, >= 2 (two fit one tree per stage; DCI checks this).
    rng: draws the tie-breaking order of the features at every node.
    num_stages: boosting stages (GradientBoostingClassifier's `n_estimators`).

  Returns:
    importances [D] summing to 1 (zeros if no tree split), raw train [N, T] and test [M, T]
    predictions (T = 1 for two classes: the log-odds of class 1).
  """
  columns, order, sorted_values = sort_columns(codes_train)
  test_columns = np.ascontiguousarray(np.asarray(codes_test, np.float32).T)
  num = len(labels)
  prior = np.clip(np.bincount(labels, minlength=num_classes) / num, _EPSILON, 1 - _EPSILON)
  init = np.log(prior[1:] / (1 - prior[1:])) if num_classes == 2 else np.log(prior)
  raw = np.tile(init, (num, 1))
  raw_test = np.tile(init, (test_columns.shape[1], 1))
  priority = rng.random((num_stages, raw.shape[1], 2**MAX_DEPTH - 1, columns.shape[0]))
  importance, trees_with_split = _boost(
    order,
    sorted_values,
    columns,
    np.asarray(labels, np.int64),
    test_columns,
    raw,
    raw_test,
    priority,
  )
  if trees_with_split == 0:
    return np.zeros(columns.shape[0]), raw, raw_test
  return importance / importance.sum(), raw, raw_test
