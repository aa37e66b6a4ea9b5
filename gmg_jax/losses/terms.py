"""The loss terms of the VAE objectives, as pure jittable array functions.

disentanglement_lib conventions: Gaussian KL to N(0, I), Bernoulli reconstruction, beta-TCVAE's
minibatch-weighted and stratified total correlation, DIP-VAE's moment penalty, AnnealedVAE's
capacity, HFS (Roth et al. 2023), FactorVAE's critic terms and Sinkhorn prior matching.
`gmg_jax.losses.loss` assembles them into the loss of a train step.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import pointcloud
from ott.tools import sinkhorn_divergence

from gmg_jax.registry import check_choice

DIP_TYPES = ("i", "ii")
_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(samples: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Returns log N(samples; mean, exp(logvar)) per coordinate; arguments broadcast."""
  diff = samples - mean
  return -0.5 * (diff * diff * jnp.exp(-logvar) + logvar + _LOG_2PI)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over dims, mean over the batch.

  Args:
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.

  Returns:
    Scalar batch mean of 0.5 * sum_d (mu^2 + sigma^2 - log sigma^2 - 1).
  """
  return jnp.mean(0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - logvar - 1.0, axis=-1))


def bernoulli_reconstruction(logits: jax.Array, images_float: jax.Array) -> jax.Array:
  """Bernoulli negative log-likelihood (sigmoid cross-entropy), summed over pixels.

  Args:
    logits: [B, ...] decoder logits.
    images_float: [B, ...] targets in [0, 1].

  Returns:
    Scalar mean over the batch of the per-image sum.
  """
  per_pixel = (
    jnp.maximum(logits, 0.0) - logits * images_float + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  )
  return jnp.mean(jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1))


def _log_q_cross(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """[B (sample j), B (posterior i), D] log q(z_j,d | x_i)."""
  return gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])


def total_correlation(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """disentanglement_lib's minibatch-weighted total-correlation estimate (constants dropped).

  TC = mean_j [ logsumexp_i sum_d log q(z_jd | x_i) - sum_d logsumexp_i log q(z_jd | x_i) ].

  Args:
    z: [B, D] codes sampled from q(z | x).
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.

  Returns:
    Scalar TC estimate.
  """
  log_q = _log_q_cross(z, mu, logvar)
  log_qz = jax.nn.logsumexp(jnp.sum(log_q, axis=2), axis=1)
  log_qz_product = jnp.sum(jax.nn.logsumexp(log_q, axis=1), axis=1)
  return jnp.mean(log_qz - log_qz_product)


def log_importance_weights(batch_size: int, dataset_size: int) -> np.ndarray:
  """Log weights of minibatch stratified sampling, laid out exactly as in the reference code.

  Chen et al.'s `_log_importance_weight_matrix`, copied unchanged into Roth et al.'s
  `dent/losses/betatcvae.py`: fill 1/M (M = B - 1), then `W.view(-1)[::M + 1] = 1/N`,
  `W.view(-1)[1::M + 1] = (N - M) / (N M)` and `W[M - 1, 0] = (N - M) / (N M)`. On a B x B
  matrix a stride of M + 1 = B walks down a column, so it is columns 0 and 1 that get the special
  weights, not the diagonal as eq. S6 of the paper suggests (rtqichen/beta-tcvae pull request 1).
  We keep the reference layout so that results compare with the published HFS + beta-TCVAE runs.

  Args:
    batch_size: B >= 2.
    dataset_size: N, the training-set size.

  Returns:
    [B (sample j), B (posterior i)] float64 log weights.
  """
  if batch_size < 2:
    raise ValueError(f"Stratified sampling needs a batch of at least 2, got {batch_size}.")
  n, m = float(dataset_size), batch_size - 1
  strat_weight = (n - m) / (n * m)
  weights = np.full((batch_size, batch_size), 1.0 / m)
  flat = weights.reshape(-1)  # a view: writes go to `weights`
  flat[:: m + 1] = 1.0 / n
  flat[1 :: m + 1] = strat_weight
  weights[m - 1, 0] = strat_weight
  return np.log(weights)


def tcvae_decomposition(
  z: jax.Array, mu: jax.Array, logvar: jax.Array, dataset_size: int
) -> dict[str, jax.Array]:
  """beta-TCVAE's KL decomposition with minibatch stratified sampling (Roth et al.'s code).

  With log q(z_j) ~ logsumexp_i (log w_ji + sum_d log q(z_jd | x_i)) and
  log prod_d q(z_jd) ~ sum_d logsumexp_i (log w_ji + log q(z_jd | x_i)) (w from
  `log_importance_weights`):
  MI = mean_j [log q(z_j | x_j) - log q(z_j)], TC = mean_j [log q(z_j) - log prod_d q(z_jd)],
  dim_kl = mean_j [log prod_d q(z_jd) - log p(z_j)]; MI + TC + dim_kl = mean_j log q/p.

  Args:
    z: [B, D] codes sampled from q(z | x).
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    dataset_size: training-set size N.

  Returns:
    {"mi", "tc", "dim_kl"} scalars.
  """
  log_q = _log_q_cross(z, mu, logvar)
  log_w = jnp.asarray(log_importance_weights(z.shape[0], dataset_size), log_q.dtype)
  log_qz = jax.nn.logsumexp(log_w + jnp.sum(log_q, axis=2), axis=1)
  log_qz_product = jnp.sum(jax.nn.logsumexp(log_w[:, :, None] + log_q, axis=1), axis=1)
  log_qzx = jnp.sum(gaussian_log_density(z, mu, logvar), axis=1)
  log_pz = jnp.sum(gaussian_log_density(z, 0.0, 0.0), axis=1)
  return {
    "mi": jnp.mean(log_qzx - log_qz),
    "tc": jnp.mean(log_qz - log_qz_product),
    "dim_kl": jnp.mean(log_qz_product - log_pz),
  }


def dip_vae_penalty(
  mu: jax.Array, logvar: jax.Array, lambda_od: float, lambda_d: float, kind: str = "i"
) -> jax.Array:
  """DIP-VAE moment penalty on the covariance of the aggregate posterior (dlib).

  Cov = E[mu mu^T] - E[mu] E[mu]^T over the batch (biased); type "ii" adds the batch mean of
  diag(sigma^2). Penalty = lambda_od * sum_{i!=j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2.

  Args:
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    lambda_od: off-diagonal weight.
    lambda_d: diagonal weight.
    kind: "i" or "ii".

  Returns:
    Scalar penalty.
  """
  check_choice(kind, DIP_TYPES, "objective.dip_type")
  centered = mu - jnp.mean(mu, axis=0)
  cov = centered.T @ centered / mu.shape[0]
  if kind == "ii":
    cov = cov + jnp.diag(jnp.mean(jnp.exp(logvar), axis=0))
  diag = jnp.diagonal(cov)
  off_diag = cov - jnp.diag(diag)
  return lambda_od * jnp.sum(off_diag**2) + lambda_d * jnp.sum((diag - 1.0) ** 2)


def annealed_capacity(step: jax.Array | int, c_max: float, iteration_threshold: int) -> jax.Array:
  """Returns AnnealedVAE's capacity min(c_max, c_max * step / iteration_threshold) (float32).

  `step` may be traced; c_max is in nats; iteration_threshold is the steps to reach c_max.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(c_max * step / iteration_threshold, c_max)


def latent_pairs(key: jax.Array, latent_dim: int, num_pairs: int) -> jax.Array:
  """Draws `num_pairs` distinct latent pairs (i < j) without replacement.

  Args:
    key: PRNG key.
    latent_dim: D >= 2.
    num_pairs: how many pairs; >= D (D - 1) / 2 returns all pairs in lexicographic order.

  Returns:
    [P, 2] int32 pairs, P = min(num_pairs, D (D - 1) / 2).
  """
  if latent_dim < 2:
    raise ValueError(f"HFS needs at least 2 latent dimensions, got {latent_dim}.")
  all_pairs = jnp.asarray(list(itertools.combinations(range(latent_dim), 2)), jnp.int32)
  if num_pairs >= all_pairs.shape[0]:
    return all_pairs
  idx = jax.random.choice(key, all_pairs.shape[0], (num_pairs,), replace=False)
  return all_pairs[idx]


def hfs(mu: jax.Array, key: jax.Array, num_pairs: int = 25) -> jax.Array:
  """Hausdorff factorized-support distance (Roth et al. 2023, hard one-sided Hausdorff).

  For each sampled pair (a, b) of latent dims, the factorized support is all B^2 points
  (mu[i, a], mu[j, b]); each is matched to its nearest actual point (mu[k, a], mu[k, b]) in
  squared Euclidean distance, the worst match is kept, and the pairs are summed. Nothing is
  detached. Memory is B^3 * P floats (26 MB at B = 64, P = 25).

  Args:
    mu: [B, D] posterior means.
    key: PRNG key for the pairs.
    num_pairs: pairs per call (`latent_pairs`).

  Returns:
    Scalar sum over pairs of max_{i,j} min_k distance^2.
  """
  pairs = latent_pairs(key, mu.shape[1], num_pairs)
  sub = mu[:, pairs]  # [B, P, 2]
  # Squared gaps along each axis between any point i and actual point k: [B (i), B (k), P].
  gap_a = (sub[:, None, :, 0] - sub[None, :, :, 0]) ** 2
  gap_b = (sub[:, None, :, 1] - sub[None, :, :, 1]) ** 2
  # Factorized point (i, j) to actual point k: [B (i), B (j), B (k), P].
  dist = gap_a[:, None, :, :] + gap_b[None, :, :, :]
  return jnp.sum(jnp.max(jnp.min(dist, axis=2), axis=(0, 1)))


def sinkhorn_prior_matching(
  z: jax.Array, key: jax.Array, epsilon: float | None = None
) -> jax.Array:
  """Sinkhorn divergence (ott-jax, squared Euclidean) between codes and N(0, I) samples.

  Args:
    z: [B, D] codes.
    key: PRNG key for the B prior samples.
    epsilon: entropic regularization; None uses ott's default (scaled to the cost matrix).

  Returns:
    Scalar divergence, differentiable in z.
  """
  noise = jax.random.normal(key, z.shape, z.dtype)
  divergence, _ = sinkhorn_divergence.sinkhorn_divergence(
    pointcloud.PointCloud, z, noise, epsilon=epsilon
  )
  return divergence


def permute_dims(z: jax.Array, key: jax.Array) -> jax.Array:
  """Returns z [B, D] with each column shuffled independently (FactorVAE Algorithm 1)."""
  keys = jax.random.split(key, z.shape[1])
  return jax.vmap(jax.random.permutation, in_axes=(0, 1), out_axes=1)(keys, z)


def factor_vae_tc(disc_logits: jax.Array) -> jax.Array:
  """Returns FactorVAE's TC estimate mean(logit_0 - logit_1) from critic logits [B, 2] on z."""
  return jnp.mean(disc_logits[:, 0] - disc_logits[:, 1])


def discriminator_loss(logits_real: jax.Array, logits_permuted: jax.Array) -> jax.Array:
  """Critic cross-entropy, class 0 for z and 1 for permuted z (dlib, with log_softmax).

  Args:
    logits_real: [B, 2] critic logits on z.
    logits_permuted: [B, 2] critic logits on permute_dims(z).

  Returns:
    Scalar loss.
  """
  return -0.5 * (
    jnp.mean(jax.nn.log_softmax(logits_real)[:, 0])
    + jnp.mean(jax.nn.log_softmax(logits_permuted)[:, 1])
  )
