"""JAX solvers for the linear classifiers the `fast` metrics use.

They minimize the same objectives as the scikit-learn estimators of the `exact` mode, so the
two modes differ only by solver tolerance and float32 rounding:

- `fit_logistic_regression`: `sklearn.linear_model.LogisticRegression()` defaults (L2, C=1,
  unpenalized intercept, multinomial for more than two classes, a single logit for two),
  solved by L-BFGS. Several factors are fit at once (vmapped), classes padded to one width.
- `fit_linear_svc_1d`: `sklearn.svm.LinearSVC(C, class_weight="balanced")` on a single
  feature (liblinear's primal L2-regularized squared hinge with a regularized bias, one-vs-rest
  where positives get C * weight[class] and negatives plain C, as in liblinear's `train`),
  solved in NumPy by exact-active-set Newton steps for every (code, factor, class) problem at
  once, the active-set sums read from prefix sums of the sorted codes.

Labels are class indices `0..num_classes-1` (see `encode_labels`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Newton step sizes tried at each SVC iteration; 0 keeps the iterate, so the objective never rises.
_SVC_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)


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


def _padded_masks(num_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid-class and trainable-column masks, [K, V_max] each.

    A binary factor trains only column 1 against a fixed zero logit, which is sklearn's single
    logistic vector; a multinomial 2-class model would halve the effective penalty.
    """
    width = int(num_classes.max())
    valid = np.arange(width)[None, :] < num_classes[:, None]
    free = valid & ~((num_classes[:, None] == 2) & (np.arange(width)[None, :] == 0))
    return valid, free


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def _fit_logistic(x, labels, valid, free, inverse_c, num_iterations):
    """L-BFGS on mean cross-entropy + ||W||^2 / (2 C N); vmapped over factors."""

    def fit_one(y, valid_v, free_v):
        def loss(params):
            weights, bias = params
            logits = x @ (weights * free_v) + bias * free_v
            logits = jnp.where(valid_v, logits, -jnp.inf)
            nll = (
                jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
            )
            return jnp.mean(nll) + 0.5 * inverse_c / x.shape[0] * jnp.sum((weights * free_v) ** 2)

        solver = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)
        params = (jnp.zeros((x.shape[1], valid_v.shape[0])), jnp.zeros(valid_v.shape[0]))

        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = solver.update(
                grad, state, params, value=value, grad=grad, value_fn=loss
            )
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, num_iterations)
        return params

    return jax.vmap(fit_one, in_axes=(1, 0, 0))(labels, valid, free)


def fit_logistic_regression(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: np.ndarray,
    *,
    c: float = 1.0,
    num_iterations: int = 100,
) -> tuple[jax.Array, jax.Array]:
    """Fits one L2 logistic regression per label column (sklearn's defaults), jointly.

    Args:
      x: [N, D] features.
      labels: [N, K] class indices (`encode_labels`).
      num_classes: [K] classes per column; each must be >= 2.
      c: inverse regularization strength, sklearn's `C`.
      num_iterations: L-BFGS iterations (fixed, so the solve compiles once per shape).

    Returns:
      weights: [K, D, V_max] (zero in padded and frozen columns).
      bias: [K, V_max].
    """
    valid, free = _padded_masks(np.asarray(num_classes))
    weights, bias = _fit_logistic(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(labels),
        jnp.asarray(valid),
        jnp.asarray(free, jnp.float32),
        1.0 / c,
        num_iterations,
    )
    free = jnp.asarray(free, jnp.float32)
    return weights * free[:, None, :], bias * free


def logistic_predict_proba(
    weights: jax.Array, bias: jax.Array, x: np.ndarray, num_classes: np.ndarray
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
    valid, _ = _padded_masks(np.asarray(num_classes))
    logits = jnp.einsum("nd,kdv->knv", jnp.asarray(x, jnp.float32), weights) + bias[:, None, :]
    proba = np.asarray(jax.nn.softmax(jnp.where(valid[:, None, :], logits, -jnp.inf), axis=-1))
    return [p[:, :v].astype(np.float64) for p, v in zip(proba, num_classes, strict=True)]


def balanced_class_weights(labels: np.ndarray, num_classes: np.ndarray) -> np.ndarray:
    """sklearn's `class_weight="balanced"`: n / (num_classes * count), [K, V_max] (0 if padded)."""
    width = int(np.max(num_classes))
    counts = np.stack([np.bincount(column, minlength=width) for column in labels.T])
    weights = labels.shape[0] / (num_classes[:, None] * np.maximum(counts, 1))
    return np.where(np.arange(width)[None, :] < num_classes[:, None], weights, 0.0)


class _SortedMoments:
    """Sums of 1, x, x^2 over "x < t" / "x > t", per code dim, per (factor, class) and overall.

    Each code dim is sorted once; per (dim, factor, class) the sorted positions of the class's
    points are laid out one after another (keys increasing), so that one `np.searchsorted`
    answers every (dim, factor, class) query at once.
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, width: int):
        num, dims = x.shape
        factors = labels.shape[1]
        order = np.argsort(x, axis=0, kind="stable")  # [N, D]
        self.sorted_x = np.take_along_axis(x, order, axis=0).T.copy()  # [D, N]
        moments = np.stack([np.ones_like(self.sorted_x), self.sorted_x, self.sorted_x**2], -1)
        self.all_prefix = np.concatenate(
            [np.zeros((dims, 1, 3)), np.cumsum(moments, axis=1)], axis=1
        )  # [D, N + 1, 3]
        sorted_labels = labels[order.T].transpose(0, 2, 1)  # [D, K, N] labels in x order
        by_class = np.argsort(sorted_labels.astype(np.int16), axis=-1, kind="stable")  # [D, K, N]
        group = (np.arange(dims)[:, None] * factors + np.arange(factors)[None, :]) * width
        group = group[:, :, None] + np.take_along_axis(sorted_labels, by_class, axis=-1)
        self.keys = (group * (num + 1) + by_class).ravel()  # increasing
        grouped = np.take_along_axis(moments[:, None], by_class[..., None], axis=2)  # [D,K,N,3]
        self.class_prefix = np.concatenate(
            [np.zeros((1, 3)), np.cumsum(grouped.reshape(-1, 3), axis=0)]
        )
        counts = np.stack(
            [np.bincount(column, minlength=width) for column in labels.T]
        )  # [K, V]
        starts = np.concatenate([np.zeros((factors, 1), np.int64), np.cumsum(counts, 1)], 1)
        offset = (np.arange(dims)[:, None, None] * factors + np.arange(factors)[None, :, None]) * num
        self.class_start = offset + starts[None, :, :-1]  # [D, K, V]
        self.class_stop = offset + starts[None, :, 1:]
        self.group = (
            (np.arange(dims)[:, None, None] * factors + np.arange(factors)[None, :, None]) * width
            + np.arange(width)[None, None, :]
        )  # [D, K, V]
        self.num = num

    def _rank(self, t: np.ndarray, side: str) -> np.ndarray:
        """Number of points of each dim with x < t (side "left") or x <= t ("right"), [D, ...]."""
        return np.stack(
            [np.searchsorted(column, q, side=side) for column, q in zip(self.sorted_x, t)]
        )

    def below_above(self, t: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Moments of class v (positives) and of the other classes (negatives) on one side of t.

        Args:
          t: [D, K, V] thresholds (+-inf allowed).
          upper: [D, K, V] bool, True for "x > t", False for "x < t".

        Returns:
          positives, negatives: [D, K, V, 3] sums of (1, x, x^2).
        """
        rank = np.where(upper, self._rank(t, "right"), self._rank(t, "left"))
        lookup = np.searchsorted(self.keys, self.group * (self.num + 1) + rank)
        below_class = self.class_prefix[lookup] - self.class_prefix[self.class_start]
        below_all = np.take_along_axis(self.all_prefix, rank.reshape(rank.shape[0], -1, 1), 1)
        below_all = below_all.reshape(*rank.shape, 3)
        total_class = self.class_prefix[self.class_stop] - self.class_prefix[self.class_start]
        total_all = self.all_prefix[:, -1][:, None, None, :]
        positives = np.where(upper[..., None], total_class - below_class, below_class)
        everything = np.where(upper[..., None], total_all - below_all, below_all)
        return positives, everything - positives


def _svc_terms(moments, sign, cost, w, b):
    """Objective, gradient and Hessian terms of sum c (1 - s (w x + b))^2 over active points."""
    n, sx, sxx = moments[..., 0], moments[..., 1], moments[..., 2]
    a = 1.0 - sign * b
    value = cost * (a * a * n - 2.0 * a * sign * w * sx + w * w * sxx)
    grad_w = -2.0 * cost * sign * (a * sx - sign * w * sxx)
    grad_b = -2.0 * cost * sign * (a * n - sign * w * sx)
    return value, grad_w, grad_b, 2.0 * cost * sxx, 2.0 * cost * sx, 2.0 * cost * n


def _svc_active(moments: _SortedMoments, w, b, c_pos, c_neg):
    """Objective, gradient and Hessian of the 1-D squared-hinge SVC at (w, b), [D, K, V] each.

    Positives are active where w x < 1 - b, negatives where w x > -1 - b.
    """
    safe = np.where(w == 0.0, 1.0, w)
    t_pos = np.where(w == 0.0, np.where(b < 1.0, np.inf, -np.inf), (1.0 - b) / safe)
    t_neg = np.where(w == 0.0, np.where(b > -1.0, np.inf, -np.inf), (-1.0 - b) / safe)
    positives, _ = moments.below_above(t_pos, w < 0.0)
    _, negatives = moments.below_above(t_neg, w > 0.0)
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
    _, free = _padded_masks(num_classes)
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
        best, best_value = np.zeros(shape), value
        for size in _SVC_STEPS[:-1]:
            trial = _svc_active(moments, w + size * step_w, b + size * step_b, c_pos, c_neg)[0]
            better = trial < best_value
            best = np.where(better, size, best)
            best_value = np.where(better, trial, best_value)
        if not np.any(best):
            break
        w, b = w + best * step_w, b + best * step_b
    return w.transpose(1, 0, 2), b.transpose(1, 0, 2)


def linear_svc_1d_accuracy(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, labels: np.ndarray, num_classes: np.ndarray
) -> np.ndarray:
    """Test accuracy of `fit_linear_svc_1d`'s classifiers, as sklearn's `predict` decides.

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
    for k, width in enumerate(np.asarray(num_classes)):
        if width == 2:
            predicted = (x * w[k, :, 1] + b[k, :, 1] > 0).astype(np.int64)  # [N, D]
        else:
            scores = x[:, :, None] * w[k, None, :, :width] + b[k, None, :, :width]
            predicted = np.argmax(scores, axis=-1)
        accuracy[:, k] = np.mean(predicted == labels[:, k : k + 1], axis=0)
    return accuracy
