r"""Controls for the decoder-free claim: what DCI gives codes that were never trained to
disentangle, next to the decoder-free arms and a trained beta-VAE.

  python experiments/decoder_free_controls.py --out=experiments/results/decoder_free_controls

The decoder-free study (`decoder_free_cpu32`) found that GMG or DST on the encoder raises DCI
disentanglement over prior matching alone (KL only), whose codes collapse. That alone does not
say the regularizer disentangles: any code that keeps information about the image might score
as well. This script scores codes with no disentangling training at all, in the same cpu32 data
(32x32 procedural Shapes3D-like images) and with the same DCI (fast mode):

* `untrained`: the cpu32 MLP encoder's mean at initialization (seeds 0-9);
* `pca`: the top-10 principal components of the flattened images (fitted on 10,000 images drawn
  with the seed; seeds 0-9).

each at the round-2 studies' evaluation size (2,000 / 1,000 points) and at the package default
(10,000 / 5,000). The table puts them next to the decoder-free arms and the trained beta-VAE
(10 seeds each, 2,000 steps, 2,000 / 1,000 points), read from the committed results.csv of
`decoder_free_cpu32` and `decoder_cpu32`, and the figure plots DCI-D against informativeness for
every arm (GMG and DST along their weights), so "disentangles" can be told from "keeps more
information". Writes `<out>/controls.csv`, `<out>/table.md` and `<out>/dci_vs_informativeness.png`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Callable, Sequence

import aggregate  # experiments/ is not a package: the script's own directory
import jax
import jax.numpy as jnp
import numpy as np
import stats
import studies
from flax import nnx

from gmg_jax import data as data_lib
from gmg_jax import metrics as metrics_lib
from gmg_jax import models
from gmg_jax.atomic import atomic_write
from gmg_jax.config import get_config

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SIZES = ((2000, 1000), (10_000, 5000))
CONTROLS = ("untrained", "pca")
COLUMNS = ("dci/disentanglement", "dci/completeness", "dci/informativeness_test")
_PCA_IMAGES = 10_000


def cpu32_config():
  """The cpu32 setting's config (studies.CPU32), the one the decoder-free arms trained in."""
  config = get_config()
  for dotted, value in studies.CPU32.items():
    *parents, field = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config


def untrained_encoder(config, image_shape, seed: int) -> Callable[[jax.Array], jax.Array]:
  """The encoder mean of the config's VAE at initialization (parameters from `seed`)."""
  vae = models.make_vae(config.model, image_shape, decoder=False, rngs=nnx.Rngs(seed))
  return jax.jit(lambda images: vae.encode(images)[0])


def pca_encoder(
  dataset, seed: int, dims: int, num_images: int = _PCA_IMAGES
) -> Callable[[jax.Array], jax.Array]:
  """Projection onto the top `dims` principal components of `num_images` images drawn with
  `seed` (pixels as floats in [0, 1], centered)."""
  images, _ = dataset.sample_batch(jax.random.key(seed + 10_000), num_images)
  flat = np.asarray(models.to_float(images)).reshape(num_images, -1).astype(np.float64)
  mean = flat.mean(axis=0)
  _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
  basis = jnp.asarray(vt[:dims].T, jnp.float32)
  center = jnp.asarray(mean, jnp.float32)

  def encode(batch: jax.Array) -> jax.Array:
    return (models.to_float(batch).reshape(batch.shape[0], -1) - center) @ basis

  return jax.jit(encode)


def score(dataset, encode, seed: int, num_train: int, num_test: int) -> dict[str, float]:
  """DCI (fast mode) of `encode`'s codes, its points drawn with `seed` (as an evaluation at step
  0 of a run with that seed)."""
  key = jax.random.fold_in(jax.random.key(seed), 0)
  scores = metrics_lib.compute_metrics(
    ("dci",),
    dataset,
    encode,
    key,
    mode="fast",
    num_train=num_train,
    num_test=num_test,
    random_state=seed,
  )
  return {f"dci/{k}": float(v) for k, v in scores["dci"].items()}


def run_controls(seeds: Sequence[int], sizes=SIZES) -> list[dict]:
  """One row per (control, seed, size): the DCI scores."""
  config = cpu32_config()
  dataset = data_lib.get_dataset(config.data)
  rows = []
  for seed in seeds:
    encoders = {
      "untrained": untrained_encoder(config, dataset.image_shape, seed),
      "pca": pca_encoder(dataset, seed, config.model.latent_dim),
    }
    for name, encode in encoders.items():
      for num_train, num_test in sizes:
        row = {"config": name, "seed": seed, "num_train": num_train, "num_test": num_test}
        row.update(score(dataset, encode, seed, num_train, num_test))
        rows.append(row)
        d, i = row["dci/disentanglement"], row["dci/informativeness_test"]
        print(f"{name} seed {seed} ({num_train}/{num_test}): DCI-D {d:.3f}, I {i:.3f}", flush=True)
  return rows


def _committed(study: str, configs: Sequence[str]) -> list[dict]:
  rows = aggregate.read_csv(os.path.join(RESULTS, study, "results.csv"))
  return [{**r, "num_train": 2000, "num_test": 1000} for r in rows if r["config"] in configs]


ARMS = {
  "decoder_free_cpu32": (
    "decoder_free",
    *(f"decoder_free+{r}_cos_encoder+weight={w}" for r in ("dst", "gmg") for w in (30, 100, 300)),
  ),
  "decoder_cpu32": ("beta_vae",),
}


def _cell(values: Sequence[float]) -> str:
  """Mean and 95% t interval of the mean over seeds."""
  values = np.asarray(values, dtype=np.float64)
  if values.size == 0:
    return "-"
  if values.size < 2:
    return f"{values.mean():.3f}"
  half = stats.paired(values, np.zeros_like(values))
  return f"{half.mean:.3f} [{half.low:.3f}, {half.high:.3f}]"


def table(rows: Sequence[dict]) -> str:
  """Markdown: per (codes, points) the mean over seeds of each column with its 95% t interval."""
  header = ["codes", "points (train/test)", "seeds", *COLUMNS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  groups: dict[tuple[str, int, int], list[dict]] = {}
  for r in rows:
    groups.setdefault((r["config"], r["num_train"], r["num_test"]), []).append(r)
  for (config, num_train, num_test), members in groups.items():
    cells = [config, f"{num_train}/{num_test}", str(len(members))]
    cells += [_cell([m[c] for m in members if c in m]) for c in COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str) -> None:
  """DCI-D against informativeness (test), 2,000 / 1,000 points: one dot per seed, one marker
  per arm's mean; GMG and DST joined along their weights."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(7.0, 5.0), layout="constrained")
  FigureCanvasAgg(figure)
  ax = figure.subplots()
  points = [r for r in rows if r["num_train"] == 2000]
  configs = list(dict.fromkeys(r["config"] for r in points))
  means = {}
  for index, config in enumerate(configs):
    members = [r for r in points if r["config"] == config]
    x = [m["dci/informativeness_test"] for m in members]
    y = [m["dci/disentanglement"] for m in members]
    ax.plot(x, y, ".", color=f"C{index % 10}", alpha=0.35)
    means[config] = (float(np.mean(x)), float(np.mean(y)))
    ax.plot(*means[config], "o", color=f"C{index % 10}", ms=8, label=config)
  for regularizer in ("dst", "gmg"):
    arms = [c for c in configs if f"+{regularizer}_" in c]
    arms.sort(key=lambda c: float(c.rsplit("weight=", 1)[1]))
    curve = [means[c] for c in arms]
    if len(curve) > 1:
      ax.plot(*zip(*curve, strict=True), "-", color="k", lw=0.8, alpha=0.6)
  ax.set_xlabel("DCI informativeness (test)")
  ax.set_ylabel("DCI disentanglement")
  ax.set_title(
    "cpu32, 2,000 / 1,000 DCI points; lines: a regularizer along weights 30-100-300", fontsize=8
  )
  ax.legend(fontsize=6)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  atomic_write(path, lambda f: f.write(buffer.getvalue()), text=False)


def write_csv(rows: Sequence[dict], path: str) -> None:
  fields = ["config", "seed", "num_train", "num_test", *COLUMNS]
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  atomic_write(path, lambda f: f.write(text.getvalue()), text=True)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 of each control")
  parser.add_argument(
    "--sizes", default="2000/1000,10000/5000", help="DCI train/test points, comma-separated"
  )
  args = parser.parse_args(argv)
  try:
    sizes = tuple(tuple(int(n) for n in item.split("/")) for item in args.sizes.split(","))
  except ValueError:
    parser.error(f"--sizes wants TRAIN/TEST[,TRAIN/TEST...]; got {args.sizes!r}.")
  if args.seeds < 1 or any(len(s) != 2 or min(s) < 2 for s in sizes):
    parser.error("--seeds must be >= 1 and every size TRAIN/TEST with both >= 2.")
  controls = run_controls(range(args.seeds), sizes)
  arms = [r for study, configs in ARMS.items() for r in _committed(study, configs)]
  os.makedirs(args.out, exist_ok=True)
  write_csv(controls, os.path.join(args.out, "controls.csv"))
  text = table(controls + arms)
  atomic_write(os.path.join(args.out, "table.md"), lambda f: f.write(text), text=True)
  plot(controls + arms, os.path.join(args.out, "dci_vs_informativeness.png"))
  print(text)


if __name__ == "__main__":
  main()
