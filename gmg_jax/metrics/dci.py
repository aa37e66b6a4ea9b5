"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018).

As disentanglement_lib `dci.py`: one gradient-boosted tree classifier per factor on all code
dims; the importance matrix R [D, K] (rows codes, columns factors) holds each classifier's
feature importances; with P_ij = R_ij / sum_k R_ik and H_K the entropy in base K,
  disentanglement = sum_i rho_i (1 - H_K(P_i.)),  rho_i = sum_j R_ij / sum R,
completeness likewise per factor over codes (base D), informativeness = mean accuracy.

`exact`: `sklearn.ensemble.GradientBoostingClassifier()` with its defaults (100 stages, depth 3,
learning rate 0.1, friedman_mse) and a fixed `random_state` (disentanglement_lib leaves it
unseeded; the seed only breaks ties among equally good splits).
`fast`: `HistGradientBoostingClassifier` set to the same ensemble (100 iterations, depth 3,
learning rate 0.1, no leaf-size floor, no L2, no early stopping) on 255-bin histograms; its
trees are replayed on the training codes to get GradientBoostingClassifier's importances (the
residuals' variance decrease per split, averaged over trees), since its own split gains are
hessian-weighted and over-weight late, noise-fitting trees. Factors are fit in
parallel threads, each on one OpenMP thread: on a shared CPU, OpenMP's busy waiting made a
single multi-threaded fit 50x slower than a one-thread fit.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
import threadpoolctl
from sklearn import ensemble

from gmg_jax.metrics.information import check_mode

# HistGradientBoostingClassifier settings that reproduce GradientBoostingClassifier's defaults.
_HGB_AS_GBC = dict(
    learning_rate=0.1,
    max_iter=100,
    max_depth=3,
    max_leaf_nodes=None,
    min_samples_leaf=1,
    l2_regularization=0.0,
    early_stopping=False,
    max_bins=255,
)


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


def _split_improvements(nodes: np.ndarray, x: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Per-feature sum over a tree's splits of (n_l n_r / n) (mean_l - mean_r)^2 of `residual`.

    This is the decrease of the residuals' summed squared error that
    `GradientBoostingClassifier.feature_importances_` adds up for each split.

    Args:
        nodes: a HistGradientBoosting `TreePredictor.nodes` record array.
        x: [N, D] training codes.
        residual: [N] the tree's fitting target (negative gradient) at its stage.

    Returns:
        [D] improvements.
    """
    num_nodes, rows = len(nodes), np.arange(x.shape[0])
    node = np.zeros(x.shape[0], dtype=np.int64)
    active = np.ones(x.shape[0], dtype=bool)
    count, total = np.zeros(num_nodes), np.zeros(num_nodes)
    while active.any():
        count += np.bincount(node[active], minlength=num_nodes)
        total += np.bincount(node[active], weights=residual[active], minlength=num_nodes)
        active &= nodes["is_leaf"][node] == 0
        left = x[rows, nodes["feature_idx"][node]] <= nodes["num_threshold"][node]
        child = np.where(left, nodes["left"][node], nodes["right"][node])
        node = np.where(active, child, node)
    split = np.flatnonzero(nodes["is_leaf"] == 0)
    n_l, n_r = count[nodes["left"][split]], count[nodes["right"][split]]
    gap = total[nodes["left"][split]] / n_l - total[nodes["right"][split]] / n_r
    improvement = n_l * n_r / (n_l + n_r) * gap**2
    return np.bincount(nodes["feature_idx"][split], weights=improvement, minlength=x.shape[1])


def _hgb_importances(
    model: ensemble.HistGradientBoostingClassifier, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """GradientBoostingClassifier-style importances of a fitted HistGradientBoostingClassifier.

    Each tree's residuals (one-hot label minus predicted probability before its stage) are
    replayed through its splits; per-tree improvements are averaged over trees with a split and
    normalized, as `GradientBoostingClassifier.feature_importances_` does.

    Args:
        model: fitted classifier.
        x: [N, D] its training codes.
        y: [N] its training labels.

    Returns:
        [D] importances summing to 1 (zeros if no tree split).
    """
    one_hot = (y[:, None] == model.classes_[None, :]).astype(np.float64)
    raw = np.broadcast_to(model._baseline_prediction, (x.shape[0], model.n_trees_per_iteration_))
    per_tree = []
    for predictors, raw_after in zip(model._predictors, model._staged_raw_predict(x), strict=True):
        if model.n_trees_per_iteration_ == 1:
            residuals = [one_hot[:, 1] - 1.0 / (1.0 + np.exp(-raw[:, 0]))]
        else:
            proba = np.exp(raw - raw.max(axis=1, keepdims=True))
            residuals = (one_hot - proba / proba.sum(axis=1, keepdims=True)).T
        for predictor, residual in zip(predictors, residuals, strict=True):
            if len(predictor.nodes) > 1:
                per_tree.append(_split_improvements(predictor.nodes, x, residual))
        raw = raw_after
    if not per_tree:
        return np.zeros(x.shape[1])
    mean = np.mean(per_tree, axis=0)
    return mean / mean.sum()


def _fit_factor(codes_train, y_train, codes_test, y_test, mode, random_state):
    """Importances [D], train and test accuracy of one factor's classifier."""
    if mode == "exact":
        model = ensemble.GradientBoostingClassifier(random_state=random_state)
        model.fit(codes_train, y_train)
        importance = np.abs(model.feature_importances_)
    else:
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            model = ensemble.HistGradientBoostingClassifier(
                random_state=random_state, **_HGB_AS_GBC
            )
            model.fit(codes_train, y_train)
        importance = _hgb_importances(model, codes_train, y_train)
    return (
        importance,
        np.mean(model.predict(codes_train) == y_train),
        np.mean(model.predict(codes_test) == y_test),
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
      mode: "exact" (GradientBoostingClassifier) or "fast" (HistGradientBoostingClassifier).
      random_state: seed of every classifier.

    Returns:
      importance: [D, K], rows codes, columns factors.
      train_accuracy, test_accuracy: mean over factors.
    """
    check_mode(mode)
    codes_train, codes_test = np.asarray(codes_train), np.asarray(codes_test)
    factors_train, factors_test = np.asarray(factors_train), np.asarray(factors_test)
    num_factors = factors_train.shape[1]
    jobs = 1 if mode == "exact" else min(num_factors, os.cpu_count() or 1)
    results = joblib.Parallel(n_jobs=jobs, prefer="threads")(
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
