"""UDR of saved runs: unsupervised model selection across the runs (e.g. seeds) of one setting.

Loads each workdir's latest checkpoint (`gmg_jax.saved_runs.load_run`), encodes the same
`--num_points` images (drawn from the first run's dataset with `--seed`) with every model,
computes each model's mean KL per latent over those images and the UDR of the runs
(`gmg_jax.metrics.udr`, disentanglement_lib's `compute_udr_sklearn`: 1000 points, lasso
similarities, latents with KL <= 0.01 filtered out), then writes `udr.json` into each workdir
(atomically: a temporary file, then a rename) and prints a table. UDR ranks runs against each
other, so a run's number depends on the set of runs scored with it; the file names them all.

Usage (all runs must share the data config and the latent size):

    python experiments/udr.py --workdirs=/tmp/s0,/tmp/s1,/tmp/s2 [--num_points=1000] \
        [--correlation=lasso|spearman] [--seed=0]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from gmg_jax import metrics, saved_runs
from gmg_jax.metrics.udr import CORRELATIONS
from gmg_jax.writers import write_json_atomic

RESULT_FILE = "udr.json"


def _images(dataset: Any, key: jax.Array, num_points: int, batch_size: int) -> list[np.ndarray]:
  """`num_points` uint8 images of random factors, in batches of `batch_size`."""
  factors = np.asarray(dataset.sample_factors(key, num_points))
  return [
    np.asarray(dataset.images_from_factors(factors[s : s + batch_size]))
    for s in range(0, num_points, batch_size)
  ]


def _posterior(graphdef: nnx.GraphDef, state: Any, images: list[np.ndarray]) -> tuple:
  """Encoder means and log-variances [N, D] of the image batches."""
  vae = nnx.merge(graphdef, state.modules)[0]
  encode = jax.jit(lambda x: vae.encode(x))
  outputs = [tuple(np.asarray(a, np.float64) for a in encode(batch)) for batch in images]
  return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def udr_of_runs(
  workdirs: Sequence[str],
  *,
  num_points: int = 1000,
  seed: int = 0,
  correlation: str = "lasso",
  filter_low_kl: bool = True,
  kl_filter_threshold: float = 0.01,
  batch_size: int = 256,
  load_run: Callable[[str], tuple] = saved_runs.load_run,
) -> list[dict[str, Any]]:
  """Scores the runs in `workdirs` against each other and writes `udr.json` into each.

  Args:
    workdirs: two or more run directories of one setting (same data config and latent size).
    num_points: images encoded by every model (disentanglement_lib: 1000).
    seed: seed of the images' factors.
    correlation: "lasso" or "spearman" similarity between latents.
    filter_low_kl: drop latents with mean KL <= `kl_filter_threshold` from each pair's matrix.
    kl_filter_threshold: the filter's threshold.
    batch_size: images encoded at once.
    load_run: workdir -> (config, graphdef, state, dataset).

  Returns:
    The records written, one per workdir, in order.
  """
  if len(workdirs) < 2:
    raise ValueError(f"UDR compares runs: got {len(workdirs)} workdir(s), need >= 2")
  paths = [os.path.abspath(w) for w in workdirs]
  twice = sorted({w for w in paths if paths.count(w) > 1})
  if twice:
    raise ValueError(f"Workdirs listed more than once: {twice}; each run gets its own udr.json.")
  runs = [load_run(workdir) for workdir in workdirs]
  data_configs = [run[0].data.to_dict() for run in runs]
  for workdir, data_config in zip(workdirs[1:], data_configs[1:], strict=True):
    if data_config != data_configs[0]:
      raise ValueError(
        f"{workdir} was trained on other data than {workdirs[0]}: {data_config} vs "
        f"{data_configs[0]}; UDR compares models of the same inputs."
      )
  images = _images(runs[0][3], jax.random.key(seed), num_points, batch_size)
  codes, kls = [], []
  for _, graphdef, state, _ in runs:
    mean, logvar = _posterior(graphdef, state, images)
    codes.append(mean)
    kls.append(metrics.gaussian_kl(mean, logvar))
  dims = sorted({c.shape[1] for c in codes})
  if len(dims) > 1:
    raise ValueError(f"The runs have latent sizes {dims}; UDR needs one latent size.")
  scores = metrics.udr(
    codes,
    kls,
    correlation=correlation,
    filter_low_kl=filter_low_kl,
    kl_filter_threshold=kl_filter_threshold,
    random_state=seed,
  )
  settings = dict(
    num_points=num_points,
    seed=seed,
    correlation=correlation,
    filter_low_kl=filter_low_kl,
    kl_filter_threshold=kl_filter_threshold,
  )
  records = []
  for index, (workdir, run, kl) in enumerate(zip(workdirs, runs, kls, strict=True)):
    record = {
      "udr": float(scores["model_scores"][index]),
      "step": int(run[2].step),
      "index": index,
      "workdirs": paths,
      "pairwise_scores": scores["pairwise_scores"].tolist(),
      "kl": kl.tolist(),
      "num_active_latents": int(np.sum(kl > kl_filter_threshold)),
      **settings,
    }
    write_json_atomic(os.path.join(workdir, RESULT_FILE), record)
    records.append(record)
  return records


def format_table(workdirs: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
  """One line per run: workdir, step, active latents, UDR."""
  header = ("workdir", "step", "active latents", "UDR")
  lines = [header] + [
    (w, str(r["step"]), str(r["num_active_latents"]), f"{r['udr']:.4f}")
    for w, r in zip(workdirs, records, strict=True)
  ]
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return "\n".join(
    "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdirs", required=True, help="comma-separated run directories")
  parser.add_argument("--num_points", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--correlation", choices=CORRELATIONS, default="lasso")
  parser.add_argument("--no_kl_filter", action="store_true", help="keep inactive latents")
  parser.add_argument("--kl_filter_threshold", type=float, default=0.01)
  args = parser.parse_args()
  workdirs = [w for w in args.workdirs.split(",") if w]
  records = udr_of_runs(
    workdirs,
    num_points=args.num_points,
    seed=args.seed,
    correlation=args.correlation,
    filter_low_kl=not args.no_kl_filter,
    kl_filter_threshold=args.kl_filter_threshold,
  )
  print(format_table(workdirs, records))
  print(f"Wrote {RESULT_FILE} into each workdir ({args.correlation}, {args.num_points} points).")


if __name__ == "__main__":
  main()
