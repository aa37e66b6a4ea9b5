"""JAX solvers for the linear classifiers the `fast` metrics use.

They minimize the same objectives as the scikit-learn estimators of the `exact` mode, so the
two modes differ only by solver tolerance and float32 rounding:

- `fit_logistic_regression`: `sklearn.linear_model.LogisticRegression()` defaults (L2, C=1,
  unpenalized intercept, multinomial for more than two classes, a single logit for two),
  solved by L-BFGS. Several factors are fit at once (vmapped), classes padded to one width.
- `fit_linear_svc_1d`: `sklearn.svm.LinearSVC(C, class_weight="balanced")` on a single
  feature (liblinear's primal L2-regularized squared hinge with a regularized bias, one-vs-rest
  where positives get C * weight[class] and negatives plain C, as in liblinear's `train`),
  solved by 2-D Newton steps for every (code, factor, class) problem in parallel.

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


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def _fit_svc(x, labels, c_pos, c_neg, num_iterations):
    """Newton on 0.5 (w^2 + b^2) + sum_i C_i max(0, 1 - s_i (w x_i + b))^2 per (d, k, v)."""
    width = c_pos.shape[1]

    def fit_factor(args):
        y, c_pos_v, c_neg_v = args
        sign = jnp.where(y[:, None] == jnp.arange(width), 1.0, -1.0)[:, None, :]  # [N, 1, V]
        cost = jnp.where(sign > 0, c_pos_v, c_neg_v)  # [N, 1, V]
        xs = x[:, :, None]  # [N, D, 1]

        def objective(w, b):
            slack = jnp.maximum(0.0, 1.0 - sign * (w * xs + b))
            return 0.5 * (w**2 + b**2) + jnp.sum(cost * slack**2, axis=0)

        def newton(carry, _):
            w, b = carry
            slack = 1.0 - sign * (w * xs + b)
            active = cost * (slack > 0)
            residual = active * sign * slack
            grad_w = w - 2 * jnp.sum(residual * xs, axis=0)
            grad_b = b - 2 * jnp.sum(residual, axis=0)
            h_ww = 1 + 2 * jnp.sum(active * xs**2, axis=0)
            h_wb = 2 * jnp.sum(active * xs, axis=0)
            h_bb = 1 + 2 * jnp.sum(active, axis=0)
            det = h_ww * h_bb - h_wb**2
            step_w = -(h_bb * grad_w - h_wb * grad_b) / det
            step_b = -(h_ww * grad_b - h_wb * grad_w) / det
            steps = jnp.asarray(_SVC_STEPS)[:, None, None]
            values = jax.vmap(objective)(w + steps * step_w, b + steps * step_b)
            best = jnp.asarray(_SVC_STEPS)[jnp.argmin(values, axis=0)]
            return (w + best * step_w, b + best * step_b), None

        zeros = jnp.zeros((x.shape[1], width))
        (w, b), _ = jax.lax.scan(newton, (zeros, zeros), None, num_iterations)
        return w, b

    return jax.lax.map(fit_factor, (labels.T, c_pos, c_neg))


def fit_linear_svc_1d(
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: np.ndarray,
    *,
    c: float = 0.01,
    num_iterations: int = 30,
) -> tuple[jax.Array, jax.Array]:
    """Fits `LinearSVC(C=c, class_weight="balanced")` on each code dim for each factor.

    Args:
      x: [N, D] codes; each dim is one single-feature problem.
      labels: [N, K] class indices (`encode_labels`).
      num_classes: [K] classes per column; each must be >= 2.
      c: sklearn's `C`.
      num_iterations: Newton iterations (the problems are 2-D, a few dozen suffice).

    Returns:
      w, b: [K, D, V_max] one-vs-rest slopes and intercepts (for a binary factor, column 1 is
        sklearn's single model, class 1 positive).
    """
    num_classes = np.asarray(num_classes)
    class_weight = balanced_class_weights(labels, num_classes)
    # liblinear: one-vs-rest negatives get plain C; a binary problem weights both of its classes.
    c_neg = np.ones_like(class_weight)
    binary = np.flatnonzero(num_classes == 2)
    c_neg[binary, 0] = class_weight[binary, 1]
    c_neg[binary, 1] = class_weight[binary, 0]
    return _fit_svc(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(labels),
        jnp.asarray(c * class_weight, jnp.float32),
        jnp.asarray(c * c_neg, jnp.float32),
        num_iterations,
    )


def linear_svc_1d_accuracy(
    w: jax.Array, b: jax.Array, x: np.ndarray, labels: np.ndarray, num_classes: np.ndarray
) -> np.ndarray:
    """Test accuracy of `fit_linear_svc_1d`'s classifiers, as sklearn's `predict` decides.

    Args:
      w, b: [K, D, V_max] from `fit_linear_svc_1d`.
      x: [N, D] test codes.
      labels: [N, K] test class indices.
      num_classes: [K] classes per column.

    Returns:
      [D, K] accuracy of the classifier of code d for factor k.
    """
    valid, _ = _padded_masks(np.asarray(num_classes))
    scores = jnp.asarray(x, jnp.float32)[None, :, :, None] * w[:, None] + b[:, None]  # [K,N,D,V]
    multiclass = jnp.argmax(jnp.where(valid[:, None, None, :], scores, -jnp.inf), axis=-1)
    binary = (scores[..., 1] > 0).astype(multiclass.dtype)
    predicted = jnp.where(jnp.asarray(num_classes == 2)[:, None, None], binary, multiclass)
    correct = predicted == jnp.asarray(labels).T[:, :, None]
    return np.asarray(jnp.mean(correct, axis=1)).T.astype(np.float64)
