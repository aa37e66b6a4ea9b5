"""Batched linear SVC on one feature, for the `fast` SAP score.

`fit_linear_svc_1d` minimizes the objective of `sklearn.svm.LinearSVC(C,
class_weight="balanced")` (the `exact` mode's estimator) on a single feature: liblinear's primal
L2-regularized squared hinge with a regularized bias, one-vs-rest where positives get
C * weight[class] and negatives plain C, as in liblinear's `train`. It is solved in NumPy by
exact-active-set Newton steps for every (code, factor, class) problem at once, the active-set
sums read from prefix sums of the sorted codes.

Labels are class indices `0..num_classes-1` (`linear.encode_labels`).
"""

from __future__ import annotations

import numpy as np

from gmg_jax.metrics.linear import padded_masks

# Newton step sizes tried at each SVC iteration; 0 keeps the iterate, so the objective never rises.
_SVC_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)


def balanced_class_weights(labels: np.ndarray, num_classes: np.ndarray) -> np.ndarray:
  """sklearn's `class_weight="balanced"`: n / (num_classes * count), [K, V_max] (0 if padded)."""
  width = int(np.max(num_classes))
  counts = np.stack([np.bincount(column, minlength=width) for column in labels.T])
  weights = labels.shape[0] / (num_classes[:, None] * np.maximum(counts, 1))
  return np.where(np.arange(width)[None, :] < num_classes[:, None], weights, 0.0)


class _SortedMoments:
  """Sums of 1, x, x^2 over the points on one side of a threshold, per code dim and class.

  Each code dim is sorted once. Per (dim, factor, class), the sorted positions of the class's
  points are laid out one after another with increasing keys, so that one `np.searchsorted`
  answers every (dim, factor, class) query, and prefix sums give the moments.
  """

  def __init__(self, x: np.ndarray, labels: np.ndarray, width: int):
    num, dims = x.shape
    factors = labels.shape[1]
    order = np.argsort(x, axis=0).T  # [D, N]
    self.sorted_x = x.T.ravel()[order + num * np.arange(dims)[:, None]]  # [D, N]
    # Prefix sums of x and x^2 over each dim's sorted points, flat [D * (N + 1)].
    self.all_x, self.all_xx = (
      np.concatenate([np.zeros((dims, 1)), np.cumsum(v, axis=1)], axis=1).ravel()
      for v in (self.sorted_x, self.sorted_x**2)
    )
    small = labels.astype(np.uint8 if width < 256 else np.int64)
    sorted_labels = small.T[:, order].transpose(1, 0, 2)  # [D, K, N] labels in x order
    position = np.argsort(sorted_labels, axis=-1, kind="stable")  # grouped by class
    flat = position + (np.arange(dims * factors) * num).reshape(dims, factors, 1)
    grouped_x = self.sorted_x.ravel()[position + (np.arange(dims) * num)[:, None, None]]
    self.class_x, self.class_xx = (
      np.concatenate([[0.0], np.cumsum(v)]) for v in (grouped_x.ravel(), grouped_x.ravel() ** 2)
    )
    group = np.arange(dims * factors).reshape(dims, factors, 1) * width  # [D, K, 1]
    grouped_labels = sorted_labels.ravel()[flat]
    self.keys = ((group + grouped_labels) * (num + 1) + position).ravel()  # increasing
    counts = np.stack([np.bincount(c, minlength=width) for c in labels.T])  # [K, V]
    starts = np.concatenate([np.zeros((factors, 1), np.int64), np.cumsum(counts, 1)], 1)
    offset = np.arange(dims * factors).reshape(dims, factors, 1) * num
    self.class_start = offset + starts[None, :, :-1]  # [D, K, V]
    stop = offset + starts[None, :, 1:]
    self.class_total = (
      (stop - self.class_start).astype(np.float64),
      self.class_x[stop] - self.class_x[self.class_start],
      self.class_xx[stop] - self.class_xx[self.class_start],
    )
    last = (np.arange(dims) * (num + 1) + num)[:, None, None]
    self.all_total = (float(num), self.all_x[last], self.all_xx[last])
    self.query_base = (group + np.arange(width)) * (num + 1)  # [D, K, V]
    self.dim_base = (np.arange(dims) * (num + 1))[:, None, None]

  def split(self, t: np.ndarray, upper: np.ndarray) -> tuple[list, list]:
    """Moments of class v (positives) and of the other classes (negatives) beyond t.

    A point exactly at t may be counted on either side; the callers only query thresholds
    where such a point contributes zero.

    Args:
      t: [..., D, K, V] thresholds (+-inf allowed).
      upper: [..., D, K, V] bool, True for the points with x > t, False for x < t.

    Returns:
      positives, negatives: each [count, sum x, sum x^2], arrays [..., D, K, V].
    """
    dims = self.sorted_x.shape[0]
    flat = np.moveaxis(t, -3, 0).reshape(dims, -1)
    rank = np.stack([np.searchsorted(c, q) for c, q in zip(self.sorted_x, flat, strict=True)])
    rank = np.moveaxis(rank.reshape(dims, *t.shape[:-3], *t.shape[-2:]), 0, -3)
    lookup = np.searchsorted(self.keys, self.query_base + rank)
    at = rank + self.dim_base
    below_class = (
      lookup - self.class_start,
      self.class_x[lookup] - self.class_x[self.class_start],
      self.class_xx[lookup] - self.class_xx[self.class_start],
    )
    below_all = (rank, self.all_x[at], self.all_xx[at])
    positives, negatives = [], []
    for below, total, below_any, total_any in zip(
      below_class, self.class_total, below_all, self.all_total, strict=True
    ):
      positive = np.where(upper, total - below, below)
      positives.append(positive)
      negatives.append(np.where(upper, total_any - below_any, below_any) - positive)
    return positives, negatives


def _svc_terms(moments, sign, cost, w, b):
  """Objective, gradient and Hessian terms of sum c (1 - s (w x + b))^2 over active points."""
  n, sx, sxx = moments
  a = 1.0 - sign * b
  value = cost * (a * a * n - 2.0 * a * sign * w * sx + w * w * sxx)
  grad_w = -2.0 * cost * sign * (a * sx - sign * w * sxx)
  grad_b = -2.0 * cost * sign * (a * n - sign * w * sx)
  return value, grad_w, grad_b, 2.0 * cost * sxx, 2.0 * cost * sx, 2.0 * cost * n


def _svc_active(moments: _SortedMoments, w, b, c_pos, c_neg):
  """Objective, gradient and Hessian of the 1-D squared-hinge SVC at (w, b), [..., D, K, V].

  Positives are active where w x < 1 - b, negatives where w x > -1 - b.
  """
  safe = np.where(w == 0.0, 1.0, w)
  t_pos = np.where(w == 0.0, np.where(b < 1.0, np.inf, -np.inf), (1.0 - b) / safe)
  t_neg = np.where(w == 0.0, np.where(b > -1.0, np.inf, -np.inf), (-1.0 - b) / safe)
  positives, _ = moments.split(t_pos, w < 0.0)
  _, negatives = moments.split(t_neg, w > 0.0)
  pos = _svc_terms(positives, 1.0, c_pos, w, b)
  neg = _svc_terms(negatives, -1.0, c_neg, w, b)
  value = 0.5 * (w * w + b * b) + pos[0] + neg[0]
  grad_w, grad_b = w + pos[1] + neg[1], b + pos[2] + neg[2]
  h_ww, h_wb, h_bb = 1.0 + pos[3] + neg[3], pos[4] + neg[4], 1.0 + pos[5] + neg[5]
  return value, grad_w, grad_b, h_ww, h_wb, h_bb


def fit_linear_svc_1d(
  x: np.ndarray,
  labels: np.ndarray,
  num_classes: np.ndarray,
  *,
  c: float = 0.01,
  num_iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
  """Fits `LinearSVC(C=c, class_weight="balanced")` on each code dim for each factor.

  Every problem has two unknowns and a piecewise-quadratic objective, so it is solved by
  Newton steps on the exact active set (with step halving), all (dim, factor, class)
  problems at once. The sums over the active points (one side of a threshold) come from
  prefix sums over each dim sorted once, so an iteration costs O(D K V log N), not O(N).

  Args:
    x: [N, D] codes; each dim is one single-feature problem.
    labels: [N, K] class indices (`encode_labels`).
    num_classes: [K] classes per column; each must be >= 2.
    c: sklearn's `C`.
    num_iterations: Newton iterations (they converge in about ten).

  Returns:
    w, b: [K, D, V_max] one-vs-rest slopes and intercepts (for a binary factor, column 1 is
      sklearn's single model, class 1 positive; column 0 and padded columns are 0).
  """
  x = np.asarray(x, np.float64)
  labels = np.asarray(labels)
  num_classes = np.asarray(num_classes)
  width = int(num_classes.max())
  class_weight = balanced_class_weights(labels, num_classes)
  # liblinear: one-vs-rest negatives get plain C; a binary problem weights both of its classes.
  c_neg = np.ones_like(class_weight)
  binary = np.flatnonzero(num_classes == 2)
  c_neg[binary, 1] = class_weight[binary, 0]
  _, free = padded_masks(num_classes)
  c_pos = np.where(free, c * class_weight, 0.0)[None]  # [1, K, V]
  c_neg = np.where(free, c * c_neg, 0.0)[None]
  moments = _SortedMoments(x, labels, width)
  shape = (x.shape[1], labels.shape[1], width)
  w, b = np.zeros(shape), np.zeros(shape)
  for _ in range(num_iterations):
    value, grad_w, grad_b, h_ww, h_wb, h_bb = _svc_active(moments, w, b, c_pos, c_neg)
    det = h_ww * h_bb - h_wb**2
    step_w = -(h_bb * grad_w - h_wb * grad_b) / det
    step_b = -(h_ww * grad_b - h_wb * grad_w) / det
    sizes = np.asarray(_SVC_STEPS)[:, None, None, None]
    trial = _svc_active(moments, w + sizes * step_w, b + sizes * step_b, c_pos, c_neg)[0]
    trial[-1] = value  # step 0 keeps the iterate, so the objective never rises
    best = sizes[np.argmin(trial, axis=0), 0, 0, 0]
    if np.all(np.abs(best * step_w) + np.abs(best * step_b) < 1e-12):
      break
    w, b = w + best * step_w, b + best * step_b
  return w.transpose(1, 0, 2), b.transpose(1, 0, 2)


def _envelope(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Where argmax_v (w_v x + b_v) changes, for each row of lines.

  Args:
    w, b: [D, V] slopes and intercepts.

  Returns:
    breaks: [D, P] sorted crossing points of every pair of lines.
    winner: [D, P + 1] the argmax between consecutive breaks (first of ties, as np.argmax).
  """
  with np.errstate(divide="ignore", invalid="ignore"):
    cross = (b[:, None, :] - b[:, :, None]) / (w[:, :, None] - w[:, None, :])
  cross = cross.reshape(len(w), -1)
  finite = np.isfinite(cross)
  fill = np.max(np.where(finite, cross, -np.inf), axis=1, keepdims=True)
  breaks = np.sort(np.where(finite, cross, np.where(np.isfinite(fill), fill, 0.0)), axis=1)
  inside = np.concatenate(
    [breaks[:, :1] - 1.0, (breaks[:, 1:] + breaks[:, :-1]) / 2.0, breaks[:, -1:] + 1.0], 1
  )
  winner = np.argmax(inside[:, :, None] * w[:, None, :] + b[:, None, :], axis=-1)
  return breaks, winner


def linear_svc_1d_accuracy(
  w: np.ndarray, b: np.ndarray, x: np.ndarray, labels: np.ndarray, num_classes: np.ndarray
) -> np.ndarray:
  """Test accuracy of `fit_linear_svc_1d`'s classifiers, as sklearn's `predict` decides.

  A multi-class prediction argmax_v (w_v x + b_v) is piecewise constant in the single
  feature x, so it is read from the upper envelope of the class lines (a point exactly on a
  crossing may go either way).

  Args:
    w, b: [K, D, V_max] from `fit_linear_svc_1d`.
    x: [N, D] test codes.
    labels: [N, K] test class indices (-1 for a value never seen in training).
    num_classes: [K] classes per column.

  Returns:
    [D, K] accuracy of the classifier of code d for factor k.
  """
  x = np.asarray(x, np.float64)
  w, b, labels = np.asarray(w), np.asarray(b), np.asarray(labels)
  accuracy = np.zeros((x.shape[1], len(num_classes)))
  # Each dim's test codes sorted once: searchsorted runs much faster on increasing queries.
  order = np.argsort(x, axis=0)
  sorted_x = np.take_along_axis(x, order, axis=0)
  for k, width in enumerate(np.asarray(num_classes)):
    if width == 2:
      predicted = (x * w[k, :, 1] + b[k, :, 1] > 0).astype(np.int64)  # [N, D]
      accuracy[:, k] = np.mean(predicted == labels[:, k : k + 1], axis=0)
      continue
    breaks, winner = _envelope(w[k, :, :width], b[k, :, :width])
    for d in range(x.shape[1]):
      predicted = winner[d, np.searchsorted(breaks[d], sorted_x[:, d])]
      accuracy[d, k] = np.mean(predicted == labels[order[:, d], k])
  return accuracy
