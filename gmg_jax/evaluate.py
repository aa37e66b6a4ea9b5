"""Evaluation: encode a dataset, compute the disentanglement metrics, write metrics and pictures.

Library: `evaluate_and_write(config, workdir, graphdef, state, dataset)` (the trainer calls it
periodically). CLI, for a saved run:

  python -m gmg_jax.evaluate --workdir=/tmp/gmg [--metrics=dci,mig] [--mode=exact]

Writes, in the workdir: `metrics.json` (the latest evaluation, written atomically),
`eval.jsonl` (one record per evaluation) and `pictures/` (reconstructions, latent traversals,
metric curves).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from gmg_jax import metrics as metrics_lib
from gmg_jax import sharding, viz
from gmg_jax.logging import MetricWriter, read_jsonl, write_json_atomic

_NUM_PICTURE_IMAGES = 8


def _write_pictures(
  vae: nnx.Module, dataset: Any, key: jax.Array, pictures_dir: str, step: int
) -> None:
  images, _ = dataset.sample_batch(key, _NUM_PICTURE_IMAGES)
  mu, _ = jax.jit(lambda x: vae.encode(x))(images)
  os.makedirs(pictures_dir, exist_ok=True)
  viz.save_png(
    os.path.join(pictures_dir, f"traversal_{step:08d}.png"),
    viz.latent_traversal_grid(jax.jit(lambda z: jax.nn.sigmoid(vae.decode(z))), np.asarray(mu[:2])),
  )
  reconstructions = jax.nn.sigmoid(jax.jit(lambda z: vae.decode(z))(mu))
  viz.save_png(
    os.path.join(pictures_dir, f"reconstructions_{step:08d}.png"),
    viz.reconstruction_grid(images, reconstructions),
  )


def evaluate_and_write(
  config: ml_collections.ConfigDict,
  workdir: str,
  graphdef: nnx.GraphDef,
  state: Any,
  dataset: Any,
  *,
  mesh: Mesh | None = None,
  progress: bool = False,
) -> dict[str, Any]:
  """Scores the encoder mean of `state` and writes metrics and pictures (process 0 writes).

  Encoding is data parallel over `mesh` and the codes are gathered on every process
  (`sharding.sharded_map`), so every process must call this together; each then computes the
  same metrics from the same codes.

  Args:
    config: the run's config (`config.eval` holds the metric names and sizes).
    workdir: the run's directory.
    graphdef: graph definition of the train state's modules.
    state: a `train.TrainState`, replicated on `mesh` or on one device.
    dataset: the run's dataset, host-local (`sharding.host_local` of a replicated one).
    mesh: devices to encode on (default: `sharding.make_mesh()`, all devices).
    progress: show progress bars.

  Returns:
    The record written: {"step": s, "<metric>": {...}, ...}.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  modules = sharding.replicate(state.modules, mesh)
  encode_rows = sharding.sharded_map(lambda m, x: nnx.merge(graphdef, m)[0].encode(x)[0], mesh)
  state = sharding.host_local(state)
  vae = nnx.merge(graphdef, state.modules)[0]
  step = int(state.step)
  key = jax.random.fold_in(jax.random.key(config.seed), step)
  scores = metrics_lib.compute_metrics(
    tuple(config.eval.metrics),
    dataset,
    lambda images: encode_rows(modules, images),
    key,
    mode=config.eval.mode,
    num_train=config.eval.num_train,
    num_test=config.eval.num_test,
    random_state=config.seed,
    progress=progress,
  )
  record = {"step": step, **scores}
  if jax.process_index() != 0:
    return record
  write_json_atomic(os.path.join(workdir, "metrics.json"), record)
  writer = MetricWriter(workdir, "eval")
  writer.write(step, {f"{m}/{k}": v for m, values in scores.items() for k, v in values.items()})
  writer.close()
  pictures = os.path.join(workdir, "pictures")
  if config.eval.pictures and vae.decoder is not None:
    _write_pictures(vae, dataset, key, pictures, step)
  history = read_jsonl(os.path.join(workdir, "eval.jsonl"))
  if len(history) > 1:
    viz.plot_metric_curves(history, os.path.join(pictures, "metric_curves.png"))
  return record


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, nnx.GraphDef, Any, Any]:
  """Config, graph definition, latest restored state and dataset of a saved run."""
  from gmg_jax import checkpointing, train
  from gmg_jax import data as data_lib

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
  if manager.latest_step() is None:
    raise FileNotFoundError(
      f"{workdir} has a config but no checkpoint under {os.path.join(workdir, 'checkpoints')}."
    )
  state, _ = checkpointing.restore(manager, state)
  return config, graphdef, state, dataset


def main(argv: list[str]) -> None:
  del argv
  config, graphdef, state, dataset = load_run(FLAGS.workdir)
  with config.unlocked():
    if FLAGS.metrics:
      config.eval.metrics = tuple(FLAGS.metrics.split(","))
    for name in ("mode", "num_train", "num_test"):
      value = getattr(FLAGS, name)
      if value is not None:
        config.eval[name] = value
  record = evaluate_and_write(config, FLAGS.workdir, graphdef, state, dataset, progress=True)
  print(json.dumps(record, indent=2))
  print(f"Wrote {os.path.join(FLAGS.workdir, 'metrics.json')}")


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "Workdir of a run (holds config.json and checkpoints).")
  flags.DEFINE_string("metrics", "", "Comma-separated metric names (default: the run's).")
  flags.DEFINE_enum("mode", None, ["exact", "fast"], "Estimators (default: the run's).")
  flags.DEFINE_integer("num_train", None, "Training points (default: the run's).")
  flags.DEFINE_integer("num_test", None, "Test points (default: the run's).")
  flags.mark_flag_as_required("workdir")
  FLAGS = flags.FLAGS
  app.run(main)
