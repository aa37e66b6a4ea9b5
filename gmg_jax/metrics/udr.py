"""Unsupervised Disentanglement Ranking (Duan et al. 2020; disentanglement_lib `udr.py`).

UDR picks models without labels: models of one setting trained with different seeds that
disentangle tend to agree on their latents up to permutation and sign, while entangled ones
differ. Given the codes of the same N inputs by M models (and each model's KL per latent):

1. each model's codes are standardized per dim (mean 0, std 1; a constant dim stays 0) and
   the dims whose mean KL is <= 0.01 are zeroed;
2. for each ordered pair (i, j), i != j, a similarity matrix R_ij [D_i, D_j] between latents:
   `lasso` (default): |coefficients| of a multi-output Lasso(alpha=0.1) predicting model j's
   codes from model i's; `spearman`: |Spearman rank correlation| of every pair of latents;
3. with `filter_low_kl`, only the rows / columns of latents with KL > `kl_filter_threshold`
   are kept;
4. the pair's score is the relative strength (`relative_strength`): for every column and every
   row, max^2 / sum (0 where that is 0/0 or NaN), the mean over columns and the mean over rows,
   averaged; 1 for a permutation matrix;
5. model i's UDR is the median of the scores of pairs (j, i) over j != i.

Equal to disentanglement_lib's `compute_udr_sklearn` on the same codes and KLs (sklearn's
Lasso for the lasso matrix; the Spearman matrix is the Pearson correlation of average ranks,
computed for all pairs at once, equal to `scipy.stats.spearmanr` per pair up to rounding).
disentanglement_lib raises when a model keeps no latent after the KL filter; here such a pair
scores 0. With the lasso matrix, two models equal up to permutation and sign score 1 - alpha =
0.9, not 1 (the Lasso shrinks every coefficient by alpha on standardized codes); with the
Spearman matrix they score 1.

This is a metric of several models, not of a run: `experiments/udr.py` scores saved runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats
from sklearn import linear_model, preprocessing

CORRELATIONS = ("lasso", "spearman")
_ACTIVE_KL = 0.01  # disentanglement_lib zeroes latents with KL <= 0.01 regardless of the filter


def gaussian_kl(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
  """Mean KL(q(z_d | x) || N(0, 1)) per latent over a batch.

  Args:
    mean: [N, D] posterior means.
    logvar: [N, D] posterior log-variances.

  Returns:
    [D] mean over the batch of 1/2 (mean^2 + exp(logvar) - logvar - 1).
  """
  mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
  return np.mean(0.5 * (np.square(mean) + np.exp(logvar) - logvar - 1.0), axis=0)


def relative_strength(similarity: np.ndarray) -> float:
  """Relative-strength disentanglement of a [D_i, D_j] non-negative similarity matrix.

  Args:
    similarity: [D_i, D_j] |correlations| between two models' latents.

  Returns:
    (mean over columns of max^2 / sum + mean over rows of max^2 / sum) / 2, where a 0/0 (an
    all-zero column or row) or a NaN counts as 0; 0 for an empty matrix.
  """
  similarity = np.asarray(similarity, np.float64)
  if similarity.size == 0:
    return 0.0

  def strength(axis: int) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
      ratio = np.square(np.max(similarity, axis=axis)) / np.sum(similarity, axis=axis)
    return float(np.mean(np.nan_to_num(ratio, nan=0.0)))

  return (strength(0) + strength(1)) / 2.0


def spearman_matrix(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
  """|Spearman correlation| between every latent of `codes_a` and of `codes_b`.

  Args:
    codes_a: [N, D_a] codes.
    codes_b: [N, D_b] codes of the same inputs.

  Returns:
    [D_a, D_b] absolute rank correlations; NaN where a latent is constant.
  """
  ranks_a = scipy.stats.rankdata(np.asarray(codes_a, np.float64), axis=0)
  ranks_b = scipy.stats.rankdata(np.asarray(codes_b, np.float64), axis=0)
  ranks_a, ranks_b = ranks_a - ranks_a.mean(axis=0), ranks_b - ranks_b.mean(axis=0)
  norms = np.sqrt(np.sum(ranks_a**2, axis=0))[:, None] * np.sqrt(np.sum(ranks_b**2, axis=0))
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.abs(ranks_a.T @ ranks_b / norms)


def lasso_matrix(
  codes_a: np.ndarray, codes_b: np.ndarray, *, alpha: float = 0.1, random_state=None
) -> np.ndarray:
  """|Lasso coefficients| predicting `codes_b` from `codes_a`.

  Args:
    codes_a: [N, D_a] inputs of the regression (standardized codes).
    codes_b: [N, D_b] targets.
    alpha: L1 weight (disentanglement_lib: 0.1).
    random_state: passed to sklearn's Lasso (used only by its random coordinate selection).

  Returns:
    [D_a, D_b]: entry (a, b) is |weight of latent a in the prediction of latent b|.
  """
  model = linear_model.Lasso(alpha=alpha, random_state=random_state)
  model.fit(codes_a, codes_b)
  return np.abs(np.reshape(model.coef_, (np.shape(codes_b)[1], np.shape(codes_a)[1]))).T


def standardize(codes: np.ndarray, kl: np.ndarray) -> np.ndarray:
  """Codes standardized per dim (sklearn's StandardScaler: ddof 0, a constant dim becomes 0),
  then the dims with KL <= 0.01 zeroed.

  Args:
    codes: [N, D] codes.
    kl: [D] mean KL per latent.

  Returns:
    [N, D] float64.
  """
  scaled = preprocessing.StandardScaler().fit_transform(np.asarray(codes, np.float64))
  return scaled * (np.asarray(kl) > _ACTIVE_KL)


def udr(
  representations: Sequence[np.ndarray],
  kl: Sequence[np.ndarray] | None = None,
  *,
  correlation: str = "lasso",
  filter_low_kl: bool = True,
  kl_filter_threshold: float = 0.01,
  alpha: float = 0.1,
  random_state=None,
) -> dict[str, np.ndarray]:
  """UDR of M models from their codes of the same inputs (disentanglement_lib defaults).

  Args:
    representations: M >= 2 arrays [N, D] (e.g. encoder means), row n of each from input n
      (disentanglement_lib: 1000 points).
    kl: M arrays [D], each model's mean KL per latent (`gaussian_kl`); None: every latent
      counts as active.
    correlation: "lasso" or "spearman".
    filter_low_kl: keep only latents with KL > `kl_filter_threshold` in each pair's matrix.
    kl_filter_threshold: the filter's threshold.
    alpha: L1 weight of the lasso matrix.
    random_state: sklearn random state of the Lasso.

  Returns:
    {"model_scores": [M] each model's UDR (median over its pairs), "pairwise_scores": [M, M]
    score of pair (i, j) (0 on the diagonal), "correlations": [M, M, D, D] the unfiltered
    similarity matrices (zeros on the diagonal pairs)}.
  """
  if correlation not in CORRELATIONS:
    raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
  representations = [np.asarray(r) for r in representations]
  num_models = len(representations)
  if num_models < 2:
    raise ValueError(f"UDR compares models: got {num_models} representation(s), need >= 2")
  shapes = {r.shape for r in representations}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"representations must all be [N, D] of one shape, got {sorted(shapes)}")
  latent_dim = representations[0].shape[1]
  if kl is None:
    kl = [np.ones(latent_dim)] * num_models
  kl = [np.asarray(k, np.float64).reshape(latent_dim) for k in kl]
  if len(kl) != num_models:
    raise ValueError(f"got {len(kl)} KL vectors for {num_models} representations")

  codes = [standardize(r, k) for r, k in zip(representations, kl, strict=True)]
  masks = [k > kl_filter_threshold for k in kl]
  correlations = np.zeros((num_models, num_models, latent_dim, latent_dim))
  pairwise = np.zeros((num_models, num_models))
  for i in range(num_models):
    for j in range(num_models):
      if i == j:
        continue
      if correlation == "lasso":
        matrix = lasso_matrix(codes[i], codes[j], alpha=alpha, random_state=random_state)
      else:
        matrix = spearman_matrix(codes[i], codes[j])
      correlations[i, j] = matrix
      if filter_low_kl:
        matrix = matrix[masks[i]][:, masks[j]]
      pairwise[i, j] = relative_strength(matrix)
  model_scores = np.array([np.median(np.delete(pairwise[:, i], i)) for i in range(num_models)])
  return {"model_scores": model_scores, "pairwise_scores": pairwise, "correlations": correlations}
