"""Evaluation library: encode a dataset, compute the disentanglement metrics, write metrics and
pictures. The trainer calls `evaluate_runs` (each run: `evaluate_and_write`) periodically;
`python -m gmg_jax.evaluate` (the CLI) calls it on a saved run.

Writes, in the workdir: `metrics.json` (the latest value of each metric, with where it came from
under "sources"; written atomically), `eval.jsonl` (one record per evaluation) and `pictures/`
(reconstructions, latent traversals as labelled PNG grids and GIFs, the regularizer's picture
(GMG: its GW plan), metric curves). TensorBoard (and W&B, see `gmg_jax.writers`) get the same
pictures and the run's hyperparameters.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from flax import nnx
from jax.sharding import Mesh

from gmg_jax import metrics as metrics_lib
from gmg_jax import replicas, sharding, train_step, viz
from gmg_jax.losses import registry
from gmg_jax.losses.objectives import sample_codes
from gmg_jax.losses.terms import gaussian_kl
from gmg_jax.models import to_float
from gmg_jax.writers import MetricWriter, read_jsonl, rewrite_tensorboard, write_json_atomic

_NUM_PICTURE_IMAGES = 8
# Images whose encoder means and log-variances give each dim's traversal range and KL.
_NUM_POSTERIOR_IMAGES = 512
_NUM_TRAVERSAL_VALUES = 9
_NUM_GIF_CODES = 4
# Images one call of a K-run's encoder takes, all replicas together (256 a replica up to 16).
_REPLICA_ENCODE_IMAGES = 4096


def _per_dim_kl(mu: jax.Array, logvar: jax.Array) -> np.ndarray:
  """[D] batch mean of KL(q(z_d|x) || N(0, 1)) per dim (the objective's KL, one dim at a time)."""
  return np.asarray(jax.vmap(gaussian_kl, in_axes=1)(mu[..., None], logvar[..., None]))


@functools.lru_cache(maxsize=16)
def _model_fns(graphdef: nnx.GraphDef) -> dict[str, Any]:
  """The jitted model functions of the evaluation, taking the modules' state as an argument.

  Cached per graph definition, so that the replicas of a K-run program (one graphdef, K states)
  and every evaluation of a run compile them once, not once per call (closures over a module
  recompile every time).
  """
  vae = lambda modules: nnx.merge(graphdef, modules)[0]  # noqa: E731
  return {
    "encode": jax.jit(lambda modules, x: vae(modules).encode(x)),
    "decode": jax.jit(lambda modules, z: vae(modules).decode(z)),
    "decode_mean": jax.jit(lambda modules, z: jax.nn.sigmoid(vae(modules).decode(z))),
    "sample_codes": jax.jit(lambda modules, x, key: sample_codes(vae(modules), x, key)),
  }


@functools.lru_cache(maxsize=16)
def _encode_rows(graphdef: nnx.GraphDef, mesh: Mesh):
  """(modules replicated on `mesh`, host images) -> numpy encoder means, data parallel; cached
  like `_model_fns`."""
  return sharding.sharded_map(lambda m, x: nnx.merge(graphdef, m)[0].encode(x)[0], mesh)


@functools.lru_cache(maxsize=16)
def _encode_replica_rows(graphdef: nnx.GraphDef, mesh: Mesh):
  """(modules stacked on a leading replica axis, replicated on `mesh`; host images [B, K, ...])
  -> numpy encoder means [B, K, D]: replica k encodes column k, all in one program, rows data
  parallel. Cached like `_model_fns`."""
  encode = lambda m, x: nnx.merge(graphdef, m)[0].encode(x)[0]  # noqa: E731
  return sharding.sharded_map(jax.vmap(encode, in_axes=(0, 1), out_axes=1), mesh)


def _eval_key(config: ml_collections.ConfigDict, step: int) -> jax.Array:
  """The key of the evaluation of `config`'s run at `step`: its points and pictures."""
  return jax.random.fold_in(jax.random.key(config.seed), step)


def _regularizer_picture(
  config: ml_collections.ConfigDict,
  fns: dict[str, Any],
  modules: Any,
  images: Any,
  mu: jax.Array,
  key: jax.Array,
) -> tuple[str, np.ndarray] | None:
  """(name, picture) of the regularizer's picture (`RegularizerSpec.picture`; GMG: "gw_plan")
  of one training batch of the map it regularizes, as it sees the batch in training; None when
  it has none.

  Decoder: codes sampled from q(z|x) -> the decoder's image (`regularizer.target`); encoder:
  images -> encoder means.
  """
  # A regularizer registered by a module the scoring program did not import has no picture.
  spec = registry.regularizer_specs().get(config.regularizer.name)
  if spec is None or spec.picture is None:
    return None
  reg = config.regularizer
  n = min(int(config.train.batch_size), len(mu))
  if reg.on == "encoder":
    x, y = to_float(images[:n]), mu[:n]
  else:
    x = fns["sample_codes"](modules, images[:n], key)
    logits = fns["decode"](modules, x)
    y = jax.nn.sigmoid(logits) if reg.target == "mean" else logits
  name, matrix, title = spec.picture(x, y, config.regularizer[spec.name])
  return name, viz.gw_plan_picture(matrix, title=f"{title} ({reg.on})")


def _write_pictures(
  config: ml_collections.ConfigDict,
  graphdef: nnx.GraphDef,
  modules: Any,
  dataset: Any,
  key: jax.Array,
  pictures_dir: str,
  step: int,
) -> dict[str, np.ndarray]:
  """Writes this evaluation's pictures to `pictures_dir` and returns them by name.

  Reconstructions and traversals (models with a decoder): a PNG grid of one image's code, a
  row per dim sorted by KL and labelled (`viz.labelled_traversal`), and a GIF of a few codes
  sweeping every dim at once, each dim over the 2nd..98th percentile of its encoder means on
  `_NUM_POSTERIOR_IMAGES` images. GMG runs: the GW plan of the regularized map on one batch.
  """
  images, _ = dataset.sample_batch(key, _NUM_POSTERIOR_IMAGES)
  fns = _model_fns(graphdef)
  mu, logvar = fns["encode"](modules, images)
  os.makedirs(pictures_dir, exist_ok=True)
  pictures = {}
  if nnx.merge(graphdef, modules)[0].decoder is not None:
    decode_mean = functools.partial(fns["decode_mean"], modules)
    codes = np.asarray(mu)
    values = viz.traversal_values(*viz.traversal_range(codes), _NUM_TRAVERSAL_VALUES)
    kl = _per_dim_kl(mu, logvar)
    pictures["traversal"], order = viz.labelled_traversal(decode_mean, codes[0], values, kl)
    viz.save_gif(
      os.path.join(pictures_dir, f"traversal_{step:08d}.gif"),
      viz.traversal_frames(decode_mean, codes[:_NUM_GIF_CODES], values, order),
    )
    pictures["reconstructions"] = viz.reconstruction_grid(
      images[:_NUM_PICTURE_IMAGES], decode_mean(mu[:_NUM_PICTURE_IMAGES])
    )
  regularizer_picture = _regularizer_picture(
    config, fns, modules, images, mu, jax.random.fold_in(key, 1)
  )
  if regularizer_picture is not None:
    pictures.update([regularizer_picture])
  for name, picture in pictures.items():
    viz.save_png(os.path.join(pictures_dir, f"{name}_{step:08d}.png"), picture)
  return pictures


def evaluate_and_write(
  config: ml_collections.ConfigDict,
  workdir: str,
  graphdef: nnx.GraphDef,
  state: Any,
  dataset: Any,
  *,
  mesh: Mesh | None = None,
  progress: bool = False,
  by: str = "train",
  codes: tuple[np.ndarray, np.ndarray] | None = None,
  tensorboard: bool = True,
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
    by: who evaluates ("train" or "evaluate"), recorded in metrics.json's "sources".
    codes: the state's codes of the array metrics' points, when the caller encoded them
      (`evaluate_runs`); None encodes them here.
    tensorboard: also append the record and pictures to the TensorBoard run `tensorboard/eval`;
      a caller that evaluates earlier steps than the run's rewrites it instead, in step order
      (`rewrite_eval_tensorboard`).

  Returns:
    The record written: {"step": s, "<metric>": {...}, ...}.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  modules = sharding.replicate(state.modules, mesh)
  encode_rows = _encode_rows(graphdef, mesh)
  state = sharding.host_local(state)
  step = int(state.step)
  key = _eval_key(config, step)
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
    codes=codes,
  )
  record = {"step": step, **scores}
  if jax.process_index() != 0:
    return record
  source = {
    "step": step,
    "mode": config.eval.mode,
    "num_train": config.eval.num_train,
    "num_test": config.eval.num_test,
    "by": by,
  }
  merge_metrics_json(os.path.join(workdir, "metrics.json"), step, scores, source)
  writer = MetricWriter(workdir, "eval", tensorboard=tensorboard, config=config)
  writer.write(step, {f"{m}/{k}": v for m, values in scores.items() for k, v in values.items()})
  pictures = os.path.join(workdir, "pictures")
  if config.eval.pictures:
    images = _write_pictures(config, graphdef, state.modules, dataset, key, pictures, step)
    writer.write_images(step, {f"pictures/{k}": v for k, v in images.items()})
  writer.close()
  history = read_jsonl(os.path.join(workdir, "eval.jsonl"))
  if len(history) > 1:
    viz.plot_metric_curves(history, os.path.join(pictures, "metric_curves.png"))
  return record


def evaluate_runs(
  program: replicas.Program,
  runs: Sequence[tuple[int, ml_collections.ConfigDict, str]],
  graphdef: nnx.GraphDef,
  state: Any,
  dataset: Any,
  *,
  mesh: Mesh | None = None,
  progress: bool = False,
  by: str = "train",
  tensorboard: bool = True,
) -> list[dict[str, Any]]:
  """Scores runs of a program (`replicas.Program`), each as `evaluate_and_write` scores a run.

  A single run is scored by `evaluate_and_write`. Of a K-run, the array metrics' points of every
  replica (its own seed's draw, `metrics.split_factors`) are encoded together: one vmapped
  encoder over the replica axis takes a batch of each replica's images per call, so K replicas
  cost about one encoding pass on an accelerator, not K. The metrics, the FactorVAE/BetaVAE
  batches and the pictures are then computed per replica.

  Args:
    program: the program that trained `state`.
    runs: (index in the program, the run's config, its directory) of each run to score
      (`replicas.Replica`; a K-run skips the replicas that stopped).
    graphdef: graph definition of the train state's modules.
    state: the program's `train.TrainState` (stacked for a K-run), replicated on `mesh` or on
      one device.
    dataset, mesh, progress, by, tensorboard: as in `evaluate_and_write`.

  Returns:
    The records written, in the order of `runs`.
  """
  if not runs:
    return []
  kwargs = dict(mesh=mesh, progress=progress, by=by, tensorboard=tensorboard)
  if not program.stacked:
    return [
      evaluate_and_write(config, workdir, graphdef, state, dataset, **kwargs)
      for _, config, workdir in runs
    ]
  mesh = sharding.make_mesh() if mesh is None else mesh
  kwargs["mesh"] = mesh
  indices = np.asarray([index for index, _, _ in runs])
  modules = jax.tree.map(lambda a: a[indices], sharding.host_local(state.modules))
  modules = sharding.replicate(modules, mesh)
  step = train_step.step_of(state)
  configs = [config for _, config, _ in runs]
  codes = [None] * len(runs)
  if any(name in metrics_lib.suite.ARRAY_METRICS for name in configs[0].eval.metrics):
    codes = _encode_replica_points(configs, graphdef, modules, dataset, step, mesh, progress)
  return [
    evaluate_and_write(
      config,
      workdir,
      graphdef,
      replicas.take(state, int(index)),
      dataset,
      codes=own_codes,
      **kwargs,
    )
    for (index, config, workdir), own_codes in zip(runs, codes, strict=True)
  ]


def _encode_replica_points(
  configs: Sequence[ml_collections.ConfigDict],
  graphdef: nnx.GraphDef,
  modules: Any,
  dataset: Any,
  step: int,
  mesh: Mesh,
  progress: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
  """(train codes, test codes) of each replica's array-metric points, encoded together by the
  stacked `modules` (replica k = `configs[k]`, its points drawn from its own evaluation key)."""
  num_train, num_test = configs[0].eval.num_train, configs[0].eval.num_test
  factors = [
    metrics_lib.split_factors(dataset, _eval_key(config, step), num_train, num_test)
    for config in configs
  ]
  encode_rows = _encode_replica_rows(graphdef, mesh)
  rows = min(256, max(1, _REPLICA_ENCODE_IMAGES // len(configs)))
  splits = []
  for split in range(2):
    codes = []
    for start in tqdm.trange(
      0, len(factors[0][split]), rows, desc="encode", disable=not progress, leave=False
    ):
      images = [dataset.images_from_factors(f[split][start : start + rows]) for f in factors]
      codes.append(encode_rows(modules, np.stack(images, axis=1)))
    splits.append(np.concatenate(codes, axis=0))  # [N, K, D]
  return [(splits[0][:, k], splits[1][:, k]) for k in range(len(configs))]


def rewrite_eval_tensorboard(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Rewrites the run's TensorBoard evaluations (`tensorboard/eval`) from its eval.jsonl, in
  step order: one point per step and metric (a later evaluation of a step over an earlier
  one), with the pictures of each step from `pictures/`."""
  by_step: dict[int, dict[str, Any]] = {}
  for record in read_jsonl(os.path.join(workdir, "eval.jsonl")):
    by_step.setdefault(int(record["step"]), {}).update(record)
  pictures, images = os.path.join(workdir, "pictures"), {}
  for name in sorted(os.listdir(pictures)) if os.path.isdir(pictures) else ():
    stem, _, step = name.removesuffix(".png").rpartition("_")
    if name.endswith(".png") and step.isdigit() and int(step) in by_step:
      images.setdefault(int(step), {})[f"pictures/{stem}"] = viz.read_png(
        os.path.join(pictures, name)
      )
  records = [by_step[step] for step in sorted(by_step)]
  rewrite_tensorboard(os.path.join(workdir, "tensorboard", "eval"), records, images, config)


def merge_metrics_json(
  path: str, step: int, scores: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
  """Merges `scores` into the metrics.json at `path` (atomically) and returns what it wrote.

  metrics.json holds the latest value of every metric computed on the run, so an evaluation of a
  few metrics (or in another mode) never drops the others. "sources" says, per metric, the step,
  mode, sample sizes and who computed it; a metric already there from a later step is kept.
  "step" is the latest step any value comes from.
  """
  merged: dict[str, Any] = {"sources": {}}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      merged = json.load(f)
    merged.setdefault("sources", {})
  for name, values in scores.items():
    previous = merged["sources"].get(name, {}).get("step", merged.get("step", -1))
    if name not in merged or step >= previous:
      merged[name] = values
      merged["sources"][name] = source
  merged["step"] = max(int(s["step"]) for s in merged["sources"].values())
  write_json_atomic(path, merged)
  return merged
