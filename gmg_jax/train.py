"""Training: state creation, a pure jitted train step, and the loop that owns all I/O.

The step is one compiled program: it draws the batch (on the device for jittable datasets),
computes the objective with its regularizer, updates the VAE (and the FactorVAE critic), and
keeps the previous state if anything came out non-finite. Every random draw is a function of
(seed, step), so a run resumed from a checkpoint replays exactly what an uninterrupted run does.

The loop runs data parallel over every device of every process (`gmg_jax.sharding`): the state
is replicated, the global batch of `train.batch_size` is split along the data axis, and
`regularizer.scope` picks one GW problem on the global batch or one per device sub-batch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx, struct
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from gmg_jax import checkpointing, checks, evaluation, models, objectives, regularizers, sharding
from gmg_jax import data as data_lib
from gmg_jax import metrics as metrics_lib
from gmg_jax.config import ConfigError
from gmg_jax.writers import MetricWriter, read_jsonl, write_json_atomic


class Diverged(FloatingPointError):
  """A step produced a non-finite loss, gradient or state; it was not applied or saved."""

  def __init__(self, step: int, metrics: dict[str, Any]):
    self.step = step
    terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()) if k != "finite")
    super().__init__(
      f"Non-finite loss, gradient or parameters at step {step} ({terms}). The update was not "
      "applied and every checkpoint left holds finite parameters whose loss was finite. Resume "
      "from the last checkpoint with a lower learning rate: add "
      "--config.optim.learning_rate=<lower> --config.train.resume_with_changed_config=True."
    )


class Preempted(Exception):
  """The run was asked to stop (SIGTERM) and saved its state; the same command resumes it."""

  def __init__(self, step: int, workdir: str):
    self.step = step
    super().__init__(
      f"Preempted at step {step}; the state is saved in {workdir}. Run the same command to resume."
    )


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


def _vae_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  adam = optax.adam(optim.learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  if optim.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), adam)
  return adam


def _build_modules(
  config: ml_collections.ConfigDict, image_shape: tuple[int, ...], key: jax.Array
) -> tuple[nnx.Module, ...]:
  rngs = nnx.Rngs(key)
  objective = objectives.get_objective(config.objective.name)
  vae = models.make_vae(config.model, image_shape, decoder=objective.uses_decoder, rngs=rngs)
  modules = (vae, nnx.Optimizer(vae, _vae_optimizer(config.optim), wrt=nnx.Param))
  if config.objective.name == "factor_vae":
    critic = models.make_discriminator(config.model, rngs=rngs)
    critic_tx = optax.adam(
      config.optim.disc_learning_rate, b1=config.optim.disc_b1, b2=config.optim.disc_b2
    )
    modules += (critic, nnx.Optimizer(critic, critic_tx, wrt=nnx.Param))
  return modules


def create_train_state(
  config: ml_collections.ConfigDict, image_shape: tuple[int, ...]
) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the modules and optimizers (in one compiled program) and the initial state.

  Args:
    config: the run's config.
    image_shape: (H, W, C) of the data.

  Returns:
    The static graph definition of the modules and the initial `TrainState`.
  """
  init_key, run_key = jax.random.split(jax.random.key(config.seed))
  build = functools.partial(_build_modules, config, tuple(image_shape))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(init_key)))
  # Initializing inside one jit compiles one program instead of one RNG kernel per shape.
  module_state = jax.jit(lambda k: nnx.split(build(k))[1])(init_key)
  state = TrainState(
    step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(run_key), modules=module_state
  )
  return graphdef, state


def step_keys(rng: jax.Array, step: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(data, loss, critic) keys of a step; the same on the host and inside the step."""
  key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
  data_key, loss_key, critic_key = jax.random.split(key, 3)
  return data_key, loss_key, critic_key


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def gradient_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
  """Medians of the logged output-gradient diagnostics (None without a GMG/DST regularizer).

  "negligible" is set when the regularizer's median share of the output gradient is below
  `objectives.NEGLIGIBLE_SHARE`: the run trained (almost) without it.
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
    "negligible": share < objectives.NEGLIGIBLE_SHARE,
  }


def train_step(
  graphdef: nnx.GraphDef,
  loss_and_grad: objectives.LossFn,
  draw_batch: Callable[[Any, jax.Array], jax.Array],
  state: TrainState,
  batch_source: Any,
  *,
  batch_layout: NamedSharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimization step (pure; jit it with the state donated).

  Args:
    graphdef: graph definition from `create_train_state`.
    loss_and_grad: `objectives.make_loss(config, regularizer_fn)`.
    draw_batch: `(batch_source, data_key) -> uint8 images [B, H, W, C]` (see `make_train_step`).
    state: current state.
    batch_source: a jittable dataset (the batch is drawn here, on the device) or a uint8
      image batch [B, H, W, C] drawn on the host with `step_keys(...)[0]`.
    batch_layout: `sharding.batch_sharding(mesh)` under data parallelism; None on one device
      without a mesh.

  Returns:
    The new state (the old one, with the step advanced, if anything was non-finite) and scalar
    metrics, including "finite".
  """
  # copy=True: the optimizer updates these modules in place, and `state.modules` must stay the
  # pre-update state that a non-finite step falls back to.
  modules = nnx.merge(graphdef, state.modules, copy=True)
  vae, optimizer = modules[:2]
  critic = modules[2] if len(modules) == 4 else None
  data_key, loss_key, critic_key = step_keys(state.rng, state.step)
  images = draw_batch(batch_source, data_key)
  if batch_layout is not None:
    # The global batch is drawn with the single-device key; the constraint makes each device
    # draw and render only its rows (the partitioner pushes it back into the sampler).
    images = jax.lax.with_sharding_constraint(images, batch_layout)
  (loss, aux), grads = loss_and_grad(vae, images, loss_key, state.step, critic)
  metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads))
  finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"]) & _all_finite(grads)
  if critic is not None:
    # The critic sees the codes the VAE loss used, from the VAE before its update.
    codes = objectives.sample_codes(vae, images, loss_key)
    (_, critic_aux), critic_grads = nnx.value_and_grad(
      objectives.factor_vae_discriminator_loss, has_aux=True
    )(critic, codes, critic_key)
    finite &= _all_finite(critic_grads)
    modules[3].update(critic, critic_grads)
    metrics.update(critic_aux)
  optimizer.update(vae, grads)

  updated = nnx.state(modules)
  # A finite gradient can still give non-finite parameters or moments (a NaN or huge learning
  # rate): the new state itself must be finite to be kept (and ever saved).
  finite &= _all_finite(updated)
  new_modules = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state.modules)
  metrics["finite"] = finite
  return state.replace(step=state.step + 1, modules=new_modules), metrics


def make_train_step(
  graphdef: nnx.GraphDef,
  config: ml_collections.ConfigDict,
  mesh: Mesh | None = None,
  *,
  host_batches: bool = False,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
  """The jitted `train_step(state, batch_source)` with the state donated.

  Args:
    graphdef: graph definition from `create_train_state`.
    config: the run's config.
    mesh: `sharding.make_mesh()` for the data-parallel step (the state must be replicated on
      it, a host batch sharded with `sharding.batch_sharding`); None compiles for the devices
      the arguments live on.
    host_batches: the step takes image batches drawn on the host (`host_batch`) instead of a
      jittable dataset it draws from.
  """
  regularizer_fn = regularizers.make_regularizer(config.regularizer)
  if mesh is not None:
    regularizer_fn = sharding.scoped_regularizer(regularizer_fn, config.regularizer.scope, mesh)
  batch_size = config.train.batch_size
  if host_batches:
    draw_batch = lambda images, key: images  # noqa: E731
  else:
    draw_batch = lambda dataset, key: dataset.sample_batch(key, batch_size)[0]  # noqa: E731
  step = functools.partial(
    train_step, graphdef, objectives.make_loss(config, regularizer_fn), draw_batch
  )
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  # Pinning the outputs keeps the state replicated step after step.
  replicated = sharding.replicated(mesh)
  return jax.jit(
    functools.partial(step, batch_layout=sharding.batch_sharding(mesh)),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def host_batch(
  dataset: data_lib.GroundTruthDataset, rng: jax.Array, step: int, batch_size: int
) -> np.ndarray:
  """The batch of `step` drawn on the host (for datasets that are not jittable)."""
  images, _ = dataset.sample_batch(step_keys(rng, step)[0], batch_size)
  return np.asarray(images)


def _restore(manager, state: TrainState) -> TrainState:
  step = manager.latest_step()
  mismatches = checkpointing.shape_mismatches(manager, step, state)
  if mismatches:
    shown = "; ".join(mismatches[:5]) + (
      f"; ... ({len(mismatches)} in all)" * (len(mismatches) > 5)
    )
    raise ConfigError(
      f"The checkpoint at step {step} in {manager.directory} does not fit this config ({shown}). "
      "Nothing was changed; resume with the run's own config.json, or use a new --workdir."
    )
  restored, _ = checkpointing.restore(manager, state, step)
  return restored


def _resume(manager, state: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """Workdir's latest checkpoint, then `train.init_from`, then the fresh state."""
  if manager.latest_step() is not None:
    return _restore(manager, state)
  if config.train.init_from:
    other = checkpointing.make_manager(config.train.init_from, config.train)
    if other.latest_step() is None:
      raise ConfigError(
        f"train.init_from={config.train.init_from!r} holds no checkpoint "
        f"under {os.path.join(config.train.init_from, 'checkpoints')}."
      )
    return _restore(other, state)
  return state


class _Preemption:
  """SIGTERM means: save and stop, on every process at the same step.

  One process: a Python SIGTERM handler sets a flag. Several processes: a signal may reach only
  some of them, and saving is collective, so they must agree on the step. jax's preemption
  service (started by `jax.distributed.initialize`) catches SIGTERM on any process, tells the
  others, and `reached_preemption_sync_point(step)` turns true on all of them at the same step;
  a Python handler would replace its C++ one, so none is installed then.
  """

  def __init__(self):
    self._signalled = False
    self._previous = None
    self._multiprocess = jax.process_count() > 1

  def __enter__(self):
    if self._multiprocess:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: no signal handling.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step`; call it once per step on every process."""
    if self._multiprocess:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def with_dataset_facts(
  config: ml_collections.ConfigDict, dataset: data_lib.GroundTruthDataset
) -> ml_collections.ConfigDict:
  """`config` with the fields the dataset owns filled in (a copy; `config` is not changed).

  `objective.dataset_size = 0` becomes the dataset's number of images, so config.json records
  the value the run used.
  """
  if config.objective.dataset_size:
    return config
  config = copy.deepcopy(config)
  config.objective.dataset_size = int(dataset.num_images)
  return config


def _drop_unviable_checkpoint(manager, step: int) -> None:
  """Deletes the checkpoint at `step` if it is the latest: its own loss came out non-finite.

  The data stream is a function of (seed, step), so a run resumed from that state would meet the
  same non-finite loss at the next step, whatever its learning rate.
  """
  manager.wait_until_finished()
  if manager.latest_step() == step:
    manager.delete(step)


def _compile_step(step_fn, state: TrainState, batch: Any):
  """Compiles the step for the run's state and batch: shape errors surface before any write."""
  try:
    return step_fn.lower(state, batch).compile()
  except Exception as e:  # noqa: BLE001 (reported with its cause, before the workdir is touched)
    raise ConfigError(
      f"The train step does not build for this config ({type(e).__name__}: {e}). Nothing was "
      "written; check the model, data and regularizer fields (gmg_jax/config.py)."
    ) from e


def _batch_source(
  config: ml_collections.ConfigDict, dataset: data_lib.GroundTruthDataset, rng: Any, mesh: Mesh
) -> Callable[[int], Any]:
  """step -> what the step takes: the jittable dataset itself, or the host batch of that step."""
  if dataset.jittable:
    return lambda step: dataset
  layout = sharding.batch_sharding(mesh)
  rng = np.asarray(sharding.host_local(rng))
  return lambda step: sharding.host_to_global(
    host_batch(dataset, rng, step, config.train.batch_size), layout
  )


def _train_loop(
  config: ml_collections.ConfigDict,
  workdir: str,
  graphdef: nnx.GraphDef,
  state: TrainState,
  dataset: data_lib.GroundTruthDataset,
  step_fn: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]],
  manager,
  writer: MetricWriter,
  mesh: Mesh,
) -> tuple[TrainState, bool]:
  """Runs the steps from `state.step` to `train.num_steps`; owns logging, saving, evaluation.

  `state` (and a jittable `dataset`) are replicated on `mesh`; host code reads the first local
  device's copy (`sharding.host_local`), which every process holds. Returns the last state and
  whether the run was preempted.
  """
  local_dataset = sharding.host_local(dataset) if dataset.jittable else dataset
  batch_source = _batch_source(config, dataset, state.rng, mesh)
  start, num_steps = int(sharding.host_local(state.step)), config.train.num_steps
  last_log = (start, time.time())

  def check_and_log(done, metrics):
    nonlocal last_log
    metrics = jax.device_get(sharding.host_local(metrics))
    if not metrics["finite"]:
      if not np.isfinite(metrics["loss"]):
        _drop_unviable_checkpoint(manager, done - 1)
      raise Diverged(done, metrics)
    bar.set_postfix(loss=f"{float(metrics['loss']):.2f}", refresh=False)
    if done % config.train.log_every == 0 or done == num_steps:
      rate = (done - last_log[0]) / max(time.time() - last_log[1], 1e-9)
      writer.write(
        done, {**{k: v for k, v in metrics.items() if k != "finite"}, "steps_per_second": rate}
      )
      last_log = (done, time.time())

  bar = tqdm.tqdm(
    total=num_steps,
    initial=start,
    desc="train",
    dynamic_ncols=True,
    disable=not config.train.progress_bar or jax.process_index() != 0,
  )
  pending = None  # (step, metrics) of the last dispatched step: read after the next dispatch.
  preempted = False
  with _Preemption() as preemption, bar:
    for step in range(start, num_steps):
      state, metrics = step_fn(state, batch_source(step))
      done = step + 1
      if pending is not None:
        check_and_log(*pending)
      pending = (done, metrics)
      preempted = preemption.reached(done)
      last = done == num_steps or preempted
      eval_due = bool(config.eval.every_steps) and (
        done % config.eval.every_steps == 0 or done == num_steps
      )
      if done % config.train.checkpoint_every == 0 or eval_due or last:
        check_and_log(*pending)  # Never save or evaluate a state whose step was not checked.
        pending = None
        # The data stream is a function of (seed, step): the step is the data position.
        checkpointing.save(
          manager,
          done,
          state,
          {"step": done, "data_position": done, "config": config.to_dict()},
        )
      bar.update(1)
      if eval_due:
        # Every process encodes its share of the points and gets all codes; process 0 writes.
        evaluation.evaluate_and_write(config, workdir, graphdef, state, local_dataset, mesh=mesh)
      if preempted:
        break
    if pending is not None:
      check_and_log(*pending)
  return state, preempted


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming if the workdir holds a checkpoint), evaluates, and writes everything.

  Args:
    config: the run's config (see gmg_jax/config.py).
    workdir: directory for checkpoints, logs, metrics and pictures.

  Returns:
    The final state.

  Raises:
    ConfigError: a bad config, or a workdir holding another run (before anything is written).
    DataFileError: missing or unreadable data files (before anything is written).
    Diverged: a non-finite step; checkpoints keep the last finite state.
    Preempted: SIGTERM; the state was saved and the same call resumes.
  """
  workdir = os.path.abspath(workdir)
  # Everything that can be checked is checked before the workdir is touched: the config's
  # names and ranges, the data files, the step's shapes, and the saved run's config.
  checks.check_config(config)
  mesh = sharding.make_mesh()
  dataset = data_lib.get_dataset(config.data)
  if config.eval.every_steps:
    try:
      metrics_lib.suite.check_dataset(config.eval.metrics, dataset)
    except ValueError as e:
      raise ConfigError(f"eval.metrics: {e}") from e
  if dataset.jittable:
    dataset = sharding.replicate(dataset, mesh)
  config = with_dataset_facts(config, dataset)
  graphdef, state = create_train_state(config, dataset.image_shape)
  # Restoring into a replicated state makes Orbax read it replicated on every process.
  state = sharding.replicate(state, mesh)
  start = int(sharding.host_local(state.step))
  step_fn = _compile_step(
    make_train_step(graphdef, config, mesh, host_batches=not dataset.jittable),
    state,
    _batch_source(config, dataset, state.rng, mesh)(start),
  )
  checkpointing.check_config(workdir, config)
  with contextlib.closing(checkpointing.make_manager(workdir, config.train)) as manager:
    state = _resume(manager, state, config)
    # Only now, with the state restored (or fresh), does the run claim the workdir.
    checkpointing.write_config(workdir, config)
    writer = MetricWriter(workdir, config=config)
    writer.truncate_after(int(sharding.host_local(state.step)))
    try:
      state, preempted = _train_loop(
        config, workdir, graphdef, state, dataset, step_fn, manager, writer, mesh
      )
    finally:
      # Also on errors: a save in flight (the last good state) completes.
      manager.wait_until_finished()
      writer.close()
  if preempted:
    raise Preempted(int(sharding.host_local(state.step)), workdir)
  if jax.process_index() == 0:
    summary = gradient_summary(read_jsonl(os.path.join(workdir, "metrics.jsonl")))
    if summary is not None:
      write_json_atomic(os.path.join(workdir, "train_summary.json"), summary)
      share, ratio = (
        summary["median_regularizer_share"],
        summary["median_regularizer_to_distortion"],
      )
      print(
        f"Regularizer gradient: median {share:.3g} of the loss's gradient w.r.t. the regularized "
        f"outputs, {ratio:.3g} x the distortion's"
        + (f" (NEGLIGIBLE: below {objectives.NEGLIGIBLE_SHARE})." if summary["negligible"] else ".")
      )
    print(
      f"Done at step {int(sharding.host_local(state.step))}. Workdir {workdir}:\n"
      f"  metrics:     {os.path.join(workdir, 'metrics.jsonl')} "
      f"(evaluation: {os.path.join(workdir, 'metrics.json')})\n"
      f"  checkpoints: {os.path.join(workdir, 'checkpoints')}\n"
      f"  pictures:    {os.path.join(workdir, 'pictures')}\n"
      f"  tensorboard: {os.path.join(workdir, 'tensorboard')}"
    )
  return state
