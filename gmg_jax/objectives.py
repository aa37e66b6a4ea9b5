"""VAE objectives (disentanglement_lib conventions) and the loss entry point of the train step.

Loss = Bernoulli reconstruction (summed over pixels, batch mean; none for decoder_free) + the
objective's prior term (+ hfs_weight * HFS) (+ regularizer weight * GMG / DST / Jacobian value):
beta_vae beta KL; beta_tcvae KL + (beta - 1) TC (dlib) or alpha MI + beta TC + gamma dimKL (Roth
et al.); factor_vae KL + gamma TC_critic; dip_vae KL + DIP penalty; annealed_vae
gamma_annealed |KL - C(step)|; decoder_free prior matching (KL or Sinkhorn to N(0, I)).

The loss terms (`gaussian_kl`, `total_correlation`, `hfs`, ...) live in `gmg_jax.loss_terms`
(re-exported here).
`vae_loss` is what the trainer calls inside its jitted step; objectives are looked up by name in
`OBJECTIVES` (a dict, big_vision style).

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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gmg_jax import regularizers
from gmg_jax.loss_terms import (
  annealed_capacity,
  bernoulli_reconstruction,
  dip_vae_penalty,
  discriminator_loss,
  factor_vae_tc,
  gaussian_kl,
  hfs,
  permute_dims,
  sinkhorn_prior_matching,
  tcvae_decomposition,
  total_correlation,
)
from gmg_jax.models import VAE, to_float
from gmg_jax.registry import lookup

Aux = dict[str, jax.Array]
RegularizerFn = Callable[
  [Callable[[jax.Array], jax.Array], jax.Array, jax.Array, jax.Array],
  tuple[jax.Array, dict[str, Any]],
]


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


def _beta_tcvae(ctx: _Context, cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Aux]:
  estimator = tcvae_estimator(cfg)
  return lookup(TCVAE_ESTIMATORS, estimator, "objective.tcvae_estimator")(ctx, cfg)


def _tcvae_reads(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  if tcvae_estimator(cfg) == "dlib":
    return ("tcvae_estimator", "beta")
  return ("tcvae_estimator", "tcvae_alpha", "tcvae_beta", "tcvae_gamma", "dataset_size")


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
  """A registered objective: its prior term, whether it reconstructs through a decoder, and the
  fields of `config.objective` it reads, given that group (besides `name`, and the HFS fields
  every objective reads); the config check refuses a setting of the others
  (`checks.inert_settings`)."""

  fn: ObjectiveFn
  uses_decoder: bool
  reads: Callable[[ml_collections.ConfigDict], tuple[str, ...]] = lambda cfg: ()


OBJECTIVES: dict[str, Objective] = {
  "beta_vae": Objective(_beta_vae, True, lambda cfg: ("beta",)),
  "beta_tcvae": Objective(_beta_tcvae, True, _tcvae_reads),
  "factor_vae": Objective(_factor_vae, True, lambda cfg: ("gamma",)),
  "dip_vae": Objective(_dip_vae, True, lambda cfg: ("lambda_od", "lambda_d_factor", "dip_type")),
  "annealed_vae": Objective(
    _annealed_vae, True, lambda cfg: ("c_max", "iteration_threshold", "gamma_annealed")
  ),
  "decoder_free": Objective(_decoder_free, False, lambda cfg: ("prior_matching",)),
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


# A regularized map: (map_fn, its inputs x, the network output it is read from, output -> y).
_Map = tuple[Callable, jax.Array, jax.Array, Callable[[jax.Array], jax.Array]]


def _encoder_map(model: VAE, ctx: _Context, target: str) -> _Map:
  del target
  return (lambda x: model.encode(x)[0]), ctx.images, ctx.mu, lambda mu: mu


def _decoder_map(model: VAE, ctx: _Context, target: str) -> _Map:
  if ctx.logits is None:
    raise ValueError("regularizer.on='decoder' needs a decoder; use 'encoder' for decoder_free.")
  to_target = lookup(DECODER_TARGETS, target, "regularizer.target")
  return (lambda z: to_target(model.decode(z))), ctx.z, ctx.logits, to_target


REGULARIZED_MAPS = {"encoder": _encoder_map, "decoder": _decoder_map}

# Regularizers whose value is a function of the map's outputs y (so their gradient w.r.t. the
# outputs can be set beside the distortion's); the Jacobian penalty acts through derivatives.
OUTPUT_REGULARIZERS = ("gmg", "dst")
# Key of the regularizer's output gradient in vae_loss's aux (an array; the step pops it).
OUTPUT_GRADIENT = "_regularizer_output_gradient"


def regularized_output_shape(
  regularizer_config: ml_collections.ConfigDict, image_shape: tuple[int, ...], latent_dim: int
) -> tuple[int, ...]:
  """Shape of the network output the regularizer reads (decoder logits [B, H, W, C] or encoder
  means [B, D]), for `vae_loss`'s `probe`."""
  if regularizer_config.on == "decoder":
    return tuple(image_shape)
  return (image_shape[0], latent_dim)


def output_gradient_diagnostics(reg_grad: jax.Array, dst_grad: jax.Array) -> dict[str, jax.Array]:
  """Norms of the regularizer's and the distortion's gradients w.r.t. the same outputs, their
  ratio and cosine (a GMG whose plan sits on the map's own coupling has ratio ~0)."""
  reg_norm, dst_norm = jnp.linalg.norm(reg_grad), jnp.linalg.norm(dst_grad)
  tiny = jnp.finfo(reg_norm.dtype).tiny
  return {
    "grad/regularizer": reg_norm,
    "grad/distortion": dst_norm,
    "grad/regularizer_to_distortion": reg_norm / jnp.maximum(dst_norm, tiny),
    "grad/cosine_to_distortion": jnp.vdot(reg_grad, dst_grad)
    / jnp.maximum(reg_norm * dst_norm, tiny),
  }


def vae_loss(
  model: VAE,
  images: jax.Array,
  key: jax.Array,
  step: jax.Array | int,
  objective_config: ml_collections.ConfigDict,
  regularizer_fn: RegularizerFn | None,
  regularizer_config: ml_collections.ConfigDict,
  discriminator: nnx.Module | None = None,
  probe: jax.Array | None = None,
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
    probe: zeros of `regularized_output_shape(...)`, added to the regularized network output
      (decoder logits or encoder means): the loss's gradient w.r.t. `probe` is its gradient
      w.r.t. that output. Given, aux also holds the "grad/..." diagnostics of
      `output_gradient_diagnostics` and, under `OUTPUT_GRADIENT`, the regularizer's own output
      gradient (an array, not a scalar).

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
  on = regularizer_config.on
  if probe is not None and on == "encoder":
    mu = mu + probe
  z = _reparameterize(mu, logvar, keys.sample)
  logits = model.decode(z) if objective.uses_decoder else None
  if probe is not None and on == "decoder":
    logits = logits + probe
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
    map_fn, map_x, out, to_y = lookup(REGULARIZED_MAPS, on, "regularizer.on")(
      model, ctx, regularizer_config.target
    )
    if probe is None:
      value, reg_aux = regularizer_fn(map_fn, map_x, to_y(out), keys.regularizer)
    else:
      # One linearization of the regularizer (the solve is not repeated) gives its gradients
      # w.r.t. the outputs and the map's inputs; for the GMG a second backward pass from the
      # same forward gives its own distortion term's gradient w.r.t. the outputs (DST is the
      # GMG's first term, and the DST regularizer itself). The loss then takes the regularizer's
      # first-order surrogate, equal in value and, by the chain rule through `out` and `map_x`,
      # in its gradient w.r.t. every parameter, so the loss's own backward pass does not run
      # the regularizer's again.
      def value_and_distortion(o, x):
        value, reg_aux = regularizer_fn(map_fn, x, to_y(o), keys.regularizer)
        distortion = regularizers.distortion_term(regularizer_config.name, value, reg_aux)
        return (value, distortion), reg_aux

      (value, _), reg_vjp, reg_aux = jax.vjp(value_and_distortion, out, map_x, has_aux=True)
      one, zero = jnp.ones_like(value), jnp.zeros_like(value)
      reg_grad, x_grad = jax.lax.stop_gradient(reg_vjp((one, zero)))
      if regularizer_config.name == "dst":
        dst_grad = reg_grad
      else:
        dst_grad = jax.lax.stop_gradient(reg_vjp((zero, one))[0])
      value = (
        jax.lax.stop_gradient(value)
        + jnp.vdot(reg_grad, out - jax.lax.stop_gradient(out))
        + jnp.vdot(x_grad, map_x - jax.lax.stop_gradient(map_x))
      )
      aux.update(output_gradient_diagnostics(reg_grad, dst_grad))
      aux[OUTPUT_GRADIENT] = reg_grad
    loss = loss + regularizer_config.weight * value
    aux["regularizer"] = value
    aux.update({f"regularizer/{name}": v for name, v in reg_aux.items()})
  aux["loss"] = loss
  return loss, {name: jnp.asarray(v, jnp.float32) for name, v in aux.items()}


# Below this share of the output gradient, a regularizer is logged (and summarized) as negligible.
NEGLIGIBLE_SHARE = 0.01


def gradient_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
  """Medians of the logged output-gradient diagnostics (None without a GMG/DST regularizer).

  "negligible" is set when the regularizer's median share of the output gradient is below
  `NEGLIGIBLE_SHARE`: the run trained (almost) without it.
  """
  rows = [r for r in records if r.get("grad/regularizer_share") is not None]
  if not rows:
    return None

  def median(key):
    return float(np.median([r[key] for r in rows if r.get(key) is not None]))

  share = median("grad/regularizer_share")
  return {
    "logged_steps": len(rows),
    "median_regularizer_share": share,
    "median_regularizer_to_distortion": median("grad/regularizer_to_distortion"),
    "median_cosine_to_distortion": median("grad/cosine_to_distortion"),
    "negligible_fraction": float(np.mean([bool(r["grad/negligible"]) for r in rows])),
    "negligible": share < NEGLIGIBLE_SHARE,
  }


# ((loss, aux), grads) of the VAE loss; see `make_loss`.
LossFn = Callable[..., tuple[tuple[jax.Array, Aux], Any]]


def regularizer_share(reg_grad: jax.Array, output_grad: jax.Array, weight: float) -> Aux:
  """How much of the loss's gradient w.r.t. the regularized outputs is the regularizer's.

  `output_grad` is the whole loss's gradient w.r.t. the outputs and `reg_grad` the regularizer's
  own, so the rest of the loss contributes `output_grad - weight * reg_grad`. The share is
  |weight g_reg| / (|weight g_reg| + |g_rest|), in [0, 1]; "grad/negligible" marks a share below
  `NEGLIGIBLE_SHARE`.
  """
  weighted = weight * reg_grad
  reg_norm = jnp.linalg.norm(weighted)
  rest_norm = jnp.linalg.norm(output_grad - weighted)
  share = reg_norm / jnp.maximum(reg_norm + rest_norm, jnp.finfo(reg_norm.dtype).tiny)
  return {"grad/regularizer_share": share, "grad/negligible": share < NEGLIGIBLE_SHARE}


def make_loss(config: ml_collections.ConfigDict, regularizer_fn: RegularizerFn | None) -> LossFn:
  """The step's loss, its gradient and the output-gradient diagnostics, with the config bound.

  Args:
    config: the run's config (`objective`, `regularizer`, `model.latent_dim`).
    regularizer_fn: `regularizers.make_regularizer(config.regularizer)` (scoped for data
      parallelism by the trainer), or None.

  Returns:
    `loss_and_grad(model, images, key, step, discriminator=None) -> ((loss, aux), grads)`,
    differentiated w.r.t. `model`. With a GMG or DST regularizer, aux also holds the "grad/..."
    diagnostics (`output_gradient_diagnostics`, `regularizer_share`).
  """
  objective_config, regularizer_config = config.objective, config.regularizer
  diagnosed = regularizer_fn is not None and regularizer_config.name in OUTPUT_REGULARIZERS

  def loss_and_grad(model, images, key, step, discriminator=None):
    def loss(model, probe):
      return vae_loss(
        model,
        images,
        key,
        step,
        objective_config,
        regularizer_fn,
        regularizer_config,
        discriminator,
        probe=probe,
      )

    if not diagnosed:
      return nnx.value_and_grad(loss, has_aux=True)(model, None)
    shape = regularized_output_shape(regularizer_config, images.shape, config.model.latent_dim)
    (value, aux), (grads, output_grad) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      model, jnp.zeros(shape, jnp.float32)
    )
    aux.update(regularizer_share(aux.pop(OUTPUT_GRADIENT), output_grad, regularizer_config.weight))
    return (value, aux), grads

  return loss_and_grad
