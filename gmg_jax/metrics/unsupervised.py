"""Unsupervised scores of a code (disentanglement_lib `unsupervised_metrics.py`).

They need no factors: from the codes' sample covariance C (`np.cov`, ddof = 1),

- Gaussian total correlation: KL(N(0, C) || N(0, diag C)) = 1/2 (sum log C_ii - log det C), the
  total correlation of a Gaussian with the codes' covariance (0 for uncorrelated codes);
- Gaussian Wasserstein correlation: W2^2(N(0, C), N(0, diag C)) = 2 tr C - 2 tr (diag(C) C)^1/2,
  and the same divided by tr C (`_norm`);
- mutual information score: the mean histogram MI (20 bins, as `mig`) between distinct code
  dims, sum_{i != j} I(z_i; z_j) / (D^2 - D).

Lower is more disentangled for all four. disentanglement_lib takes the trace of the square root
of the non-symmetric matrix diag(C) C with `scipy.linalg.sqrtm`; here it is the sum of the square
roots of the eigenvalues of the similar symmetric matrix diag(C)^1/2 C diag(C)^1/2 (equal up to
rounding, and never complex). A constant code dim makes the total correlation NaN, as in
disentanglement_lib.
"""

from __future__ import annotations

import numpy as np

from gmg_jax.metrics.information import discrete_mutual_info, histogram_discretize


def gaussian_total_correlation(cov: np.ndarray) -> float:
  """Total correlation (nats) of N(0, cov): 1/2 (sum log cov_ii - log det cov).

  Args:
    cov: [D, D] covariance matrix.

  Returns:
    KL divergence from the product of its marginals; -1/2 log det of the correlation matrix.
  """
  cov = np.asarray(cov, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
  """Squared 2-Wasserstein distance between N(0, cov) and N(0, diag(cov)).

  Args:
    cov: [D, D] covariance matrix.

  Returns:
    2 tr(cov) - 2 tr((diag(cov)^1/2 cov diag(cov)^1/2)^1/2).
  """
  cov = np.asarray(cov, np.float64)
  scale = np.sqrt(np.diag(cov))
  eigenvalues = np.linalg.eigvalsh(scale[:, None] * cov * scale[None, :])
  return float(2.0 * np.trace(cov) - 2.0 * np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def mutual_info_score(codes: np.ndarray, *, num_bins: int = 20, mode: str = "exact") -> float:
  """Mean histogram MI (nats) between distinct code dims.

  Args:
    codes: [N, D] codes, D >= 2.
    num_bins: histogram bins per code dim.
    mode: "exact" (sklearn per pair) or "fast" (one joint bincount).

  Returns:
    sum over i != j of I(z_i; z_j), divided by D^2 - D.
  """
  discrete = histogram_discretize(codes, num_bins, mode=mode)
  mi = discrete_mutual_info(discrete, discrete, mode=mode)
  num_codes = mi.shape[0]
  return float((np.sum(mi) - np.trace(mi)) / (num_codes**2 - num_codes))


def unsupervised(codes: np.ndarray, *, num_bins: int = 20, mode: str = "exact") -> dict[str, float]:
  """disentanglement_lib's `unsupervised_metrics` on an array of codes.

  Args:
    codes: [N, D] codes (disentanglement_lib: 10000 points), D >= 2.
    num_bins: histogram bins per code dim of the mutual information score.
    mode: "exact" or "fast" (the mutual information score only).

  Returns:
    {"gaussian_total_correlation", "gaussian_wasserstein_correlation",
    "gaussian_wasserstein_correlation_norm", "mutual_info_score"}.
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] < 2:
    raise ValueError(f"unsupervised scores need codes [N, D] with D >= 2, got {codes.shape}")
  cov = np.cov(codes.T)
  wasserstein = gaussian_wasserstein_correlation(cov)
  return {
    "gaussian_total_correlation": gaussian_total_correlation(cov),
    "gaussian_wasserstein_correlation": wasserstein,
    "gaussian_wasserstein_correlation_norm": wasserstein / float(np.trace(cov)),
    "mutual_info_score": mutual_info_score(codes, num_bins=num_bins, mode=mode),
  }
