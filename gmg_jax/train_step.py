"""The train state and the pure train step: one compiled program per step.

The step draws the batch (on the device for jittable datasets), computes the loss that
`gmg_jax.losses.build(config)` resolved, updates the VAE (and the objective's critic, if it has
one), and keeps the previous state if anything
came out non-finite. Every random draw is a function of (seed, step), so a run resumed from a
checkpoint replays exactly what an uninterrupted run does. `make_train_step(..., replicas=...)`
vmaps the same step over K stacked runs (`gmg_jax.replicas`). The loop that owns I/O is
`gmg_jax.train`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding

from gmg_jax import data as data_lib
from gmg_jax import models, sharding
from gmg_jax import replicas as replicas_lib
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses.objectives import sample_codes


class TrainState(struct.PyTreeNode):
  """Everything a checkpoint holds.

  Attributes:
    step: scalar int32, number of steps taken.
    rng: [2] uint32 raw key data of the run's base key (typed keys do not checkpoint).
    modules: nnx state of (vae, optimizer) or (vae, optimizer, critic, critic optimizer).
  """

  step: jax.Array
  rng: jax.Array
  modules: Any


def step_of(state: TrainState) -> int:
  """The steps `state` has taken, read on the host (a K-run's replicas share their step)."""
  return int(np.asarray(sharding.host_local(state.step)).reshape(-1)[0])


def _vae_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  adam = optax.adam(optim.learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  if optim.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), adam)
  return adam


def _build_modules(
  config: ml_collections.ConfigDict,
  image_shape: tuple[int, ...],
  losses: loss_lib.Losses,
  key: jax.Array,
) -> tuple[nnx.Module, ...]:
  rngs = nnx.Rngs(key)
  vae = models.make_vae(config.model, image_shape, decoder=losses.uses_decoder, rngs=rngs)
  modules = (vae, nnx.Optimizer(vae, _vae_optimizer(config.optim), wrt=nnx.Param))
  if losses.critic is not None:
    critic = losses.critic.build(config.model, rngs=rngs)
    critic_tx = losses.critic.optimizer(config.optim)
    modules += (critic, nnx.Optimizer(critic, critic_tx, wrt=nnx.Param))
  return modules


def create_train_state(
  config: ml_collections.ConfigDict,
  image_shape: tuple[int, ...],
  replicas: list[replicas_lib.Replica] | replicas_lib.Program | None = None,
  losses: loss_lib.Losses | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the modules and optimizers (in one compiled program) and the initial state.

  Args:
    config: the run's config.
    image_shape: (H, W, C) of the data.
    replicas: `replicas.expand(config)` (or its `replicas.Program`) for a K-run: the K initial
      states, each the initial state of that replica's single run, stacked along a leading
      axis; None: the single run of `config`.
    losses: `gmg_jax.losses.build(config)`; when not given, the objective alone is resolved
      (the model does not depend on the regularizer).

  Returns:
    The static graph definition of the modules and the initial `TrainState`.
  """
  losses = losses or loss_lib.build(config, regularizer=False)
  build = functools.partial(_build_modules, config, tuple(image_shape), losses)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(jax.random.key(0))))
  # Initializing inside one jit compiles one program instead of one RNG kernel per shape.
  init = jax.jit(lambda k: nnx.split(build(k))[1])
  states = []
  program = replicas_lib.as_program(config, replicas)
  for replica in program.replicas:
    init_key, run_key = jax.random.split(jax.random.key(replica.seed))
    states.append(
      TrainState(
        step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(run_key), modules=init(init_key)
      )
    )
  return graphdef, program.stack(states)


def step_keys(rng: jax.Array, step: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(data, loss, critic) keys of a step; the same on the host and inside the step."""
  key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
  data_key, loss_key, critic_key = jax.random.split(key, 3)
  return data_key, loss_key, critic_key


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def train_step(
  graphdef: nnx.GraphDef,
  loss_and_grad: loss_lib.LossFn,
  draw_batch: Callable[[Any, jax.Array], jax.Array],
  state: TrainState,
  batch_source: Any,
  *,
  critic_loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]] | None = None,
  batch_layout: NamedSharding | None = None,
  tx: optax.GradientTransformation | None = None,
  active: jax.Array | bool = True,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimization step (pure; jit it with the state donated).

  Args:
    graphdef: graph definition from `create_train_state`.
    loss_and_grad: `Losses.loss_and_grad(config)` (`gmg_jax.losses.loss`).
    draw_batch: `(batch_source, data_key) -> uint8 images [B, H, W, C]` (see `make_train_step`).
    state: current state.
    batch_source: a jittable dataset (the batch is drawn here, on the device) or a uint8
      image batch [B, H, W, C] drawn on the host with `step_keys(...)[0]`.
    critic_loss: `Losses.critic.loss` when the state holds a critic (the objective has one).
    batch_layout: `sharding.batch_sharding(mesh)` under data parallelism; None on one device
      without a mesh.
    tx: the VAE's optimizer with traced hyperparameters (a K-run varying the learning rate);
      it has the optimizer state of the graph's own, which it replaces. None: the graph's own.
    active: False keeps the state as it is (a stopped replica of a K-run).

  Returns:
    The new state (the old one, with the step advanced, if anything was non-finite or the run
    is not active) and scalar metrics, including "finite" (False when not active).
  """
  # copy=True: the optimizer updates these modules in place, and `state.modules` must stay the
  # pre-update state that a non-finite step falls back to.
  modules = nnx.merge(graphdef, state.modules, copy=True)
  vae, optimizer = modules[:2]
  if tx is not None:
    optimizer.tx = tx
  critic = modules[2] if len(modules) == 4 else None
  data_key, loss_key, critic_key = step_keys(state.rng, state.step)
  images = draw_batch(batch_source, data_key)
  if batch_layout is not None:
    # The global batch is drawn with the single-device key; the constraint makes each device
    # draw and render only its rows (the partitioner pushes it back into the sampler).
    images = jax.lax.with_sharding_constraint(images, batch_layout)
  (loss, aux), grads = loss_and_grad(vae, images, loss_key, state.step, critic)
  metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads))
  # A finite norm means every gradient entry and its square are finite.
  finite = active & jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
  if critic is not None:
    # The critic sees the codes the VAE loss used, from the VAE before its update.
    codes = sample_codes(vae, images, loss_key)
    (_, critic_aux), critic_grads = nnx.value_and_grad(critic_loss, has_aux=True)(
      critic, codes, critic_key
    )
    finite &= jnp.isfinite(optax.tree.norm(critic_grads))
    modules[3].update(critic, critic_grads)
    metrics.update(critic_aux)
  optimizer.update(vae, grads)

  updated = nnx.state(modules)
  # The new state must be finite to be kept (and ever saved). Its Adam moments are, given a
  # finite gradient norm (convex combinations of finite values and of squares that the norm
  # bounds); its parameters need not be (a finite update times a huge learning rate), so only
  # they are checked: reading the moments as well cost 15% of a 32x32 MLP step on a CPU.
  finite &= _all_finite([nnx.state(m, nnx.Param) for m in (vae, critic) if m is not None])
  new_modules = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state.modules)
  metrics["finite"] = finite
  return state.replace(step=state.step + 1, modules=new_modules), metrics


def make_train_step(
  graphdef: nnx.GraphDef,
  config: ml_collections.ConfigDict,
  mesh: Mesh | None = None,
  *,
  host_batches: bool = False,
  replicas: list[replicas_lib.Replica] | replicas_lib.Program | None = None,
  losses: loss_lib.Losses | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
  """The jitted `step(state, batch_source, active=True) -> (state, metrics)`, state donated.

  Args:
    graphdef: graph definition from `create_train_state`.
    config: the run's config.
    mesh: `sharding.make_mesh()` for the data-parallel step (the state must be replicated on
      it, a host batch sharded with `sharding.batch_sharding`); None compiles for the devices
      the arguments live on.
    host_batches: the step takes image batches drawn on the host (`host_batch`) instead of a
      jittable dataset it draws from.
    replicas: `replicas.expand(config)` (or its `replicas.Program`) for a K-run: the step runs
      on the stacked state of `create_train_state(..., replicas)`, vmapped over the replicas,
      each with its own values of the varied fields (traced, so one compilation serves all).
      The batch source is the dataset or the replicas' host batches [K, B, H, W, C]; `active`
      [K] bool stops replicas (False: not updated); metrics["finite"] is `active & finite`, the
      next step's mask. Each metric has a leading [K] axis. None: the single run of `config`
      (its `active` a scalar).
    losses: `gmg_jax.losses.build(config)` (built here when not given).
  """
  batch_size = config.train.batch_size
  if host_batches:
    draw_batch = lambda images, key: images  # noqa: E731
  else:
    draw_batch = lambda dataset, key: dataset.sample_batch(key, batch_size)[0]  # noqa: E731
  layout = None if mesh is None else sharding.batch_sharding(mesh)
  losses = losses or loss_lib.build(config)
  critic_loss = None if losses.critic is None else losses.critic.loss

  program = replicas_lib.as_program(config, replicas)
  values = replicas_lib.stacked_values(program.replicas)

  def one(state, batch_source, value, active):
    run_config = replicas_lib.with_values(config, value)
    varies_lr = "optim.learning_rate" in value
    return train_step(
      graphdef,
      losses.loss_and_grad(run_config, mesh),
      draw_batch,
      state,
      batch_source,
      critic_loss=critic_loss,
      batch_layout=layout,
      tx=_vae_optimizer(run_config.optim) if varies_lr else None,
      active=active,
    )

  def step(state, batch_source, active=True):
    in_axes = (0, 0 if host_batches else None, 0, 0)
    return program.vmap(one, in_axes)(state, batch_source, values, active)

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  # Pinning the outputs keeps the state replicated step after step.
  replicated = sharding.replicated(mesh)
  return jax.jit(step, out_shardings=(replicated, replicated), donate_argnums=0)


def host_batch(
  dataset: data_lib.GroundTruthDataset, rng: jax.Array, step: int, batch_size: int
) -> np.ndarray:
  """The batch of `step` drawn on the host (for datasets that are not jittable)."""
  images, _ = dataset.sample_batch(step_keys(rng, step)[0], batch_size)
  return np.asarray(images)
