r"""Wall time per training step vs batch size and latent dim, plain beta-VAE vs + GMG (and DST).

  python experiments/bench_batch_size.py                              # cpu32 MLP setting, ~3 min
  python experiments/bench_batch_size.py --batch_sizes=64,256,1024 --latent_dims=10 --arch=conv \
      --image_size=64                                                   # on an accelerator

For each (batch size, latent dim) this builds the trainer's own jitted step
(`gmg_jax.train.make_train_step`, the data drawn on the device as in training) for the plain
objective and each `--variants` regularizer, runs `--warmup` steps (compilation, and the GW solve
leaving the first steps' easy regime), then times `--steps` steps one by one (`block_until_ready`)
and reports the median. The configurations of one row are measured side by side, so read the
ratios (regularized / plain); the machine may be shared. GMG rows also give the solver's mean
outer iterations and fraction converged over the timed steps.

Writes the table to experiments/results/bench_batch_size/<arch><image_size>.md and a plot of
time per step vs batch size.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import sweep  # noqa: E402

from gmg_jax import data as data_lib  # noqa: E402
from gmg_jax import train  # noqa: E402


def time_steps(
  variant: str, batch_size: int, latent_dim: int, args: argparse.Namespace
) -> dict[str, float]:
  """Median seconds per step of `variant` and the GMG solver's statistics.

  Args:
    variant: config-string variant, e.g. "beta_vae,gmg_cos_decoder".
    batch_size: global batch size.
    latent_dim: latent code size.
    args: flags (arch, image_size, warmup, steps).

  Returns:
    {"seconds", "iterations", "converged"} (the last two NaN without GMG).
  """
  overrides = (
    *sweep.SETTINGS["cpu32"],
    f"model.arch={args.arch}",
    f"data.image_size={args.image_size}",
    f"train.batch_size={batch_size}",
    f"model.latent_dim={latent_dim}",
  )
  config = sweep.load_config("configs/default.py", sweep.Run(variant, 0, overrides))
  dataset = data_lib.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  step = train.make_train_step(graphdef, config)
  for _ in range(args.warmup):
    state, metrics = step(state, dataset)
  jax.block_until_ready(metrics)
  times, iterations, converged = [], [], []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = step(state, dataset)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    iterations.append(float(metrics.get("regularizer/gmg_iterations", np.nan)))
    converged.append(float(metrics.get("regularizer/gmg_converged", np.nan)))
  return {
    "seconds": float(np.median(times)),
    "iterations": float(np.mean(iterations)),
    "converged": float(np.mean(converged)),
  }


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch_sizes", default="32,64,128,256")
  p.add_argument("--latent_dims", default="10,32")
  p.add_argument(
    "--variants",
    default="dst_cos_decoder,gmg_cos_decoder",
    help="regularizer tokens timed against the plain objective",
  )
  p.add_argument("--objective", default="beta_vae")
  p.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--warmup", type=int, default=20)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "bench_batch_size"))
  args = p.parse_args(argv)
  tokens = [t for t in args.variants.split(",") if t]
  header = ["batch", "latent", "plain ms"]
  for token in tokens:
    header += [f"{token} ms", "ratio"] + (["GW iters", "conv"] if token.startswith("gmg") else [])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  curves: dict[tuple[str, int], list[tuple[int, float]]] = {}
  print(lines[0], "\n" + lines[1], flush=True)
  for latent_dim in [int(d) for d in args.latent_dims.split(",")]:
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
      plain = time_steps(args.objective, batch_size, latent_dim, args)
      cells = [str(batch_size), str(latent_dim), f"{1e3 * plain['seconds']:.1f}"]
      curves.setdefault(("plain", latent_dim), []).append((batch_size, plain["seconds"]))
      for token in tokens:
        r = time_steps(f"{args.objective},{token}", batch_size, latent_dim, args)
        cells += [f"{1e3 * r['seconds']:.1f}", f"{r['seconds'] / plain['seconds']:.2f}"]
        if token.startswith("gmg"):
          cells += [f"{r['iterations']:.1f}", f"{r['converged']:.2f}"]
        curves.setdefault((token, latent_dim), []).append((batch_size, r["seconds"]))
      lines.append("| " + " | ".join(cells) + " |")
      print(lines[-1], flush=True)
  tag = f"{args.arch}{args.image_size}"
  text = (
    f"Median time per train step ({args.objective}, {args.arch}, {args.image_size}x"
    f"{args.image_size} images, {jax.devices()[0].platform}, {args.steps} steps after "
    f"{args.warmup} warm-up; ratio = regularized / plain, measured side by side).\n\n"
    + "\n".join(lines)
    + "\n"
  )
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, f"{tag}.md"), "w", encoding="utf-8") as f:
    f.write(text)

  from matplotlib.figure import Figure

  figure = Figure(figsize=(5, 3.5), layout="constrained")
  ax = figure.subplots()
  for (name, latent_dim), points in curves.items():
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, [1e3 * y for y in ys], marker="o", label=f"{name}, D={latent_dim}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("batch size")
  ax.set_ylabel("ms / step")
  ax.legend(fontsize=7)
  figure.savefig(os.path.join(args.out, f"{tag}.png"), dpi=110)
  print(f"\nWrote {os.path.join(args.out, tag)}.md/.png")


if __name__ == "__main__":
  main()
