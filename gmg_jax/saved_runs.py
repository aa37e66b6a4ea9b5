"""A saved run opened from its workdir: config, model, dataset, checkpoints and restored state.

`load_run(workdir)` is what scripts use (`experiments/`); `open_run` and `restore_state` let
`python -m gmg_jax.evaluate` restore several steps of one run. A replica of a K-run program
(`<program workdir>/<replica name>`, gmg_jax/replicas.py) opens the same way: its state is taken
out of the program's stacked checkpoints.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import ml_collections
from flax import nnx

from gmg_jax import checkpointing, replicas, train
from gmg_jax import data as data_lib
from gmg_jax.config import ConfigError


def _read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"No run in {workdir}: {path} does not exist. Pass the --workdir "
      "of a run started with python -m gmg_jax.main."
    )
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _replica_index(workdir: str) -> int | None:
  """The run's index in its K-run program (the parent directory's replicas.json), or None."""
  path = os.path.join(os.path.dirname(os.path.abspath(workdir)), "replicas.json")
  if not os.path.exists(path):
    return None
  name = os.path.basename(os.path.abspath(workdir))
  with open(path, encoding="utf-8") as f:
    return next((r["index"] for r in json.load(f)["replicas"] if r["name"] == name), None)


class SavedRun(NamedTuple):
  """A saved run opened for scoring; `select` takes its state out of a restored checkpoint."""

  config: ml_collections.ConfigDict
  graphdef: nnx.GraphDef
  state: Any
  dataset: Any
  manager: Any
  select: Callable[[Any], Any]


def open_run(workdir: str) -> SavedRun:
  """Config, graph definition, initial state, dataset and checkpoint manager of a saved run (of
  its K-run program for a replica)."""
  config = _read_config(workdir)
  dataset = data_lib.get_dataset(config.data)
  index = _replica_index(workdir)
  if index is None:
    # A single run, or a K-run program (its stacked state, scored replica by replica in main).
    source, select = workdir, lambda state: state
    graphdef, state = train.create_train_state(
      config, dataset.image_shape, replicas.program(config)
    )
  else:
    source = os.path.dirname(os.path.abspath(workdir))
    program = _read_config(source)
    select = functools.partial(replicas.take, index=index)
    graphdef, state = train.create_train_state(
      program, dataset.image_shape, replicas.program(program)
    )
  manager = checkpointing.make_manager(source, config.train)
  if not manager.all_steps():
    raise FileNotFoundError(
      f"{workdir} has a config but no checkpoint under {os.path.join(source, 'checkpoints')}."
    )
  return SavedRun(config, graphdef, state, dataset, manager, select)


def restore_state(workdir: str, run: SavedRun, step: int | None) -> Any:
  """The state of `run` at checkpoint `step` (None: the latest)."""
  steps = run.manager.all_steps()
  if step is not None and step not in steps:
    raise ConfigError(f"{workdir} has no checkpoint at step {step}; it has {sorted(steps)}.")
  return run.select(checkpointing.restore(run.manager, run.state, step)[0])


def load_run(
  workdir: str, step: int | None = None
) -> tuple[ml_collections.ConfigDict, nnx.GraphDef, Any, Any]:
  """Config, graph definition, restored state (at `step`, default the latest) and dataset."""
  run = open_run(workdir)
  return run.config, run.graphdef, restore_state(workdir, run, step), run.dataset
