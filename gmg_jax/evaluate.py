r"""Scores a saved run: restores a checkpoint, computes metrics, writes metrics and pictures.

  python -m gmg_jax.evaluate --workdir=/tmp/gmg [--metrics=dci,mig] [--mode=exact]
  python -m gmg_jax.evaluate --workdir=/tmp/gmg --step=all     # every kept checkpoint, curves

Values merge into the run's metrics.json (the trainer's other metrics stay; "sources" says which
step, mode and sample sizes each value came from); every evaluation is appended to eval.jsonl
and `pictures/metric_curves.png` plots them. The library behind it is `gmg_jax.evaluation`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import flags
from flax import nnx

from gmg_jax import checkpointing, cli, evaluation, train
from gmg_jax import data as data_lib
from gmg_jax.config import ConfigError


def _open_run(workdir: str) -> tuple[ml_collections.ConfigDict, nnx.GraphDef, Any, Any, Any]:
  """Config, graph definition, initial state, dataset and checkpoint manager of a saved run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"No run in {workdir}: {path} does not exist. Pass the --workdir "
      "of a run started with python -m gmg_jax.main."
    )
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  dataset = data_lib.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  manager = checkpointing.make_manager(workdir, config.train)
  if not manager.all_steps():
    raise FileNotFoundError(
      f"{workdir} has a config but no checkpoint under {os.path.join(workdir, 'checkpoints')}."
    )
  return config, graphdef, state, dataset, manager


def _restore(workdir: str, manager: Any, state: Any, step: int | None) -> Any:
  steps = manager.all_steps()
  if step is not None and step not in steps:
    raise ConfigError(f"{workdir} has no checkpoint at step {step}; it has {sorted(steps)}.")
  return checkpointing.restore(manager, state, step)[0]


def load_run(
  workdir: str, step: int | None = None
) -> tuple[ml_collections.ConfigDict, nnx.GraphDef, Any, Any]:
  """Config, graph definition, restored state (at `step`, default the latest) and dataset."""
  config, graphdef, state, dataset, manager = _open_run(workdir)
  return config, graphdef, _restore(workdir, manager, state, step), dataset


def checkpoint_steps(manager: Any, which: str) -> list[int | None]:
  """The steps `--step` names: [None] (latest), [N], or every kept checkpoint in order."""
  if which == "latest":
    return [None]
  if which == "all":
    return sorted(manager.all_steps())
  if not which.isdigit():
    raise ConfigError(f"--step={which!r}: pass a step number, 'latest' or 'all'.")
  return [int(which)]


def main(argv: list[str]) -> None:
  del argv
  args = flags.FLAGS
  workdir = args.workdir
  # The run is opened once; each named checkpoint is restored into the same state structure.
  config, graphdef, initial, dataset, manager = _open_run(workdir)
  with config.unlocked():
    if args.metrics:
      config.eval.metrics = tuple(args.metrics.split(","))
    for name in ("mode", "num_train", "num_test"):
      if args[name].value is not None:
        config.eval[name] = args[name].value
  for step in checkpoint_steps(manager, args.step):
    state = _restore(workdir, manager, initial, step)
    record = evaluation.evaluate_and_write(
      config, workdir, graphdef, state, dataset, progress=True, by="evaluate"
    )
    print(json.dumps(record, indent=2))
  print(f"Wrote {os.path.join(workdir, 'metrics.json')} and {os.path.join(workdir, 'eval.jsonl')}")


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Workdir of a run (holds config.json and checkpoints).")
  flags.DEFINE_string("metrics", "", "Comma-separated metric names (default: the run's).")
  flags.DEFINE_enum("mode", None, ["exact", "fast"], "Estimators (default: the run's).")
  flags.DEFINE_integer("num_train", None, "Training points (default: the run's).")
  flags.DEFINE_integer("num_test", None, "Test points (default: the run's).")
  flags.DEFINE_string(
    "step", "latest", "Checkpoint to score: a step number, 'latest' or 'all' (every kept one)."
  )
  flags.mark_flag_as_required("workdir")


if __name__ == "__main__":
  # Flags are defined only when run as a program: `load_run` is importable without them.
  _define_flags()
  cli.run(main, __doc__, __name__)
