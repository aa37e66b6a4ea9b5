"""Histogram mutual information, MIG and modularity (disentanglement_lib `mig.py`, `utils.py`).

Codes are discretized per dimension into `num_bins` equal-width bins between their min and max
(`np.histogram` edges, then `np.digitize`, labels 1..num_bins), and MI is the plug-in estimate
in nats (`sklearn.metrics.mutual_info_score`). `exact` mode loops over (code, factor) pairs
with sklearn as disentanglement_lib does; `fast` mode counts all pairs' joint histograms in
one `np.bincount` (labels used as indices, no sorting) and gives the same matrix up to float
rounding.
"""

from __future__ import annotations

import numpy as np
import sklearn.metrics

from gmg_jax.registry import check_choice

MODES = ("exact", "fast")


def check_mode(mode: str) -> None:
  """Raises ValueError unless `mode` is one of `MODES`."""
  check_choice(mode, MODES, "eval.mode")


def histogram_discretize(
  codes: np.ndarray, num_bins: int = 20, *, mode: str = "exact"
) -> np.ndarray:
  """Bins each code dim into `num_bins` equal-width bins, as `_histogram_discretize`.

  Args:
    codes: [N, D] continuous codes.
    num_bins: bins per dim.
    mode: "exact" (`np.histogram` and `np.digitize` per dim, as disentanglement_lib) or
      "fast" (the same edges from `np.histogram_bin_edges`, without counting; equal labels).

  Returns:
    [N, D] int64 bin labels in 1..num_bins (the max lands in bin num_bins).
  """
  check_mode(mode)
  codes = np.asarray(codes)
  if mode == "exact":
    columns = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T]
  else:
    # np.digitize(x, edges) is np.searchsorted(edges, x, "right") for increasing edges.
    columns = [
      np.searchsorted(np.histogram_bin_edges(c, num_bins)[:-1], c, "right") for c in codes.T
    ]
  return np.stack(columns, axis=1).astype(np.int64)


def _small_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
  """Non-negative integer labels [N, A] and their bound, re-indexed only when needed."""
  if (
    np.issubdtype(labels.dtype, np.integer)
    and labels.size
    and labels.min() >= 0
    and labels.max() < 4 * labels.shape[0] + 64
  ):
    return labels.astype(np.int64), int(labels.max()) + 1
  index = np.stack([np.unique(c, return_inverse=True)[1].reshape(-1) for c in labels.T], 1)
  return index, int(index.max()) + 1 if index.size else 1


def _plug_in_mi(joint: np.ndarray, num: int) -> np.ndarray:
  """Plug-in MI (nats) from joint counts [..., A, B] of `num` points."""
  joint = joint / num
  marginal_a = joint.sum(axis=-1, keepdims=True)
  marginal_b = joint.sum(axis=-2, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = joint * np.log(joint / (marginal_a * marginal_b))
  return np.sum(np.where(joint > 0, terms, 0.0), axis=(-2, -1))


def _mutual_info_fast(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
  """Plug-in MI between every column of `labels_a` [N, A] and of `labels_b` [N, B], [A, B]."""
  num = labels_a.shape[0]
  a_index, size_a = _small_labels(labels_a)
  b_index, size_b = _small_labels(labels_b)
  num_a, num_b = a_index.shape[1], b_index.shape[1]
  flat = (np.arange(num_a)[:, None] * num_b + np.arange(num_b)) * (size_a * size_b)  # [A, B]
  flat = flat[None] + (a_index * size_b)[:, :, None] + b_index[:, None, :]  # [N, A, B]
  joint = np.bincount(flat.ravel(), minlength=num_a * num_b * size_a * size_b)
  return _plug_in_mi(joint.reshape(num_a, num_b, size_a, size_b), num)


def discrete_mutual_info(
  discrete_codes: np.ndarray, factors: np.ndarray, *, mode: str = "exact"
) -> np.ndarray:
  """MI (nats) between each discretized code dim and each factor.

  Args:
    discrete_codes: [N, D] discrete labels (e.g. `histogram_discretize`).
    factors: [N, K] discrete factors.
    mode: "exact" (sklearn per pair) or "fast" (one joint bincount).

  Returns:
    [D, K] mutual information; rows are codes, columns factors.
  """
  check_mode(mode)
  discrete_codes, factors = np.asarray(discrete_codes), np.asarray(factors)
  if mode == "fast":
    return _mutual_info_fast(discrete_codes, factors)
  mi = np.zeros([discrete_codes.shape[1], factors.shape[1]])
  for i in range(discrete_codes.shape[1]):
    for j in range(factors.shape[1]):
      mi[i, j] = sklearn.metrics.mutual_info_score(factors[:, j], discrete_codes[:, i])
  return mi


def discrete_entropy(factors: np.ndarray, *, mode: str = "exact") -> np.ndarray:
  """Entropy (nats) of each factor column, as MI of a factor with itself.

  Args:
    factors: [N, K] discrete factors.
    mode: "exact" or "fast".

  Returns:
    [K] entropies.
  """
  check_mode(mode)
  factors = np.asarray(factors)
  if mode == "fast":
    index, size = _small_labels(factors)
    counts = np.stack([np.bincount(c, minlength=size) for c in index.T])  # [K, size]
    p = counts / factors.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
      return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
  return np.array([sklearn.metrics.mutual_info_score(c, c) for c in factors.T])


def mig(
  codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20, mode: str = "exact"
) -> dict[str, float]:
  """Mutual Information Gap (Chen et al. 2018), disentanglement_lib's `discrete_mig`.

  Args:
    codes: [N, D] codes (disentanglement_lib: 10000 points).
    factors: [N, K] discrete factors.
    num_bins: histogram bins per code dim.
    mode: "exact" or "fast".

  Returns:
    {"discrete_mig": mean over factors of (top-1 MI - top-2 MI) / H(factor)}; a constant
    factor (H = 0) makes it NaN, as in disentanglement_lib.
  """
  mi = discrete_mutual_info(histogram_discretize(codes, num_bins, mode=mode), factors, mode=mode)
  entropy = discrete_entropy(factors, mode=mode)
  top = np.sort(mi, axis=0)[::-1]
  with np.errstate(divide="ignore", invalid="ignore"):
    return {"discrete_mig": float(np.mean((top[0] - top[1]) / entropy))}


def modularity(mutual_information: np.ndarray) -> float:
  """Modularity (Ridgeway & Mozer 2018) of a [D, K] MI matrix.

  Per code: 1 - (sum of squared MI but the largest) / (largest * (K - 1)); 0 for a code with
  no information; averaged over codes.
  """
  squared = np.square(mutual_information)
  largest = np.max(squared, axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    score = 1.0 - (np.sum(squared, axis=1) - largest) / (largest * (squared.shape[1] - 1.0))
  return float(np.mean(np.where(largest == 0.0, 0.0, score)))
