"""The built-in VAE objectives (disentanglement_lib conventions), registered with their specs.

Loss = Bernoulli reconstruction (summed over pixels, batch mean; none for decoder_free) + the
objective's prior term (+ hfs_weight * HFS) (+ regularizer weight * GMG / DST / Jacobian value):
beta_vae beta KL; beta_tcvae KL + (beta - 1) TC (dlib) or alpha MI + beta TC + gamma dimKL (Roth
et al.); factor_vae KL + gamma TC_critic; dip_vae KL + DIP penalty; annealed_vae
gamma_annealed |KL - C(step)|; decoder_free prior matching (KL or Sinkhorn to N(0, I)).

The loss terms (`gaussian_kl`, `total_correlation`, `hfs`, ...) live in `gmg_jax.losses.terms`;
`gmg_jax.losses.loss.vae_loss` assembles the loss of a step. Each objective here is registered
(`gmg_jax.losses.registry.add_objective`) with the fields of `config.objective` it reads, the
ones a K-run may vary, their checks and (FactorVAE) its critic.

Objective config fields (`config.objective`; gmg_jax/config.py holds the defaults):
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
  dataset_size: 0. Training-set size N, used only by the stratified-sampling weights of the
    decomposed beta-TCVAE; the trainer fills 0 with the dataset's number of images.
  prior_matching: "kl". decoder_free prior term: "kl" (the VAE KL of q(z|x) to N(0, I)) or
    "sinkhorn" (ott's Sinkhorn divergence between the sampled codes and as many N(0, I) samples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from gmg_jax import models
from gmg_jax.losses import registry
from gmg_jax.losses.registry import NON_NEGATIVE, ObjectiveSpec, at_least
from gmg_jax.losses.terms import (
  DIP_TYPES,
  annealed_capacity,
  dip_vae_penalty,
  discriminator_loss,
  factor_vae_tc,
  gaussian_kl,
  permute_dims,
  sinkhorn_prior_matching,
  tcvae_decomposition,
  total_correlation,
)
from gmg_jax.models import VAE
from gmg_jax.registry import lookup

Aux = dict[str, jax.Array]


class Inputs(NamedTuple):
  """One forward pass of a batch and what an objective may need besides.

  Attributes:
    images: [B, H, W, C] float images in [0, 1].
    mu: [B, D] posterior means.
    logvar: [B, D] posterior log-variances.
    z: [B, D] reparameterized samples.
    logits: [B, H, W, C] reconstruction logits, or None when the objective has no decoder.
    step: scalar training step.
    key: PRNG key reserved for the objective's own noise.
    critic: the objective's critic (`ObjectiveSpec.critic`), or None.
  """

  images: jax.Array
  mu: jax.Array
  logvar: jax.Array
  z: jax.Array
  logits: jax.Array | None
  step: jax.Array | int
  key: jax.Array
  critic: nnx.Module | None


class Keys(NamedTuple):
  sample: jax.Array
  objective: jax.Array
  hfs: jax.Array
  regularizer: jax.Array


def split_keys(key: jax.Array) -> Keys:
  return Keys(*jax.random.split(key, len(Keys._fields)))


def reparameterize(mu: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def sample_codes(model: VAE, images: jax.Array, key: jax.Array) -> jax.Array:
  """Returns the codes z [B, D] that `vae_loss(model, images, key, ...)` samples, detached.

  Call it with the model as it was when `vae_loss` ran and the same images and key (a critic
  is trained on them, `registry.Critic`).
  """
  mu, logvar = model.encode(images)
  return jax.lax.stop_gradient(reparameterize(mu, logvar, split_keys(key).sample))


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


def _beta_vae(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  return cfg.beta * kl, {}


def _tcvae_dlib(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  tc = total_correlation(ctx.z, ctx.mu, ctx.logvar)
  return kl + (cfg.beta - 1.0) * tc, {"tc": tc}


def _tcvae_decomposed(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  if cfg.dataset_size < 2:
    raise ValueError(
      f"objective.dataset_size={cfg.dataset_size}: the decomposed beta-TCVAE needs the training "
      "set's size N; train.train_and_evaluate fills 0 from the dataset (with_dataset_facts), "
      "callers of the loss must pass it."
    )
  terms = tcvae_decomposition(ctx.z, ctx.mu, ctx.logvar, cfg.dataset_size)
  loss = (
    cfg.tcvae_alpha * terms["mi"] + cfg.tcvae_beta * terms["tc"] + cfg.tcvae_gamma * terms["dim_kl"]
  )
  return loss, terms


TCVAE_ESTIMATORS = {"dlib": _tcvae_dlib, "decomposed": _tcvae_decomposed}


def tcvae_estimator(cfg: ml_collections.ConfigDict) -> str:
  """The beta-TCVAE form `cfg` trains: "auto" is "decomposed" with HFS, else "dlib"."""
  if cfg.tcvae_estimator == "auto":
    return "decomposed" if cfg.hfs_weight > 0 else "dlib"
  return cfg.tcvae_estimator


def _beta_tcvae(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  estimator = tcvae_estimator(cfg)
  return lookup(TCVAE_ESTIMATORS, estimator, "objective.tcvae_estimator")(ctx, cfg)


def _tcvae_reads(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  if tcvae_estimator(cfg) == "dlib":
    return ("tcvae_estimator", "beta")
  return ("tcvae_estimator", "tcvae_alpha", "tcvae_beta", "tcvae_gamma", "dataset_size")


def _factor_vae(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  if ctx.critic is None:
    raise ValueError(
      "objective 'factor_vae' needs its critic (the discriminator) passed to vae_loss."
    )
  tc = factor_vae_tc(_frozen(ctx.critic)(ctx.z))
  return gaussian_kl(ctx.mu, ctx.logvar) + cfg.gamma * tc, {"tc": tc}


def _dip_vae(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  penalty = dip_vae_penalty(
    ctx.mu, ctx.logvar, cfg.lambda_od, cfg.lambda_d_factor * cfg.lambda_od, cfg.dip_type
  )
  return gaussian_kl(ctx.mu, ctx.logvar) + penalty, {"dip_penalty": penalty}


def _annealed_vae(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  capacity = annealed_capacity(ctx.step, cfg.c_max, cfg.iteration_threshold)
  kl = gaussian_kl(ctx.mu, ctx.logvar)
  return cfg.gamma_annealed * jnp.abs(kl - capacity), {"capacity": capacity}


PRIOR_MATCHING: dict[str, Callable[[Inputs], jax.Array]] = {
  "kl": lambda ctx: gaussian_kl(ctx.mu, ctx.logvar),
  "sinkhorn": lambda ctx: sinkhorn_prior_matching(ctx.z, ctx.key),
}


def _decoder_free(ctx: Inputs, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  prior = lookup(PRIOR_MATCHING, cfg.prior_matching, "objective.prior_matching")(ctx)
  return prior, {"prior_matching": prior}


def _factor_vae_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(optim.disc_learning_rate, b1=optim.disc_b1, b2=optim.disc_b2)


def _tcvae_form(cfg: ml_collections.ConfigDict) -> str:
  return f"in its {tcvae_estimator(cfg)!r} form"


def _tcvae_read_hint(cfg: ml_collections.ConfigDict, key: str) -> str | None:
  """How to make beta-TCVAE read `key`: its other form, when that one reads it."""
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.tcvae_estimator = "dlib" if tcvae_estimator(cfg) == "decomposed" else "decomposed"
  if key in _tcvae_reads(other):
    return f"set objective.tcvae_estimator={other.tcvae_estimator!r}"
  return None


_TCVAE_WEIGHTS = ("tcvae_alpha", "tcvae_beta", "tcvae_gamma")
for _spec in (
  ObjectiveSpec(
    "beta_vae",
    _beta_vae,
    reads=lambda cfg: ("beta",),
    variable=("beta",),
    ranges={"beta": NON_NEGATIVE},
  ),
  ObjectiveSpec(
    "beta_tcvae",
    _beta_tcvae,
    reads=_tcvae_reads,
    variable=("beta", *_TCVAE_WEIGHTS),
    min_batch_size=2,
    choices={"tcvae_estimator": ("auto", *TCVAE_ESTIMATORS)},
    ranges={
      "beta": NON_NEGATIVE,
      **dict.fromkeys(_TCVAE_WEIGHTS, NON_NEGATIVE),
      "dataset_size": (
        lambda v: v == 0 or v >= 2,
        "0 (the dataset's number of images) or an integer >= 2",
      ),
    },
    form=_tcvae_form,
    read_hint=_tcvae_read_hint,
  ),
  ObjectiveSpec(
    "factor_vae",
    _factor_vae,
    reads=lambda cfg: ("gamma",),
    variable=("gamma",),
    min_batch_size=2,
    critic=registry.Critic(
      models.make_discriminator, _factor_vae_optimizer, factor_vae_discriminator_loss
    ),
    ranges={"gamma": NON_NEGATIVE},
  ),
  ObjectiveSpec(
    "dip_vae",
    _dip_vae,
    reads=lambda cfg: ("lambda_od", "lambda_d_factor", "dip_type"),
    variable=("lambda_od", "lambda_d_factor"),
    choices={"dip_type": DIP_TYPES},
    ranges={"lambda_od": NON_NEGATIVE, "lambda_d_factor": NON_NEGATIVE},
  ),
  ObjectiveSpec(
    "annealed_vae",
    _annealed_vae,
    reads=lambda cfg: ("c_max", "iteration_threshold", "gamma_annealed"),
    variable=("c_max", "gamma_annealed"),
    ranges={
      "c_max": NON_NEGATIVE,
      "iteration_threshold": (at_least(1), "an integer >= 1"),
      "gamma_annealed": NON_NEGATIVE,
    },
  ),
  ObjectiveSpec(
    "decoder_free",
    _decoder_free,
    uses_decoder=False,
    reads=lambda cfg: ("prior_matching",),
    choices={"prior_matching": PRIOR_MATCHING},
  ),
):
  registry.add_objective(_spec)


def get_objective(name: str) -> ObjectiveSpec:
  """The spec of objective `name`; `get_objective(name).uses_decoder` tells make_vae's decoder.

  Raises:
    ValueError: unknown name (the message lists the registered ones).
  """
  return registry.objective_spec(name)
