"""Interventional Robustness Score (Suter et al. 2019; disentanglement_lib `irs.py`).

For a code dim z_l and a factor g_i: within each group of samples sharing a value of g_i, the
`diff_quantile` quantile of |z_l - E[z_l | g_i]| (how much the other factors still move z_l when
g_i is held fixed), averaged over the values of g_i, then divided by the dim's largest deviation
from its mean, max |z_l - E z_l|. IRS_li = 1 - that ratio; a dim's score is its best factor's,
max_i IRS_li, and the IRS is the mean of the dims' scores weighted by their largest deviations.

As disentanglement_lib (its study config): the factors are first histogram-discretized into
20 bins (a factor with more than 20 values has neighbouring values merged), code dims with zero
variance are dropped (no active dim: IRS = 0), and `diff_quantile` defaults to 0.99 (1.0 is the
paper's max). The quantile is `np.percentile`'s linear interpolation.
"""

from __future__ import annotations

import numpy as np

from gmg_jax.metrics.information import histogram_discretize


def drop_constant_dims(codes: np.ndarray) -> np.ndarray:
  """Active code dims: the columns of `codes` [N, D] with nonzero variance, [N, D_active]."""
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"Expected codes [N, D], got shape {codes.shape}")
  return codes[:, codes.var(axis=0) > 0.0]


def irs_matrix(
  factors: np.ndarray, codes: np.ndarray, diff_quantile: float = 0.99
) -> dict[str, np.ndarray | float]:
  """IRS of codes given discrete factors, disentanglement_lib's `scalable_disentanglement_score`.

  Args:
    factors: [N, K] discrete factors (each value of a factor defines a group).
    codes: [N, D] codes.
    diff_quantile: quantile in [0, 1] of the within-group deviations.

  Returns:
    {"IRS_matrix": [D, K] 1 - normalized deviation, "disentanglement_scores": [D] its row max,
    "parents": [D] its row argmax, "max_deviations": [D] max |z - mean z|, "avg_score": the
    scores' mean weighted by max_deviations (unweighted if they are all 0)}.
  """
  factors, codes = np.asarray(factors), np.asarray(codes)
  max_deviations = np.max(np.abs(codes - codes.mean(axis=0)), axis=0)  # [D]
  deviations = np.zeros((codes.shape[1], factors.shape[1]))
  for i, factor in enumerate(factors.T):
    values = np.unique(factor)
    for value in values:
      group = codes[factor == value]
      spread = np.abs(group - group.mean(axis=0))
      deviations[:, i] += np.percentile(spread, diff_quantile * 100.0, axis=0)
    deviations[:, i] /= len(values)
  with np.errstate(divide="ignore", invalid="ignore"):
    matrix = 1.0 - deviations / max_deviations[:, None]
  scores = matrix.max(axis=1)
  if np.sum(max_deviations) > 0.0:
    average = np.average(scores, weights=max_deviations)
  else:
    average = np.mean(scores)
  return {
    "IRS_matrix": matrix,
    "disentanglement_scores": scores,
    "parents": matrix.argmax(axis=1),
    "max_deviations": max_deviations,
    "avg_score": float(average),
  }


def irs(
  codes: np.ndarray,
  factors: np.ndarray,
  *,
  diff_quantile: float = 0.99,
  num_bins: int = 20,
  mode: str = "exact",
) -> dict[str, float]:
  """Interventional Robustness Score, disentanglement_lib's `compute_irs` on arrays.

  Args:
    codes: [N, D] codes (disentanglement_lib: 10000 points).
    factors: [N, K] factors; histogram-discretized into `num_bins` bins first.
    diff_quantile: quantile of the within-group deviations (1.0: the paper's max).
    num_bins: bins of the factor discretizer.
    mode: discretizer mode, "exact" or "fast" (equal labels).

  Returns:
    {"IRS": score in [0, 1] (higher is better), "num_active_dims": code dims with nonzero
    variance}. disentanglement_lib reports the sum of the active codes' values under
    "num_active_dims" (`np.sum(active_mus)`); this counts the dims.
  """
  active = drop_constant_dims(codes)
  if active.shape[1] == 0:
    score = 0.0
  else:
    discrete = histogram_discretize(factors, num_bins, mode=mode)
    score = irs_matrix(discrete, active, diff_quantile)["avg_score"]
  return {"IRS": float(score), "num_active_dims": float(active.shape[1])}
