"""Training: the loop that owns all I/O around the pure step of `gmg_jax.train_step`.

The loop checks everything it can before it touches the workdir, restores or starts the state,
runs the steps, logs, saves, evaluates, and turns a non-finite step or SIGTERM into an exception
that names what to do. One program trains one run, or K replicas of it (seeds x hyperparameter
values, `gmg_jax.replicas`) as one vmapped step, each replica writing what a single run writes
under `<workdir>/<replica name>/`.

The loop runs data parallel over every device of every process (`gmg_jax.sharding`): the state
is replicated, the global batch of `train.batch_size` is split along the data axis, and
`regularizer.scope` picks one GW problem on the global batch or one per device sub-batch.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gmg_jax import checkpointing, checks, evaluation, losses, sharding
from gmg_jax import config as config_lib
from gmg_jax import data as data_lib
from gmg_jax import metrics as metrics_lib
from gmg_jax import replicas as replicas_lib
from gmg_jax.config import ConfigError
from gmg_jax.errors import Diverged, Preempted, ReplicasDiverged
from gmg_jax.losses.diagnostics import NEGLIGIBLE_SHARE, gradient_summary
from gmg_jax.train_step import (  # noqa: F401 (the step's API, re-exported for callers of train)
  TrainState,
  create_train_state,
  host_batch,
  make_train_step,
  step_keys,
  step_of,
  train_step,
)
from gmg_jax.writers import MetricWriter, read_jsonl, write_json_atomic


def _restore(manager, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
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
  return checkpointing.restore(manager, state, step)


def _resume(
  manager, state: TrainState, config: ml_collections.ConfigDict
) -> tuple[TrainState, dict[str, Any]]:
  """Workdir's latest checkpoint (state, meta), then `train.init_from`, then the fresh state."""
  if manager.latest_step() is not None:
    return _restore(manager, state)
  if config.train.init_from:
    other = checkpointing.make_manager(config.train.init_from, config.train)
    if other.latest_step() is None:
      raise ConfigError(
        f"train.init_from={config.train.init_from!r} holds no checkpoint "
        f"under {os.path.join(config.train.init_from, 'checkpoints')}."
      )
    state, _ = _restore(other, state)
  return state, {}


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


def _compile_step(step_fn, *args: Any):
  """Compiles the step for the run's arguments: shape errors surface before any write."""
  try:
    return step_fn.lower(*args).compile()
  except Exception as e:  # noqa: BLE001 (reported with its cause, before the workdir is touched)
    raise ConfigError(
      f"The train step does not build for this config ({type(e).__name__}: {e}). Nothing was "
      "written; check the model, data and regularizer fields (gmg_jax/config.py)."
    ) from e


def _batch_source(
  config: ml_collections.ConfigDict, dataset: data_lib.GroundTruthDataset, rng: Any, mesh: Mesh
) -> Callable[[int], Any]:
  """step -> what the step takes: the jittable dataset itself, or the host batch of that step
  (of every replica, [K, B, ...], when `rng` is stacked)."""
  if dataset.jittable:
    return lambda step: dataset
  rng = np.asarray(sharding.host_local(rng))
  batch_size = config.train.batch_size
  if rng.ndim == 1:
    layout = sharding.batch_sharding(mesh)
    return lambda step: sharding.host_to_global(host_batch(dataset, rng, step, batch_size), layout)
  layout = sharding.batch_sharding(mesh, axis=1)
  return lambda step: sharding.host_to_global(
    np.stack([host_batch(dataset, r, step, batch_size) for r in rng]), layout, axis=1
  )


class _Run:
  """Where one run of the program writes: the run itself, or one replica of a K-run."""

  def __init__(self, program: replicas_lib.Program, workdir: str, replica: replicas_lib.Replica):
    self.program = program
    self.config = replica.config
    self.workdir = program.workdir(workdir, replica)
    self.replica = replica
    self.failed_at: int | None = None  # The step at which a replica went non-finite.
    self.failure: str | None = None  # What was non-finite.
    self.writer: MetricWriter | None = None

  def view(self, tree: Any) -> Any:
    """This run's part of the program's (stacked) state or metrics."""
    return self.program.view(tree, self.replica.index)

  def open(self, step: int) -> None:
    """Claims the run's directory (a replica's config.json) and opens its metric writer."""
    if self.program.stacked and jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      write_json_atomic(os.path.join(self.workdir, "config.json"), self.config.to_dict())
    self.writer = MetricWriter(self.workdir, config=self.config)
    self.writer.truncate_after(step)


def _make_runs(program: replicas_lib.Program, workdir, failed: dict[str, int]) -> list[_Run]:
  runs = [_Run(program, workdir, replica) for replica in program.replicas]
  for run in runs:
    if run.replica.name in failed:
      run.failed_at = failed[run.replica.name]
      run.failure = f"non-finite at step {run.failed_at} (before this resumption)"
  return runs


def evaluates(config: ml_collections.ConfigDict) -> bool:
  """Whether the run evaluates at all (`eval.every_steps` or `eval.at_steps` set)."""
  return bool(config.eval.every_steps) or bool(config.eval.at_steps)


def _eval_due(config: ml_collections.ConfigDict, step: int) -> bool:
  """Every `eval.every_steps` steps, at each of `eval.at_steps`, and at the end."""
  every = config.eval.every_steps
  if not evaluates(config):
    return False
  return (
    (bool(every) and step % every == 0)
    or step in config.eval.at_steps
    or (step == config.train.num_steps)
  )


def _owes_evaluation(run: _Run, step: int) -> bool:
  """Whether `run` lacks an evaluation of one of its metrics at `step` (eval.jsonl)."""
  if run.failure is not None:
    return False
  records = [
    r for r in read_jsonl(os.path.join(run.workdir, "eval.jsonl")) if r.get("step") == step
  ]
  return any(
    not any(key.startswith(f"{metric}/") for r in records for key in r)
    for metric in run.config.eval.metrics
  )


def _train_loop(
  config: ml_collections.ConfigDict,
  runs: list[_Run],
  graphdef: nnx.GraphDef,
  state: TrainState,
  dataset: data_lib.GroundTruthDataset,
  step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
  manager,
  mesh: Mesh,
) -> tuple[TrainState, bool]:
  """Runs the steps from `state.step` to `train.num_steps`; owns logging, saving, evaluation.

  `state` (and a jittable `dataset`) are replicated on `mesh`; host code reads the first local
  device's copy (`sharding.host_local`), which every process holds. A single run raises
  `Diverged` at its first non-finite step; a K-run stops that replica and goes on until every
  replica has failed. Returns the last state and whether the run was preempted.
  """
  program = runs[0].program
  local_dataset = sharding.host_local(dataset) if dataset.jittable else dataset
  batch_source = _batch_source(config, dataset, state.rng, mesh)
  start, num_steps = step_of(state), config.train.num_steps
  last_log = (start, time.time())
  # Which runs still train (a scalar for a single run, [K] for a K-run).
  active = sharding.replicate(program.stack([jnp.asarray(r.failure is None) for r in runs]), mesh)

  def check_and_log(done, metrics):
    nonlocal last_log
    metrics = jax.device_get(sharding.host_local(metrics))
    live = []
    for run in runs:
      if run.failure is not None:
        continue
      own = run.view(metrics)
      if own["finite"]:
        live.append(run)
        continue
      run.failed_at = done
      run.failure = (
        f"non-finite at step {done} (loss={float(own['loss']):.4g}, "
        f"grad_norm={float(own['grad_norm']):.4g})"
      )
      if program.stacked:
        print(f"Replica {run.replica.name} stopped: non-finite at step {done}; the others go on.")
    if not live and not program.stacked:
      if not np.isfinite(metrics["loss"]):
        _drop_unviable_checkpoint(manager, done - 1)
      manager.wait_until_finished()
      raise Diverged(done, metrics, manager.latest_step())
    if not live:
      program_dir = os.path.dirname(runs[0].workdir)
      raise ReplicasDiverged({run.replica.name: run.failure for run in runs}, program_dir)
    bar.set_postfix(loss=f"{float(np.median(live[0].view(metrics)['loss'])):.2f}", refresh=False)
    if done % config.train.log_every == 0 or done == num_steps:
      rate = (done - last_log[0]) / max(time.time() - last_log[1], 1e-9)
      for run in live:
        scalars = {k: v for k, v in run.view(metrics).items() if k != "finite"}
        run.writer.write(done, {**scalars, "steps_per_second": rate})
      last_log = (done, time.time())

  def evaluate(due: list[_Run], state: TrainState) -> None:
    # Every process encodes its share of the points and gets all codes; process 0 writes. A
    # K-run's replicas are encoded together (one vmapped encoder), then scored one by one.
    evaluation.evaluate_runs(
      program,
      [(run.replica.index, run.config, run.workdir) for run in due],
      graphdef,
      state,
      local_dataset,
      mesh=mesh,
    )

  bar = tqdm.tqdm(
    total=num_steps,
    initial=start,
    desc="train",
    dynamic_ncols=True,
    disable=not config.train.progress_bar or jax.process_index() != 0,
  )
  # The checkpoint of an evaluation's step is saved before it: a run killed while evaluating
  # (SIGKILL after a preemption's grace period, say) resumes here and does what that step owes,
  # e.g. the replicas of a K-run that were not reached.
  if start > 0 and _eval_due(config, start):
    _say_evaluating(bar, start)
    evaluate([run for run in runs if _owes_evaluation(run, start)], state)
  pending = None  # (step, metrics) of the last dispatched step: read after the next dispatch.
  preempted = False
  with _Preemption() as preemption, bar:
    for step in range(start, num_steps):
      state, metrics = step_fn(state, batch_source(step), active)
      active = metrics["finite"]  # A replica stays stopped from its first non-finite step.
      done = step + 1
      if pending is not None:
        check_and_log(*pending)
      pending = (done, metrics)
      preempted = preemption.reached(done)
      last = done == num_steps or preempted
      eval_due = _eval_due(config, done)
      if done % config.train.checkpoint_every == 0 or eval_due or last:
        check_and_log(*pending)  # Never save or evaluate a state whose step was not checked.
        pending = None
        # The data stream is a function of (seed, step): the step is the data position.
        meta = {"step": done, "data_position": done, "config": config.to_dict()}
        if program.stacked:
          meta["failed"] = {r.replica.name: r.failed_at for r in runs if r.failed_at is not None}
        checkpointing.save(manager, done, state, meta)
      bar.update(1)
      if eval_due:
        _say_evaluating(bar, done)
        evaluate([run for run in runs if run.failure is None], state)
        bar.set_description("train")
      if preempted:
        break
    if pending is not None:
      check_and_log(*pending)
  return state, preempted


def _say_evaluating(bar: tqdm.tqdm, step: int) -> None:
  """Says that the run evaluates at `step` (seconds to minutes): on the bar, or as a line."""
  bar.set_description(f"evaluating at step {step}")
  if not bar.disable:
    bar.refresh()
  elif jax.process_index() == 0:
    print(f"Evaluating at step {step} ...", flush=True)


def _summarize(run: _Run) -> None:
  """Writes the run's train_summary.json and prints its regularizer-gradient line."""
  summary = gradient_summary(read_jsonl(os.path.join(run.workdir, "metrics.jsonl")))
  if summary is None:
    return
  write_json_atomic(os.path.join(run.workdir, "train_summary.json"), summary)
  share, ratio = summary["median_regularizer_share"], summary["median_regularizer_to_distortion"]
  who = f"{run.replica.name}: " if run.program.stacked else ""
  print(
    f"{who}Regularizer gradient: median {share:.3g} of the loss's gradient w.r.t. the "
    "regularized outputs"
    + ("" if ratio is None else f", {ratio:.3g} x the distortion's")
    + (f" (NEGLIGIBLE: below {NEGLIGIBLE_SHARE})." if summary["negligible"] else ".")
  )


def _write_replica_index(workdir: str, runs: list[_Run], step: int, num_steps: int) -> None:
  """replicas.json: every replica's name, seed, values, directory and status."""
  finished = "finished" if step >= num_steps else f"at step {step} of {num_steps}"
  write_json_atomic(
    os.path.join(workdir, "replicas.json"),
    {
      "step": step,
      "replicas": [
        {
          "name": run.replica.name,
          "index": run.replica.index,
          "seed": run.replica.seed,
          "values": run.replica.values,
          "workdir": run.workdir,
          "status": finished if run.failure is None else "stopped",
          "failed_at": run.failed_at,
          "failure": run.failure,
        }
        for run in runs
      ],
    },
  )


def _finished(config: ml_collections.ConfigDict, runs: list[_Run], step: int) -> bool:
  """Whether a run restored at `step` has nothing left to do: no step and no evaluation owed."""
  owed = _eval_due(config, step) and any(_owes_evaluation(run, step) for run in runs)
  return step >= config.train.num_steps and not owed


def _raise_failures(runs: list[_Run], workdir: str) -> None:
  """Raises `ReplicasDiverged` naming the replicas of a K-run that stopped non-finite."""
  failures = {run.replica.name: run.failure for run in runs if run.failure is not None}
  if failures:
    raise ReplicasDiverged(failures, workdir)


def _already_finished(runs: list[_Run], workdir: str, state: TrainState, step: int) -> TrainState:
  """Says that the run in `workdir` is finished (writing nothing) and returns its state."""
  if jax.process_index() == 0:
    print(
      f"Already finished at step {step} (train.num_steps={runs[0].config.train.num_steps}); "
      f"nothing to do. Results in {workdir}; raise --config.train.num_steps to train on."
    )
  _raise_failures(runs, workdir)
  return state


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, refuse_inert: bool = False
) -> TrainState:
  """Trains (resuming if the workdir holds a checkpoint), evaluates, and writes everything.

  A run already at `train.num_steps` with nothing left to evaluate says so and writes nothing.

  Args:
    config: the run's config (see gmg_jax/config.py); `num_seeds` / `vary` make it a K-run.
    workdir: directory for checkpoints, logs, metrics and pictures.
    refuse_inert: refuse (ConfigError) the settings the run would not read
      (`checks.inert_settings`) instead of printing a warning for each.

  Returns:
    The final state (stacked along a leading replica axis for a K-run).

  Raises:
    ConfigError: a bad config, or a workdir holding another run (before anything is written).
    DataFileError: missing or unreadable data files (before anything is written).
    Diverged: a non-finite step; checkpoints keep the last finite state. For a K-run,
      `ReplicasDiverged` after the other replicas finished, naming the stopped ones.
    Preempted: SIGTERM; the state was saved and the same call resumes.
  """
  workdir = os.path.abspath(workdir)
  # Everything that can be checked is checked before the workdir is touched: the config's
  # names and ranges, the data files, the step's shapes, and the saved run's config.
  lead = jax.process_index() == 0
  for setting in checks.check_config(config, refuse_inert=refuse_inert):
    if lead:
      print(f"Warning: {setting}", flush=True)
  mesh = sharding.make_mesh()
  dataset = data_lib.get_dataset(config.data)
  if evaluates(config):
    try:
      metrics_lib.suite.check_dataset(config.eval.metrics, dataset)
    except ValueError as e:
      raise ConfigError(f"eval.metrics: {e}") from e
  if dataset.jittable:
    dataset = sharding.replicate(dataset, mesh)
  config = with_dataset_facts(config, dataset)
  program = replicas_lib.program(config)
  if lead:  # Which setting a variant's weight was calibrated for, then a phase of seconds.
    status = [config_lib.calibration_note(config), "Building the model ..."]
    print(*filter(None, status), sep="\n", flush=True)
  built = losses.build(config)  # The run's objective and regularizer, resolved once.
  graphdef, state = create_train_state(config, dataset.image_shape, program, built)
  # Restoring into a replicated state makes Orbax read it replicated on every process.
  state = sharding.replicate(state, mesh)
  checkpointing.check_config(workdir, config)
  with contextlib.closing(checkpointing.make_manager(workdir, config.train)) as manager:
    state, meta = _resume(manager, state, config)
    runs = _make_runs(program, workdir, meta.get("failed", {}))
    resumed, step = step_of(state), None
    if _finished(config, runs, resumed):
      return _already_finished(runs, workdir, state, resumed)
    if lead:
      print("Compiling the train step ...", flush=True)
    active = program.stack([jnp.asarray(True)] * len(program.replicas))
    example = [state, _batch_source(config, dataset, state.rng, mesh)(resumed)]
    example.append(sharding.replicate(active, mesh))
    step_fn = _compile_step(
      make_train_step(
        graphdef,
        config,
        mesh,
        host_batches=not dataset.jittable,
        replicas=program,
        losses=built,
      ),
      *example,
    )
    # Only now, with the state restored (or fresh) and the step built, is the workdir claimed.
    checkpointing.write_config(workdir, config)
    try:
      for run in runs:
        run.open(resumed)
      state, preempted = _train_loop(config, runs, graphdef, state, dataset, step_fn, manager, mesh)
      step = step_of(state)
    finally:
      # Also on errors: a save in flight (the last good state) completes.
      manager.wait_until_finished()
      if step is None:
        # An error: the loop's last state went with it (each step consumes its input's
        # buffers), so the replica index reports the last saved step, where a rerun resumes.
        step = manager.latest_step() or resumed
      for run in runs:
        if run.writer is not None:
          run.writer.close()
      if program.stacked and jax.process_index() == 0:
        _write_replica_index(workdir, runs, step, config.train.num_steps)
  if preempted:
    raise Preempted(step, workdir)
  if jax.process_index() == 0:
    for run in runs:
      _summarize(run)
    where = os.path.join(workdir, "<replica>") if program.stacked else workdir
    print(
      f"Done at step {step}. Workdir {workdir}:\n"
      + (f"  replicas:    {os.path.join(workdir, 'replicas.json')}\n" if program.stacked else "")
      + f"  metrics:     {os.path.join(where, 'metrics.jsonl')} "
      f"(evaluation: {os.path.join(where, 'metrics.json')})\n"
      f"  checkpoints: {os.path.join(workdir, 'checkpoints')}\n"
      f"  pictures:    {os.path.join(where, 'pictures')}\n"
      f"  tensorboard: {os.path.join(where, 'tensorboard')}"
    )
  _raise_failures(runs, workdir)
  return state
