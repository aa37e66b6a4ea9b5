"""VAE objectives (disentanglement_lib conventions) and the loss entry point of the train step.

Loss = Bernoulli reconstruction (summed over pixels, batch mean; none for decoder_free) + the
objective's prior term (+ hfs_weight * HFS) (+ regularizer weight * GMG / DST / Jacobian value):
beta_vae beta KL; beta_tcvae KL + (beta - 1) TC (dlib) or alpha MI + beta TC + gamma dimKL (Roth
et al.); factor_vae KL + gamma TC_critic; dip_vae KL + DIP penalty; annealed_vae
gamma_annealed |KL - C(step)|; decoder_free prior matching (KL or Sinkhorn to N(0, I)).

The array functions (`gaussian_kl`, `total_correlation`, `hfs`, ...) are pure and jittable.
`vae_loss` is what the trainer calls inside its jitted step; objectives are looked up by name in
`OBJECTIVES` (a dict, big_vision style).

Objective config fields (`config.objective`; configs/default.py holds the defaults):
  name: "beta_vae" | "beta_tcvae" | "factor_vae" | "dip_vae" | "annealed_vae" | "decoder_free".
  beta: 4.0. KL weight of beta_vae; TC weight is beta - 1 in dlib's beta_tcvae (dlib sweeps beta
    in {1, 2, 4, 6, 8, 16} and {1, 2, 4, 6, 8, 10}).
  gamma: 10.0. FactorVAE weight of the critic's TC estimate (dlib sweeps 10..100).
  c_max: 25.0. AnnealedVAE final capacity in nats (dlib sweeps 5..100).
  iteration_threshold: 100000. AnnealedVAE steps until the capacity reaches c_max (dlib).
  gamma_annealed: 1000.0. AnnealedVAE weight of |KL - C| (dlib).
  lambda_od: 10.0. DIP-VAE off-diagonal weight (dlib sweeps 1..50).
  lambda_d_factor: 10.0. DIP-VAE diagonal weight = lambda_d_factor * lambda_od (dlib: 10 for
    type "i", 1 for type "ii").
  dip_type: "i". DIP-VAE type: "i" (Cov of mu) or "ii" (Cov of mu + mean diag(sigma^2)).
  hfs_weight: 0.0. Weight of the Hausdorff factorized-support term; > 0 adds it to the loss
    (Roth et al. use it on beta_vae and beta_tcvae; 300 with beta 0 is their pure-HFS run).
  hfs_pairs: 25. Random latent pairs (i < j) per step for HFS; >= D(D-1)/2 uses all pairs.
  tcvae_estimator: "auto". beta_tcvae form: "dlib" (KL + (beta-1) TC, minibatch-weighted),
    "decomposed" (alpha MI + beta TC + gamma dimKL, stratified sampling) or "auto" (decomposed
    when hfs_weight > 0, as in Roth et al.'s HFS + beta-TCVAE, else dlib).
  tcvae_alpha: 1.0. Mutual-information weight of the decomposed beta-TCVAE (Roth et al.).
  tcvae_beta: 6.0. Total-correlation weight of the decomposed beta-TCVAE (Roth et al.).
  tcvae_gamma: 1.0. Dimension-wise KL weight of the decomposed beta-TCVAE (Roth et al.).
  dataset_size: 480000. Training-set size N, used only by the stratified-sampling weights of the
    decomposed beta-TCVAE; set it to the dataset's size (480000 is Shapes3D).
  prior_matching: "kl". decoder_free prior term: "kl" (the VAE KL of q(z|x) to N(0, I)) or
    "sinkhorn" (ott's Sinkhorn divergence between the sampled codes and as many N(0, I) samples).

Regularizer slot: `regularizer_fn(map_fn, x, y, key) -> (value, aux)` with `regularizer_config`
fields `name` ("none" | "gmg" | "dst" | "jacobian"), `on` ("encoder" | "decoder"), `weight` and
`target` ("logits" | "mean"). On the encoder: x = float images [B, H, W, C], map_fn = encoder
mean, y = mu [B, D]. On the decoder: x = the sampled codes z [B, D], map_fn = model.decode
(composed with a sigmoid when target == "mean"), y = the reconstruction logits (or their
sigmoid) [B, H, W, C]. y always comes from the loss's own forward pass.

FactorVAE: the critic is not trained by `vae_loss` (its parameters are under stop_gradient there).
In the same step, with the model *before* the VAE update and the same `key` given to `vae_loss`:

  (loss, aux), grads = nnx.value_and_grad(vae_loss, has_aux=True)(
      model, images, key, step, objective_config, reg_fn, reg_config, discriminator)
  z = sample_codes(model, images, key)                # the codes vae_loss used
  (d_loss, d_aux), d_grads = nnx.value_and_grad(factor_vae_discriminator_loss, has_aux=True)(
      discriminator, z, disc_key)                     # disc_key independent of key
  vae_opt.update(model, grads); disc_opt.update(discriminator, d_grads)   # Adam 1e-4, b1 .5, b2 .9
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from ott.geometry import pointcloud
from ott.tools import sinkhorn_divergence

from gmg_jax.models import VAE, to_float
from gmg_jax.registry import check_choice, lookup

Aux = dict[str, jax.Array]
RegularizerFn = Callable[
  [Callable[[jax.Array], jax.Array], jax.Array, jax.Array, jax.Array],
  tuple[jax.Array, dict[str, Any]],
]

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


class _Context(NamedTuple):
  """One forward pass of a batch and what an objective may need besides.

  Attributes:
    images: [B, H, W, C] float images in [0, 1].
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    z: [B, D] reparameterized samples.
    logits: [B, H, W, C] reconstruction logits, or None when the objective has no decoder.
    step: scalar training step.
    key: PRNG key reserved for the objective's own noise.
    discriminator: the FactorVAE critic, or None.
  """

  images: jax.Array
  mu: jax.Array
  logvar: jax.Array
  z: jax.Array
  logits: jax.Array | None
  step: jax.Array | int
  key: jax.Array
  discriminator: nnx.Module | None


class _Keys(NamedTuple):
  sample: jax.Array
  objective: jax.Array
  hfs: jax.Array
  regularizer: jax.Array


def _split_keys(key: jax.Array) -> _Keys:
  return _Keys(*jax.random.split(key, len(_Keys._fields)))


def _reparameterize(mu: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def sample_codes(model: VAE, images: jax.Array, key: jax.Array) -> jax.Array:
  """Returns the codes z [B, D] that `vae_loss(model, images, key, ...)` samples, detached.

  Call it with the model as it was when `vae_loss` ran and the same images and key.
  """
  mu, logvar = model.encode(images)
  return jax.lax.stop_gradient(_reparameterize(mu, logvar, _split_keys(key).sample))


def factor_vae_discriminator_loss(
  discriminator: nnx.Module, z: jax.Array, key: jax.Array
) -> tuple[jax.Array, Aux]:
  """The FactorVAE critic's loss on a batch of codes and their per-dimension shuffle.

  Args:
    discriminator: the critic (differentiate this function w.r.t. it).
    z: [B, D] codes, e.g. from `sample_codes`; detached here.
    key: PRNG key for the shuffle.

  Returns:
    Scalar loss and {"discriminator_loss", "discriminator_accuracy"}.
  """
  z = jax.lax.stop_gradient(z)
  logits_real = discriminator(z)
  logits_permuted = discriminator(permute_dims(z, key))
  loss = discriminator_loss(logits_real, logits_permuted)
  accuracy = 0.5 * (
    jnp.mean(jnp.argmax(logits_real, axis=-1) == 0)
    + jnp.mean(jnp.argmax(logits_permuted, axis=-1) == 1)
  )
  return loss, {"discriminator_loss": loss, "discriminator_accuracy": accuracy}


def _frozen(module: nnx.Module) -> nnx.Module:
  """A copy of `module` whose parameters receive no gradient."""
  graphdef, state = nnx.split(module)
  return nnx.merge(graphdef, jax.lax.stop_gradient(state))


ObjectiveFn = Callable[[_Context, ml_collections.ConfigDict], tuple[jax.Array, Aux]]


def _beta_vae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  return cfg.beta * kl, {}


def _tcvae_dlib(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  tc = total_correlation(ctx.z, ctx.mu, ctx.logvar)
  return kl + (cfg.beta - 1.0) * tc, {"tc": tc}


def _tcvae_decomposed(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  terms = tcvae_decomposition(ctx.z, ctx.mu, ctx.logvar, cfg.dataset_size)
  loss = (
    cfg.tcvae_alpha * terms["mi"] + cfg.tcvae_beta * terms["tc"] + cfg.tcvae_gamma * terms["dim_kl"]
  )
  return loss, terms


TCVAE_ESTIMATORS = {"dlib": _tcvae_dlib, "decomposed": _tcvae_decomposed}


def _beta_tcvae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  estimator = cfg.tcvae_estimator
  if estimator == "auto":
    estimator = "decomposed" if cfg.hfs_weight > 0 else "dlib"
  return lookup(TCVAE_ESTIMATORS, estimator, "objective.tcvae_estimator")(ctx, cfg)


def _factor_vae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  if ctx.discriminator is None:
    raise ValueError("objective 'factor_vae' needs the discriminator passed to vae_loss.")
  tc = factor_vae_tc(_frozen(ctx.discriminator)(ctx.z))
  return gaussian_kl(ctx.mu, ctx.logvar) + cfg.gamma * tc, {"tc": tc}


def _dip_vae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  penalty = dip_vae_penalty(
    ctx.mu, ctx.logvar, cfg.lambda_od, cfg.lambda_d_factor * cfg.lambda_od, cfg.dip_type
  )
  return gaussian_kl(ctx.mu, ctx.logvar) + penalty, {"dip_penalty": penalty}


def _annealed_vae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  capacity = annealed_capacity(ctx.step, cfg.c_max, cfg.iteration_threshold)
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  return cfg.gamma_annealed * jnp.abs(kl - capacity), {"capacity": capacity}


PRIOR_MATCHING: dict[str, Callable[[_Context], jax.Array]] = {
  "kl": lambda ctx: gaussian_kl(ctx.mu, ctx.logvar),
  "sinkhorn": lambda ctx: sinkhorn_prior_matching(ctx.z, ctx.key),
}


def _decoder_free(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  prior = lookup(PRIOR_MATCHING, cfg.prior_matching, "objective.prior_matching")(ctx)
  return prior, {"prior_matching": prior}


class Objective(NamedTuple):
  """A registered objective: its prior term and whether it reconstructs through a decoder."""

  fn: ObjectiveFn
  uses_decoder: bool


OBJECTIVES: dict[str, Objective] = {
  "beta_vae": Objective(_beta_vae, True),
  "beta_tcvae": Objective(_beta_tcvae, True),
  "factor_vae": Objective(_factor_vae, True),
  "dip_vae": Objective(_dip_vae, True),
  "annealed_vae": Objective(_annealed_vae, True),
  "decoder_free": Objective(_decoder_free, False),
}


def get_objective(name: str) -> Objective:
  """Looks up an objective by name; `get_objective(name).uses_decoder` tells make_vae's decoder.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  return lookup(OBJECTIVES, name, "objective.name")


DECODER_TARGETS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "logits": lambda logits: logits,
  "mean": jax.nn.sigmoid,
}


def _encoder_map(model: VAE, ctx: _Context, target: str) -> tuple[Callable, jax.Array, jax.Array]:
  del target
  return (lambda x: model.encode(x)[0]), ctx.images, ctx.mu


def _decoder_map(model: VAE, ctx: _Context, target: str) -> tuple[Callable, jax.Array, jax.Array]:
  if ctx.logits is None:
    raise ValueError("regularizer.on='decoder' needs a decoder; use 'encoder' for decoder_free.")
  to_target = lookup(DECODER_TARGETS, target, "regularizer.target")
  return (lambda z: to_target(model.decode(z))), ctx.z, to_target(ctx.logits)


REGULARIZED_MAPS = {"encoder": _encoder_map, "decoder": _decoder_map}


def vae_loss(
  model: VAE,
  images: jax.Array,
  key: jax.Array,
  step: jax.Array | int,
  objective_config: ml_collections.ConfigDict,
  regularizer_fn: RegularizerFn | None,
  regularizer_config: ml_collections.ConfigDict,
  discriminator: nnx.Module | None = None,
) -> tuple[jax.Array, Aux]:
  """The training loss of one batch: reconstruction + objective (+ HFS) (+ regularizer).

  Args:
    model: the VAE; differentiate w.r.t. it (e.g. `nnx.value_and_grad(vae_loss, has_aux=True)`).
    images: [B, H, W, C] uint8 images.
    key: PRNG key of this step (codes, objective noise, HFS pairs, regularizer).
    step: scalar training step (AnnealedVAE's capacity schedule).
    objective_config: see the module docstring.
    regularizer_fn: `(map_fn, x, y, key) -> (value, aux)`, or None for no regularizer.
    regularizer_config: fields name, on, weight, target (module docstring).
    discriminator: the FactorVAE critic (factor_vae only); it receives no gradient here.

  Returns:
    Scalar loss and a dict of float32 scalars for logging: "loss", "kl", "reconstruction" and
    "elbo" (decoder objectives), the objective's terms ("tc", "mi", "dim_kl", "dip_penalty",
    "capacity", "prior_matching"), "hfs", "regularizer" and "regularizer/<name>" for the
    regularizer's own aux.

  Raises:
    ValueError: unknown names, factor_vae without a discriminator, a decoder objective or
      decoder regularizer on a decoder-free model.
  """
  objective = get_objective(objective_config.name)
  if objective.uses_decoder and model.decoder is None:
    raise ValueError(
      f"objective {objective_config.name!r} needs a decoder; build the model "
      "with make_vae(..., decoder=True)."
    )
  keys = _split_keys(key)
  x = to_float(images)
  mu, logvar = model.encode(x)
  z = _reparameterize(mu, logvar, keys.sample)
  logits = model.decode(z) if objective.uses_decoder else None
  ctx = _Context(x, mu, logvar, z, logits, step, keys.objective, discriminator)
  loss, aux = objective.fn(ctx, objective_config)
  aux["kl"] = gaussian_kl(mu, logvar)
  if logits is not None:
    reconstruction = bernoulli_reconstruction(logits, x)
    loss = loss + reconstruction
    aux["reconstruction"] = reconstruction
    aux["elbo"] = -(reconstruction + aux["kl"])
  if objective_config.hfs_weight > 0:
    aux["hfs"] = hfs(mu, keys.hfs, objective_config.hfs_pairs)
    loss = loss + objective_config.hfs_weight * aux["hfs"]
  if regularizer_fn is not None and regularizer_config.name != "none":
    map_fn, map_x, map_y = lookup(REGULARIZED_MAPS, regularizer_config.on, "regularizer.on")(
      model, ctx, regularizer_config.target
    )
    value, reg_aux = regularizer_fn(map_fn, map_x, map_y, keys.regularizer)
    loss = loss + regularizer_config.weight * value
    aux["regularizer"] = value
    aux.update({f"regularizer/{name}": v for name, v in reg_aux.items()})
  aux["loss"] = loss
  return loss, {name: jnp.asarray(v, jnp.float32) for name, v in aux.items()}
