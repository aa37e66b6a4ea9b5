"""Batched logistic regression for the `fast` metrics (explicitness, the BetaVAE score).

`fit_logistic_regression` minimizes the objective of `sklearn.linear_model.LogisticRegression()`
(the `exact` mode's estimator) with its defaults (L2, C=1, unpenalized intercept, multinomial for
more than two classes, a single logit for two), so the two modes differ only by solver tolerance
and rounding. It is solved by damped Newton steps with the exact Hessian for all factors at once
(float32 matrix products), warm-started on nested subsamples. `metrics/svc.py` holds the linear
SVC of the SAP score.

Labels are class indices `0..num_classes-1` (see `encode_labels`).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

# Warm starts of `fit_logistic_regression`: (N / fraction points, gradient tolerance). The
# subsample optimum is only as close to the full one as sampling allows (its full-data
# gradient is ~1e-2 at N / 4 on standardized codes), so its stages stop early.
_WARM_STARTS = ((16, 3e-2), (4, 3e-3))


def encode_labels(factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Maps each factor column to class indices in sorted order (as sklearn's `classes_`).

  Args:
    factors: [N, K] integer factor values.

  Returns:
    labels: [N, K] int32 class indices per column.
    num_classes: [K] int number of distinct values per column.
  """
  factors = np.asarray(factors)
  columns = [np.unique(column, return_inverse=True) for column in factors.T]
  labels = np.stack([inverse.reshape(-1) for _, inverse in columns], axis=1).astype(np.int32)
  return labels, np.array([len(values) for values, _ in columns])


def padded_masks(num_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Valid-class and trainable-column masks, [K, V_max] each.

  A binary factor trains only column 1 against a fixed zero logit, which is sklearn's single
  logistic vector; a multinomial 2-class model would halve the effective penalty.
  """
  width = int(num_classes.max())
  valid = np.arange(width)[None, :] < num_classes[:, None]
  free = valid & ~((num_classes[:, None] == 2) & (np.arange(width)[None, :] == 0))
  return valid, free


def _stacked_softmax(
  logits: np.ndarray, bounds: np.ndarray, binary: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Probabilities of stacked factor rows, in place, and each factor's log-normalizer sum.

  Args:
    logits: [R, N] float32; factor k owns rows bounds[k]:bounds[k + 1], a binary factor the
      single logit of class 1.
    bounds: [K + 1] row offsets.
    binary: [K] bool.

  Returns:
    proba: [R, N] (the logits' buffer): softmax over a factor's rows, sigmoid for a binary one.
    normalizer: [K] float64 sum over points of log sum_a exp(logit_a) (log(1 + exp(z)) if binary).
  """
  normalizer = np.empty(len(binary))
  for k, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
    block = logits[start:stop]
    if binary[k]:
      exp = np.exp(-np.abs(block))
      normalizer[k] = np.sum(np.maximum(block, 0.0) + np.log1p(exp), dtype=np.float64)
      np.divide(np.where(block >= 0.0, 1.0, exp), 1.0 + exp, out=block)
    else:
      top = block.max(axis=0)
      np.exp(np.subtract(block, top, out=block), out=block)
      total = block.sum(axis=0)
      normalizer[k] = np.sum(np.log(total) + top, dtype=np.float64)
      block /= total
  return logits, normalizer


@functools.cache
def _off_diagonal_pairs(rows: int) -> tuple[np.ndarray, np.ndarray]:
  """np.triu_indices(rows, 1), cached."""
  return np.triu_indices(rows, 1)


@functools.cache
def _hessian_layout(rows: int, size: int, binary: bool) -> tuple[np.ndarray, ...]:
  """Where `_StackedLogistic.newton_step`'s packed pair blocks go in a factor's Hessian.

  Args:
    rows: parameter rows of the factor (1 if binary).
    size: features per row, D + 1 (the bias last).
    binary: whether the factor is binary.

  Returns:
    scatter, source: flat indices into the [rows size, rows size] Hessian and into the packed
      [pairs, size (size + 1) / 2] products, one entry per Hessian entry.
    off_diagonal: [pairs] bool, a < b (pairs in np.triu_indices order).
    penalized: [rows size] 1 for a weight, 0 for a bias (the diagonal of the penalty).
    gauge: [rows size, rows size] v v^T with v = 1 / sqrt(rows) on a multinomial factor's
      biases (zero if binary): shifting all biases alike changes nothing, a flat direction
      the gradient has no part in, and unit curvature there makes the step unique.
  """
  first, second = np.triu_indices(rows)
  upper = np.triu_indices(size)
  pair, entry = np.meshgrid(np.arange(len(first)), np.arange(len(upper[0])), indexing="ij")
  scatter, source = [], []
  for a, b in ((first, second), (second, first)):
    for i, j in (upper, upper[::-1]):
      scatter.append(((a[pair] * size + i[entry]) * rows + b[pair]) * size + j[entry])
      source.append(pair * len(upper[0]) + entry)
  scatter, source = np.concatenate(scatter).ravel(), np.concatenate(source).ravel()
  penalized = np.ones((rows, size))
  penalized[:, -1] = 0.0  # the bias
  penalized = penalized.ravel()
  gauge = np.zeros(rows * size) if binary else (1.0 - penalized) / np.sqrt(rows)
  return scatter, source, first != second, penalized, np.outer(gauge, gauge)


class _StackedLogistic:
  """All factors' L2 logistic regressions (sklearn's objective) on shared float32 features.

  Every factor owns a block of parameter rows [rows_k, D + 1] (weights, then the bias),
  stacked into one [R, D + 1] array: a binary factor one row (sklearn's single logit of class
  1 against class 0), a V-class factor V rows (multinomial). Factor k's objective is its mean
  cross-entropy plus penalty / 2 * ||weights||^2; the factors never interact.
  """

  def __init__(self, features, products, labels, num_classes, penalty, hessian_points=None):
    self.features = features  # [D + 1, N]
    self.products = products  # [(D+1)(D+2)/2, N]: x_i x_j for i <= j (np.triu_indices)
    # Points of the cheaper Hessian that `newton_step` uses far from the optimum.
    self.hessian_points = hessian_points
    if hessian_points is not None:
      self.sampled_products = self.products[:, hessian_points]
    self.penalty, self.num = penalty, features.shape[1]
    rows = np.where(num_classes == 2, 1, num_classes)
    self.bounds = np.concatenate([[0], np.cumsum(rows)])
    self.binary = num_classes == 2
    self.row_factor = np.repeat(np.arange(len(rows)), rows)  # [R]
    self.row_index = np.arange(self.bounds[-1]) - self.bounds[self.row_factor]
    # Sum of x over the points whose logit in row r enters the loss negatively (its class is
    # row r's, or class 1 for a binary factor's row): the loss's linear term is theta . hits
    # and the gradient's is -hits.
    one_hot = np.concatenate(
      [
        labels[:, k] == (np.arange(1, 2) if self.binary[k] else np.arange(width))[:, None]
        for k, width in enumerate(num_classes)
      ]
    )
    hits = (one_hot.astype(np.float32) @ features.T).astype(np.float64)
    self.hits = hits

  def evaluate(self, theta):
    """Per-factor objectives [K] and the [R, N] float32 probabilities at theta [R, D + 1]."""
    logits = theta.astype(np.float32) @ self.features
    proba, normalizer = _stacked_softmax(logits, self.bounds, self.binary)
    loss = normalizer - self.factor_sum(theta * self.hits)
    squares = self.factor_sum(theta[:, :-1] ** 2)
    return loss / self.num + 0.5 * self.penalty * squares, proba

  def gradient(self, theta, proba):
    """[R, D + 1] gradient at theta from `evaluate`'s probabilities there."""
    grad = ((proba @ self.features.T) - self.hits) / self.num
    grad[:, :-1] += self.penalty * theta[:, :-1]
    return grad

  def newton_step(self, proba, grad, active, sampled):
    """The Newton step [R, D + 1] of the `active` factors (zero elsewhere).

    Hessian block (a, b) of a factor is the mean of (p_a [a = b] - p_a p_b) x x^T over the
    points (a binary factor's single row: p (1 - p) x x^T): the weights p_a p_b of all pairs
    a < b times the distinct products x_i x_j make one matrix product, and the diagonal
    blocks follow from sum_b p_b = 1 (which keeps the Hessian a weighted graph Laplacian, PSD
    in floats too). Factors with `sampled` set take the mean over `hessian_points` only (if
    any): a cheaper, approximate Hessian.
    """
    step = np.zeros_like(grad)
    for k in np.flatnonzero(active):
      start, stop = self.bounds[k], self.bounds[k + 1]
      if sampled[k] and self.hessian_points is not None:
        products, block = self.sampled_products, proba[start:stop, self.hessian_points]
      else:
        products, block = self.products, proba[start:stop]
      num = block.shape[1]
      scatter, source, off_diagonal, penalized, gauge = _hessian_layout(
        stop - start, self.features.shape[0], self.binary[k]
      )
      off_first, off_second = _off_diagonal_pairs(stop - start)
      if self.binary[k]:
        weight = block * (1.0 - block)  # p (1 - p)
        packed = weight @ products.T
      else:
        # Off-diagonal blocks: -p_a p_b; as sum_b p_b = 1, the diagonal block a is p_a (1 - p_a)
        # = the sum over b != a of p_a p_b, i.e. minus the sum of its row's off-diagonal blocks.
        weight = np.empty((len(off_first), num), np.float32)
        at = 0
        for a in range(len(block) - 1):  # p_a p_b for (a, a + 1), (a, a + 2), ...
          np.multiply(block[a], block[a + 1 :], out=weight[at : at + len(block) - a - 1])
          at += len(block) - a - 1
        cross = weight @ products.T  # [pairs a < b, (D+1)(D+2)/2]
        diagonal = np.zeros((len(block), cross.shape[1]), cross.dtype)
        np.add.at(diagonal, off_first, cross)
        np.add.at(diagonal, off_second, cross)
        packed = np.empty((len(off_diagonal), cross.shape[1]), cross.dtype)
        packed[off_diagonal] = -cross
        packed[~off_diagonal] = diagonal
      hessian = np.zeros_like(gauge)
      hessian.ravel()[scatter] = packed.ravel()[source]
      hessian *= 1.0 / num
      hessian += gauge
      hessian.ravel()[:: len(hessian) + 1] += self.penalty * penalized
      _, solution, info = scipy.linalg.lapack.dposv(hessian, -grad[start:stop].ravel())
      if info != 0:
        raise np.linalg.LinAlgError(f"Newton system of label column {k}: dposv info {info}")
      step[start:stop] = solution.reshape(stop - start, -1)
    return step

  def factor_sum(self, stacked):
    """[R, D + 1] -> [K] sums over each factor's rows."""
    return np.add.reduceat(np.sum(stacked, axis=1), self.bounds[:-1])

  def factor_max(self, stacked):
    """[R, D + 1] -> [K] largest entry of each factor's rows."""
    return np.maximum.reduceat(np.max(stacked, axis=1), self.bounds[:-1])


def _newton(problem, theta, tolerance, num_iterations):
  """Damped Newton on `_StackedLogistic` until each factor's largest gradient entry is at most
  `tolerance`; converged factors stay put.

  Steps start with the problem's sampled Hessian (if it has one): Newton with an approximate
  Hessian still converges, linearly at a rate set by the approximation (~0.1 for a quarter
  of the points). A factor takes the exact Hessian once its largest gradient entry is below
  30 tolerance (where one exact step, converging quadratically, usually finishes it), or
  from the step on that its sampled step did not shrink that entry 4-fold.

  Returns:
    theta, probabilities at theta, converged: [K] bool.
  """
  value, proba = problem.evaluate(theta)
  grad = problem.gradient(theta, proba)
  largest = problem.factor_max(np.abs(grad))
  exact = np.zeros(len(value), bool)
  for _ in range(num_iterations):
    if np.all(largest <= tolerance):
      break
    exact |= largest <= 30.0 * tolerance
    step = problem.newton_step(proba, grad, largest > tolerance, ~exact)
    slope = problem.factor_sum(grad * step)
    size = np.ones(len(value))
    accepted = np.zeros(len(value), bool)
    while True:
      trial = theta + size[problem.row_factor, None] * step
      trial_value, trial_proba = problem.evaluate(trial)
      trial_grad = problem.gradient(trial, trial_proba)
      # Armijo, or (the objective is convex) a non-positive slope at the trial point: near the
      # optimum, float32 rounding of the objective would hide a true decrease.
      accepted |= trial_value <= value + 1e-4 * size * slope
      accepted |= problem.factor_sum(trial_grad * step) <= 0.0
      if np.all(accepted) or np.min(size) < 1e-10:
        break
      size[~accepted] *= 0.5
    theta, value, proba, grad = trial, trial_value, trial_proba, trial_grad
    shrunk = problem.factor_max(np.abs(grad))
    exact |= (largest > tolerance) & (shrunk > 0.25 * largest)
    largest = shrunk
  return theta, proba, largest <= tolerance


def fit_logistic_regression(
  x: np.ndarray,
  labels: np.ndarray,
  num_classes: np.ndarray,
  *,
  c: float = 1.0,
  num_iterations: int = 100,
  tolerance: float = 1e-4,
  return_proba: bool = False,
):
  """Fits one L2 logistic regression per label column to sklearn's optimum (its defaults).

  Each factor's objective (mean cross-entropy plus ||W||^2 / (2 C N), bias unpenalized) is
  minimized by damped Newton steps (see `_StackedLogistic`, `_newton`), all factors at once,
  until every gradient entry is at most `tolerance` (sklearn's own criterion, 1e-4 by
  default; float32 products put the floor near 1e-7). Newton needs ~8 steps from zero; to
  spend few of them on all N points, the run goes through nested subsamples of N / 16 and
  N / 4 points (a fixed permutation; a stage needs 500 points), each starting at the
  previous stage's solution (same per-point objective) and stopping at a looser gradient
  (3e-2, 3e-3): a subsample's optimum is only as close to the full one as sampling allows.
  The full data then takes two or three steps, the first with the Hessian of a quarter of
  the points (`_newton`).

  Args:
    x: [N, D] features.
    labels: [N, K] class indices (`encode_labels`).
    num_classes: [K] classes per column; each must be >= 2.
    c: inverse regularization strength, sklearn's `C`.
    num_iterations: Newton steps at most per stage (a RuntimeWarning names the factors that
      did not converge).
    tolerance: stop when every factor's largest gradient entry is below it (sklearn stops at
      1e-4, or after 100 L-BFGS iterations).
    return_proba: also return the [R, N] float32 training probabilities (stacked factor rows,
      a binary factor's row is class 1) at the solution.

  Returns:
    weights: [K, D, V_max] (zero in padded and frozen columns).
    bias: [K, V_max].
    (proba, if `return_proba`.)
  """
  x = np.asarray(x, np.float32)
  labels = np.asarray(labels)
  num_classes = np.asarray(num_classes)
  num, dims = x.shape
  valid, free = padded_masks(num_classes)
  features = np.concatenate([x, np.ones((num, 1), np.float32)], axis=1).T.copy()  # [D+1, N]
  upper = np.triu_indices(dims + 1)
  products = features[upper[0]] * features[upper[1]]
  penalty = 1.0 / (c * num)
  order = np.random.default_rng(0).permutation(num)
  theta = np.zeros((int(np.sum(np.where(num_classes == 2, 1, num_classes))), dims + 1))
  stages = [(num // f, t) for f, t in _WARM_STARTS if num // f >= 500] + [(num, tolerance)]
  for size, stage_tolerance in stages:
    # The stage's points, and the quarter of them (if 500 or more) of its sampled Hessian.
    part = np.sort(order[:size]) if size < num else slice(None)
    sampled = np.sort(order[: size // 4]) if size >= 2000 else None
    if sampled is not None and size < num:
      sampled = np.searchsorted(part, sampled)
    problem = _StackedLogistic(
      features[:, part], products[:, part], labels[part], num_classes, penalty, sampled
    )
    theta, proba, converged = _newton(
      problem, theta, max(stage_tolerance, tolerance), num_iterations
    )
  if not np.all(converged):
    warnings.warn(
      f"logistic regression of label columns {np.flatnonzero(~converged).tolist()} did not "
      f"reach gradient {tolerance} in {num_iterations} Newton steps",
      RuntimeWarning,
      stacklevel=2,
    )
  params = np.zeros((*valid.shape, dims + 1))
  params[free] = theta
  weights, bias = params[..., :dims].transpose(0, 2, 1), params[..., dims]
  return (weights, bias, proba) if return_proba else (weights, bias)


def logistic_proba_stacked(
  weights: np.ndarray, bias: np.ndarray, x: np.ndarray, num_classes: np.ndarray
) -> np.ndarray:
  """Class probabilities of `fit_logistic_regression`'s models, stacked and in float32.

  Args:
    weights: [K, D, V_max].
    bias: [K, V_max].
    x: [N, D] features.
    num_classes: [K] classes per column.

  Returns:
    [R, N] float32: factor k's rows one after another, V_k rows (its classes) for a
    multinomial factor, one row (class 1) for a binary one, as `fit_logistic_regression`'s
    `return_proba`.
  """
  num_classes = np.asarray(num_classes)
  _, free = padded_masks(num_classes)
  theta = np.concatenate([weights.transpose(0, 2, 1), bias[..., None]], axis=-1)[free]
  x = np.asarray(x, np.float32)
  logits = theta[:, :-1].astype(np.float32) @ x.T + theta[:, -1:].astype(np.float32)
  rows = np.where(num_classes == 2, 1, num_classes)
  bounds = np.concatenate([[0], np.cumsum(rows)])
  return _stacked_softmax(logits, bounds, num_classes == 2)[0]


def logistic_predict_proba(
  weights: np.ndarray, bias: np.ndarray, x: np.ndarray, num_classes: np.ndarray
) -> list[np.ndarray]:
  """Class probabilities of `fit_logistic_regression`'s models.

  Args:
    weights: [K, D, V_max].
    bias: [K, V_max].
    x: [N, D] features.
    num_classes: [K] classes per column.

  Returns:
    K arrays, the k-th [N, num_classes[k]] (float64), rows summing to 1.
  """
  valid, _ = padded_masks(np.asarray(num_classes))
  # Every factor's real classes side by side: one [N, D] x [D, C] product.
  stacked = weights.transpose(1, 0, 2)[:, valid]  # [D, C]
  logits = np.asarray(x, np.float64) @ stacked + bias[valid]
  bounds = np.concatenate([[0], np.cumsum(num_classes)])
  proba = []
  for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
    block = np.exp(logits[:, start:stop] - logits[:, start:stop].max(axis=1, keepdims=True))
    proba.append(block / block.sum(axis=1, keepdims=True))
  return proba
