"""The loss of a train step, built once from a config: `build(config)`.

Loss = Bernoulli reconstruction (summed over pixels, batch mean; none without a decoder) + the
objective's prior term (`gmg_jax.losses.objectives`, or a registered one) (+ hfs_weight * HFS)
(+ regularizer weight * the regularizer's value, `gmg_jax.losses.regularizers` or a registered
one).

Regularizer slot: `regularizer_fn(map_fn, x, y, key) -> (value, aux)` with `regularizer_config`
fields `name` ("none" | "gmg" | "dst" | "jacobian"), `on` ("encoder" | "decoder"), `weight` and
`target` ("logits" | "mean"). On the encoder: x = float images [B, H, W, C], map_fn = encoder
mean, y = mu [B, D]. On the decoder: x = the sampled codes z [B, D], map_fn = model.decode
(composed with a sigmoid when target == "mean"), y = the reconstruction logits (or their
sigmoid) [B, H, W, C]. y always comes from the loss's own forward pass.

A critic (FactorVAE's, `ObjectiveSpec.critic`) is not trained by `vae_loss` (its parameters are
under stop_gradient there). In the same step, with the model *before* the VAE update and the same
`key` given to `vae_loss`:

  (loss, aux), grads = nnx.value_and_grad(vae_loss, has_aux=True)(
      model, images, key, step, objective_config, reg_fn, reg_config, critic)
  z = objectives.sample_codes(model, images, key)     # the codes vae_loss used
  (c_loss, c_aux), c_grads = nnx.value_and_grad(spec.critic.loss, has_aux=True)(
      critic, z, critic_key)                          # critic_key independent of key
  vae_opt.update(model, grads); critic_opt.update(critic, c_grads)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from gmg_jax.losses import diagnostics, maps, objectives, registry, regularizers
from gmg_jax.losses.terms import bernoulli_reconstruction, gaussian_kl, hfs
from gmg_jax.models import VAE, to_float
from gmg_jax.registry import lookup

Aux = dict[str, jax.Array]


def _probed(
  spec: registry.RegularizerSpec,
  apply: Callable[[jax.Array, jax.Array], tuple[jax.Array, Aux]],
  out: jax.Array,
  map_x: jax.Array,
) -> tuple[jax.Array, Aux, Aux]:
  """The regularizer `apply(out, map_x) -> (value, aux)`, linearized once, with its gradients.

  One linearization (the GW solve is not repeated) gives its gradients w.r.t. the outputs and
  the map's inputs; with a `distortion` (GMG), a second backward pass from the same forward
  gives the distortion term's gradient w.r.t. the outputs (for DST, the value itself). The loss
  then takes the first-order surrogate (`_first_order`), so its own backward pass does not run
  the regularizer's again.

  Returns:
    (the surrogate value, the regularizer's aux, the "grad/..." diagnostics with the
    regularizer's own output gradient under `diagnostics.OUTPUT_GRADIENT`).
  """
  if spec.distortion is None:
    value, reg_vjp, reg_aux = jax.vjp(apply, out, map_x, has_aux=True)
    reg_grad, x_grad = jax.lax.stop_gradient(reg_vjp(jnp.ones_like(value)))
    probed = {}
  else:

    def value_and_distortion(o, x):
      value, reg_aux = apply(o, x)
      return (value, spec.distortion(value, reg_aux)), reg_aux

    (value, _), reg_vjp, reg_aux = jax.vjp(value_and_distortion, out, map_x, has_aux=True)
    one, zero = jnp.ones_like(value), jnp.zeros_like(value)
    reg_grad, x_grad = jax.lax.stop_gradient(reg_vjp((one, zero)))
    if spec.distortion is regularizers.value_itself:
      dst_grad = reg_grad
    else:
      dst_grad = jax.lax.stop_gradient(reg_vjp((zero, one))[0])
    probed = diagnostics.output_gradient_diagnostics(reg_grad, dst_grad)
  probed[diagnostics.OUTPUT_GRADIENT] = reg_grad
  return _first_order(value, reg_grad, out, x_grad, map_x), reg_aux, probed


def _first_order(value, reg_grad, out, x_grad, map_x):
  """The regularizer's first-order surrogate around the batch: equal to `value`, and with the
  gradient `reg_grad` w.r.t. `out` and `x_grad` w.r.t. `map_x` (so, by the chain rule, the same
  gradient w.r.t. every parameter), without running the regularizer's backward pass again."""
  return (
    jax.lax.stop_gradient(value)
    + jnp.vdot(reg_grad, out - jax.lax.stop_gradient(out))
    + jnp.vdot(x_grad, map_x - jax.lax.stop_gradient(map_x))
  )


def vae_loss(
  model: VAE,
  images: jax.Array,
  key: jax.Array,
  step: jax.Array | int,
  objective_config: ml_collections.ConfigDict,
  regularizer_fn: regularizers.Regularizer | None,
  regularizer_config: ml_collections.ConfigDict,
  critic: nnx.Module | None = None,
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
    regularizer_config: fields name, on, weight, target (module docstring); the regularizer's
      spec (`registry.regularizer_spec(name)`) says how its output gradient is probed.
    critic: the objective's critic (`ObjectiveSpec.critic`; FactorVAE's); it receives no
      gradient here.
    probe: zeros of `maps.regularized_output_shape(...)`, added to the regularized network output
      (decoder logits or encoder means): the loss's gradient w.r.t. `probe` is its gradient
      w.r.t. that output. Given, aux also holds the "grad/..." diagnostics of
      `diagnostics.output_gradient_diagnostics` (with a distortion) and, under
      `diagnostics.OUTPUT_GRADIENT`, the regularizer's own output gradient (an array).

  Returns:
    Scalar loss and a dict of float32 scalars for logging: "loss", "kl", "reconstruction" and
    "elbo" (decoder objectives), the objective's terms ("tc", "mi", "dim_kl", "dip_penalty",
    "capacity", "prior_matching"), "hfs", "regularizer" and "regularizer/<name>" for the
    regularizer's own aux.

  Raises:
    ValueError: unknown names, factor_vae without a discriminator, a decoder objective or
      decoder regularizer on a decoder-free model.
  """
  objective = objectives.get_objective(objective_config.name)
  if objective.uses_decoder and model.decoder is None:
    raise ValueError(
      f"objective {objective_config.name!r} needs a decoder; build the model "
      "with make_vae(..., decoder=True)."
    )
  keys = objectives.split_keys(key)
  x = to_float(images)
  mu, logvar = model.encode(x)
  on = regularizer_config.on
  if probe is not None and on == "encoder":
    mu = mu + probe
  z = objectives.reparameterize(mu, logvar, keys.sample)
  logits = model.decode(z) if objective.uses_decoder else None
  if probe is not None and on == "decoder":
    logits = logits + probe
  ctx = objectives.Inputs(x, mu, logvar, z, logits, step, keys.objective, critic)
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
    spec = registry.regularizer_spec(regularizer_config.name)
    map_fn, map_x, out, to_y = lookup(maps.REGULARIZED_MAPS, on, "regularizer.on")(
      model, ctx, regularizer_config.target
    )

    def apply(o, x):
      return regularizer_fn(map_fn, x, to_y(o), keys.regularizer)

    if probe is None:
      value, reg_aux = apply(out, map_x)
    else:
      value, reg_aux, probed = _probed(spec, apply, out, map_x)
      aux.update(probed)
    loss = loss + regularizer_config.weight * value
    aux["regularizer"] = value
    aux.update({f"regularizer/{name}": v for name, v in reg_aux.items()})
  aux["loss"] = loss
  return loss, {name: jnp.asarray(v, jnp.float32) for name, v in aux.items()}


# ((loss, aux), grads) of the VAE loss; see `make_loss`.
LossFn = Callable[..., tuple[tuple[jax.Array, Aux], Any]]


def make_loss(
  config: ml_collections.ConfigDict, regularizer_fn: regularizers.Regularizer | None
) -> LossFn:
  """The step's loss, its gradient and the output-gradient diagnostics, with the config bound.

  Args:
    config: the run's config (`objective`, `regularizer`, `model.latent_dim`).
    regularizer_fn: `regularizers.make_regularizer(config.regularizer)` (scoped for data
      parallelism by the trainer), or None.

  Returns:
    `loss_and_grad(model, images, key, step, critic=None) -> ((loss, aux), grads)`,
    differentiated w.r.t. `model`. With a regularizer that `reads_outputs` (GMG, DST), aux also
    holds the "grad/..." diagnostics (`gmg_jax.losses.diagnostics`).
  """
  objective_config, regularizer_config = config.objective, config.regularizer
  diagnosed = (
    regularizer_fn is not None
    and regularizer_config.name != "none"
    and registry.regularizer_spec(regularizer_config.name).reads_outputs
  )

  def loss_and_grad(model, images, key, step, critic=None):
    def loss(model, probe):
      return vae_loss(
        model,
        images,
        key,
        step,
        objective_config,
        regularizer_fn,
        regularizer_config,
        critic,
        probe=probe,
      )

    if not diagnosed:
      return nnx.value_and_grad(loss, has_aux=True)(model, None)
    shape = maps.regularized_output_shape(regularizer_config, images.shape, config.model.latent_dim)
    (value, aux), (grads, output_grad) = nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      model, jnp.zeros(shape, jnp.float32)
    )
    reg_grad = aux.pop(diagnostics.OUTPUT_GRADIENT)
    aux.update(diagnostics.regularizer_share(reg_grad, output_grad, regularizer_config.weight))
    return (value, aux), grads

  return loss_and_grad


class Losses(NamedTuple):
  """The objective and regularizer of a run, resolved from its config once before the loop
  (`build`); the trainer, the step and the evaluation ask it instead of naming a loss.

  Attributes:
    objective: the objective's spec.
    regularizer: the regularizer's spec, or None for regularizer.name == "none".
  """

  objective: registry.ObjectiveSpec
  regularizer: registry.RegularizerSpec | None

  @property
  def uses_decoder(self) -> bool:
    return self.objective.uses_decoder

  @property
  def critic(self) -> registry.Critic | None:
    return self.objective.critic

  def loss_and_grad(self, config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> LossFn:
    """`make_loss` of `config` (the run's, or a replica's with its varied values traced), its
    regularizer applied per `regularizer.scope` over `mesh` (None: no mesh)."""
    regularizer_fn = regularizers.make_regularizer(config.regularizer)
    if mesh is not None:
      regularizer_fn = maps.scoped_regularizer(regularizer_fn, config.regularizer.scope, mesh)
    return make_loss(config, regularizer_fn)


def build(config: ml_collections.ConfigDict, *, regularizer: bool = True) -> Losses:
  """The run's `Losses` (ValueError naming the registered ones for an unknown name).

  Args:
    config: the run's config.
    regularizer: False leaves the regularizer out (None): what building a saved run's model
      needs, so that scoring a run does not need its regularizer's module imported.
  """
  name = config.regularizer.name
  return Losses(
    objectives.get_objective(config.objective.name),
    None if name == "none" or not regularizer else registry.regularizer_spec(name),
  )
