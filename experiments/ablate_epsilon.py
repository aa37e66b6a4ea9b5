"""epsilon_0 ablation of the GMG: gap, solver iterations, convergence, plan entropy; optional DCI-D.

  python experiments/ablate_epsilon.py                                  # procedural batches, ~1 min
  python experiments/ablate_epsilon.py --workdir=/tmp/gmg_sweeps/readme_cpu32/beta_vae/seed_0
  python experiments/ablate_epsilon.py --downstream --seeds=0 --epsilons=0.1,0.01,0.001

Part 1 (solver, no training): for each cost and epsilon_0, `gmg.gromov_monge_gap` on `--batches`
batches of n = `--batch_size` in both placements of the paper:

* decoder: x = latent codes [n, 10], y = images [n, H*W*C] in [0, 1];
* encoder: x = images, y = codes.

The images are procedural Shapes3D-like renders (gmg_jax.data). Without `--workdir` the codes are
a disentangled stand-in: the standardized ground-truth factors padded to 10 dims, rotated by a
fixed random orthogonal matrix, plus N(0, 0.05^2) noise. With `--workdir` they come from a trained
run instead: its encoder means (encoder placement) and its decoder's sigmoid outputs at sampled
codes (decoder placement, the setting the trainer regularizes). Columns (means over batches):
the certified gap (`estimator="certified"`, >= 0), gap / distortion, the entropic gap that the
trainer trains by default (`info.entropic_gap`, can be negative), outer iterations, fraction
converged, plan entropy / log n (1: a matching, 2: the product coupling), fraction
`identity_won` (the solver found no plan better than the map's own coupling, so the certified
gap and its gradient are 0), the norm of the certified gap's gradient, and ms per jitted value
+ gradient.

Part 2 (`--downstream`): short training runs of `--variant` (default beta_vae,gmg_cos_decoder)
at each epsilon_0 in the cpu32 setting of experiments/sweep.py, resumable, then DCI-D (mean ± std
over seeds) per epsilon_0. Runs go to `<--root>/ablate_epsilon/eps_<e>/...`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from gmg_jax import gmg  # noqa: E402

CODE_DIM = 10


def procedural_batches(
  num_batches: int, batch_size: int, image_size: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
  """Procedural images and disentangled stand-in codes.

  Args:
    num_batches: number of batches.
    batch_size: n.
    image_size: image side.
    seed: PRNG seed.

  Returns:
    [(images [n, H*W*C] float32 in [0, 1], codes [n, 10] float32)] * num_batches.
  """
  import ml_collections

  from gmg_jax import data as data_lib

  config = ml_collections.ConfigDict(
    {
      "name": "shapes3d_procedural",
      "source": "files",
      "data_dir": "",
      "image_size": image_size,
      "on_device": False,
      "device_budget_gb": None,
      "manual_dir": "",
    }
  )
  dataset = data_lib.get_dataset(config)
  rng = np.random.default_rng(seed)
  rotation, _ = np.linalg.qr(rng.normal(size=(CODE_DIM, CODE_DIM)))
  sizes = np.asarray(dataset.factor_sizes, np.float32)
  batches = []
  for b in range(num_batches):
    images, factors = dataset.sample_batch(jax.random.key(seed * 1000 + b), batch_size)
    images = np.asarray(images, np.float32).reshape(batch_size, -1) / 255.0
    f = np.asarray(factors, np.float32)
    f = (f - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12 + 1e-6)  # uniform-grid standardize
    codes = np.zeros((batch_size, CODE_DIM), np.float32)
    codes[:, : f.shape[1]] = f
    codes = codes @ rotation.T + 0.05 * rng.normal(size=codes.shape)
    batches.append((images, codes.astype(np.float32)))
  return batches


def run_batches(
  workdir: str, num_batches: int, batch_size: int, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
  """Batches from a trained run: (images, encoder means) and (sampled codes, decoder outputs).

  Args:
    workdir: a run's workdir (config.json + checkpoints).
    num_batches: number of batches.
    batch_size: n.
    seed: PRNG seed.

  Returns:
    (encoder batches [(x = images flat, y = means)], decoder batches [(x = codes, y = sigmoid
    decoder outputs flat)]).
  """
  from flax import nnx

  from gmg_jax import evaluate

  _, graphdef, state, dataset = evaluate.load_run(workdir)
  vae = nnx.merge(graphdef, state.modules)[0]
  encode = jax.jit(lambda x: vae.encode(x))
  decode = jax.jit(lambda z: jax.nn.sigmoid(vae.decode(z)))
  encoder, decoder = [], []
  for b in range(num_batches):
    key_data, key_noise = jax.random.split(jax.random.key(seed * 1000 + b))
    images, _ = dataset.sample_batch(key_data, batch_size)
    mu, logvar = encode(images)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key_noise, mu.shape)
    flat = np.asarray(images, np.float32).reshape(batch_size, -1) / 255.0
    encoder.append((flat, np.asarray(mu)))
    decoder.append((np.asarray(z), np.asarray(decode(z)).reshape(batch_size, -1)))
  return encoder, decoder


def solver_table(
  batches: Sequence[tuple[np.ndarray, np.ndarray]],
  costs: Sequence[str],
  epsilons: Sequence[float],
  placement: str,
) -> list[dict]:
  """GMG diagnostics per (cost, epsilon_0), averaged over the batches.

  Args:
    batches: [(x [n, d_x], y [n, d_y])], x the map's input, y its output.
    costs: cost names of gmg_jax.gmg.
    epsilons: epsilon_0 values.
    placement: label of the rows ("decoder" / "encoder").

  Returns:
    One dict per (cost, epsilon_0).
  """
  rows = []
  for cost in costs:

    def value_and_grad(x, y, epsilon_0, cost=cost):
      def f(y):
        gap, info = gmg.gromov_monge_gap(
          x, y, cost=cost, epsilon_0=epsilon_0, estimator="certified"
        )
        return gap, info

      return jax.value_and_grad(f, has_aux=True)(y)

    # epsilon_0 is traced: one compilation per cost serves the whole column.
    fn = jax.jit(value_and_grad)
    for epsilon_0 in epsilons:
      records, times = [], []
      for x, y in batches:
        start = time.perf_counter()
        (gap, info), grad = fn(x, y, jnp.float32(epsilon_0))
        jax.block_until_ready(grad)
        times.append(time.perf_counter() - start)
        records.append(
          dict(
            gap=float(gap),
            entropic=float(info.entropic_gap),
            dst=float(info.distortion),
            iterations=float(info.iterations),
            converged=float(info.converged),
            entropy=float(info.plan_entropy_ratio),
            identity_won=float(info.identity_won),
            grad_norm=float(jnp.linalg.norm(grad)),
          )
        )
      mean = {k: float(np.mean([r[k] for r in records])) for k in records[0]}
      mean["gap_over_dst"] = float(np.mean([r["gap"] / max(r["dst"], 1e-12) for r in records]))
      # The first call of a column pays the compilation; report the median of the rest.
      mean["ms"] = 1e3 * float(np.median(times[1:] if len(times) > 1 else times))
      rows.append({"placement": placement, "cost": cost, "epsilon_0": epsilon_0, **mean})
  return rows


def format_table(rows: Sequence[dict]) -> str:
  """Markdown table of `solver_table` rows."""
  header = (
    "placement",
    "cost",
    "epsilon_0",
    "gap",
    "gap/DST",
    "entropic",
    "iters",
    "converged",
    "H/log n",
    "identity_won",
    "|grad|",
    "ms",
  )
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append(
      f"| {r['placement']} | {r['cost']} | {r['epsilon_0']:g} | {r['gap']:.4g} | "
      f"{r['gap_over_dst']:.3f} | {r['entropic']:.4g} | {r['iterations']:.1f} | "
      f"{r['converged']:.2f} | {r['entropy']:.3f} | {r['identity_won']:.2f} | "
      f"{r['grad_norm']:.3g} | {r['ms']:.1f} |"
    )
  return "\n".join(lines) + "\n"


def downstream(
  epsilons: Sequence[float],
  seeds: Sequence[int],
  variant: str,
  root: str,
  out: str,
  extra: Sequence[str],
) -> str:
  """Short cpu32 runs of `variant` per epsilon_0 (resumable) and their DCI-D table.

  Args:
    epsilons: epsilon_0 values.
    seeds: seeds.
    variant: config-string variant with a GMG regularizer.
    root: directory of the runs.
    out: directory of the aggregated results.
    extra: more "KEY=VALUE" overrides.

  Returns:
    The markdown table.
  """
  import aggregate
  import sweep

  lines = ["| epsilon_0 | seeds | DCI-D | MIG | identity_won |", "|---|---|---|---|---|"]
  for epsilon_0 in epsilons:
    study_root = os.path.join(root, f"eps_{epsilon_0:g}")
    overrides = (*sweep.SETTINGS["cpu32"], f"regularizer.gmg.epsilon_0={epsilon_0!r}", *extra)
    runs = sweep.expand([variant], seeds, overrides)
    sweep.run_all("configs/default.py", runs, study_root)
    summary = aggregate.summarize(
      aggregate.collect(study_root),
      ["dci/disentanglement", "mig/discrete_mig", "train/regularizer/gmg_identity_won"],
    )
    cells = [
      aggregate.format_cell(summary[0].get(m)) if summary else ""
      for m in ("dci/disentanglement", "mig/discrete_mig", "train/regularizer/gmg_identity_won")
    ]
    lines.append(
      f"| {epsilon_0:g} | {summary[0]['n'] if summary else 0} | " + " | ".join(cells) + " |"
    )
  table = "\n".join(lines) + "\n"
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "downstream.md"), "w", encoding="utf-8") as f:
    f.write(f"{variant}, cpu32 setting (experiments/sweep.py), mean ± std over seeds.\n\n{table}")
  return table


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--epsilons", default="0.1,0.03,0.01,0.003,0.001")
  p.add_argument("--costs", default="sqeuclidean,scaled_sqeuclidean,cosine")
  p.add_argument("--placements", default="decoder,encoder")
  p.add_argument("--batches", type=int, default=5)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--workdir", default="", help="take codes and decoder outputs from this run")
  p.add_argument("--downstream", action="store_true", help="also train and report DCI-D")
  p.add_argument("--variant", default="beta_vae,gmg_cos_decoder")
  p.add_argument("--seeds", default="0")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument(
    "--root",
    default=os.path.join(os.environ.get("GMG_SWEEP_ROOT", "/tmp/gmg_sweeps"), "ablate_epsilon"),
  )
  p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "ablate_epsilon"))
  args = p.parse_args(argv)
  epsilons = [float(e) for e in args.epsilons.split(",")]
  costs = args.costs.split(",")
  if args.workdir:
    encoder, decoder = run_batches(args.workdir, args.batches, args.batch_size)
    source = f"run {args.workdir}"
  else:
    images_codes = procedural_batches(args.batches, args.batch_size, args.image_size)
    encoder = images_codes
    decoder = [(codes, images) for images, codes in images_codes]
    source = f"procedural {args.image_size}x{args.image_size} images, stand-in codes"
  batches = {"decoder": decoder, "encoder": encoder}
  rows = []
  for placement in args.placements.split(","):
    rows += solver_table(batches[placement], costs, epsilons, placement)
  table = format_table(rows)
  print(f"GMG solver diagnostics ({source}; {args.batches} batches of {args.batch_size}):\n")
  print(table)
  os.makedirs(args.out, exist_ok=True)
  name = "solver_run.md" if args.workdir else "solver_procedural.md"
  with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
    f.write(
      f"GMG solver diagnostics ({source}; {args.batches} batches of {args.batch_size}).\n\n{table}"
    )
  if args.downstream:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(downstream(epsilons, seeds, args.variant, args.root, args.out, args.set))


if __name__ == "__main__":
  main()
