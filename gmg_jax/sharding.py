"""Data parallelism over every device of every host: mesh, shardings, host batches.

One program runs on all devices (SPMD under `jax.jit`, no pmap):

* `make_mesh()`: a ("data", "model") mesh over all devices; "model" has size 1 today and is there
  so that model parallelism can be added without changing the data-parallel code.
* The `TrainState` is replicated (`replicated(mesh)`), batches are sharded along their first axis
  (`batch_sharding(mesh)`), so XLA's partitioner turns the batch-mean gradients into an
  all-reduce.
* Jittable datasets draw the *global* batch inside the step, constrained to the batch sharding:
  the partitioner propagates the layout back into the (partitionable) sampler and renderer, so
  each device draws and renders only its own rows, and the stream is the same for any device
  count (a run may resume on a different number of devices and see the same data).
* Host datasets: every process draws the step's batch with the same key and feeds only its own
  rows to its devices (`host_to_global`, built on `jax.make_array_from_process_local_data`).
* `device_rows(mesh)`: a batch's rows split into [devices, B / devices, ...], one block per device
  and staying there (a regularizer's "local" scope, `gmg_jax.losses.maps`).

* Evaluation (`sharded_map`): every process holds the same host batch of images; each device
  encodes its rows and the codes are all-gathered, so every process gets all codes and runs the
  same (host) metric code; process 0 writes.

Multi-host: `initialize_distributed()` starts `jax.distributed` from the launcher's environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Set by launchers of multi-process jobs; any of them means "start jax.distributed". Cloud TPU,
# SLURM and Open MPI are auto-detected by jax; a hand-made launch (tests, the multi-GPU recipe,
# bare hosts) sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
_MULTIHOST_ENV = (
  "JAX_COORDINATOR_ADDRESS",
  "TPU_WORKER_HOSTNAMES",
  "SLURM_NTASKS",
  "OMPI_COMM_WORLD_SIZE",
  "MEGASCALE_COORDINATOR_ADDRESS",
)


def initialize_distributed() -> bool:
  """Starts `jax.distributed` when the environment describes a multi-process job.

  Call it before any other JAX operation. Explicit settings come from JAX_COORDINATOR_ADDRESS
  ("host:port" of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID; without the last two jax
  auto-detects them (Cloud TPU, SLURM, Open MPI).

  Returns:
    Whether `jax.distributed.initialize` was called.
  """
  if not any(os.environ.get(name) for name in _MULTIHOST_ENV):
    return False
  kwargs = {}
  for arg, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    if os.environ.get(name):
      kwargs[arg] = int(os.environ[name])
  jax.distributed.initialize(**kwargs)
  return True


def make_mesh(model_axis_size: int = 1) -> Mesh:
  """A (data, model) mesh over all devices of all processes.

  Args:
    model_axis_size: devices per model replica (1: pure data parallelism).

  Returns:
    A mesh with Auto axes, so that `jax.jit` with `NamedSharding`s and sharding constraints
    partitions the step without an ambient `jax.set_mesh`.
  """
  devices = jax.device_count()
  if devices % model_axis_size:
    raise ValueError(
      f"model_axis_size={model_axis_size} does not divide the device count {devices}."
    )
  return jax.make_mesh(
    (devices // model_axis_size, model_axis_size),
    (DATA_AXIS, MODEL_AXIS),
    axis_types=(AxisType.Auto, AxisType.Auto),
  )


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (the train state, metrics)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """The batch axis (`axis`; 1 for a K-run's [K, B, ...] batches) split over the data axis,
  replicated over the model axis."""
  return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies every array of `tree` (the same value on every process) to all devices of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def host_local(tree: Any) -> Any:
  """The first local device's copy of each replicated array of `tree`.

  Host-side code that is not SPMD (evaluation, reading the step) runs on these single-device
  arrays; they alias the replicated buffers, so this copies nothing.
  """
  return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def process_rows(sharding: NamedSharding, batch_size: int) -> slice:
  """The contiguous rows of a global batch that this process's devices hold.

  Raises:
    ValueError: the process's rows are not contiguous (a mesh whose data axis interleaves
      processes; `jax.make_mesh` never builds one).
  """
  starts, stops = set(), set()
  for index in sharding.addressable_devices_indices_map((batch_size,)).values():
    rows = index[0]
    starts.add(rows.start or 0)
    stops.add(batch_size if rows.stop is None else rows.stop)
  lo, hi = min(starts), max(stops)
  if (hi - lo) * jax.process_count() != batch_size:
    raise ValueError(
      f"Process {jax.process_index()} holds rows {sorted(starts)}..{hi} of a "
      f"batch of {batch_size}: not one contiguous block."
    )
  return slice(lo, hi)


def host_to_global(batch: np.ndarray, sharding: NamedSharding, axis: int = 0) -> jax.Array:
  """A global batch from the full batch every process drew on its host; each feeds its rows.

  Args:
    batch: the step's global batch (the same on every process), batch axis `axis`.
    sharding: `batch_sharding(mesh, axis)`.
    axis: the batch axis (1 for a K-run's [K, B, ...] batches).

  Returns:
    jax.Array of `batch`'s shape sharded along the batch axis.
  """
  rows = process_rows(
    NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[axis])), batch.shape[axis]
  )
  local = batch[(slice(None),) * axis + (rows,)]
  return jax.make_array_from_process_local_data(sharding, local, batch.shape)


def sharded_map(fn: Callable[[Any, jax.Array], jax.Array], mesh: Mesh) -> Callable:
  """`fn(params, batch)` jitted over the data axis, with every row's output on every process.

  For functions that act row by row (an encoder): the batch is split over the data axis of
  `mesh` (padded with copies of its last row up to a multiple of the axis size), each device
  computes its rows and the result is gathered (replicated), so the returned numpy array holds
  all rows on every process. All processes must call it together, with the same batch.

  Args:
    fn: (params, [B, ...] batch) -> [B, ...] output; `params` replicated on `mesh`.
    mesh: from `make_mesh()`.

  Returns:
    (params, host batch [n, ...]) -> numpy [n, ...].
  """
  layout = batch_sharding(mesh)
  apply = jax.jit(fn, out_shardings=replicated(mesh))
  num_shards = mesh.shape[DATA_AXIS]

  def call(params: Any, batch: Any) -> np.ndarray:
    batch = np.asarray(batch)
    n = batch.shape[0]
    padded = np.concatenate([batch, np.repeat(batch[-1:], -n % num_shards, axis=0)])
    global_batch = jax.make_array_from_callback(padded.shape, layout, lambda index: padded[index])
    return np.asarray(apply(params, global_batch))[:n]

  return call


def device_rows(mesh: Mesh) -> Callable[[jax.Array], jax.Array]:
  """`a [B, ...] -> [devices, B / devices, ...]`: row block i is device i's rows under
  `batch_sharding(mesh)`, constrained to stay there (no data moves)."""
  num_shards = mesh.shape[DATA_AXIS]
  shards_layout = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

  def split(a: jax.Array) -> jax.Array:
    a = a.reshape(num_shards, a.shape[0] // num_shards, *a.shape[1:])
    return jax.lax.with_sharding_constraint(a, shards_layout)

  return split
