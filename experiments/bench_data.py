"""Batches of 64 per second for each procedural set and an in-memory (device) set.

    python experiments/bench_data.py [--batch_size=64] [--iters=200] [--step_time_s=0.55]

Each figure times a jitted `dataset.sample_batch` (with the dataset passed as an argument, as the
trainer does) plus the uint8 -> float32 conversion a model needs, measured side by side in one
run. `--step_time_s` (a plain beta-VAE train step, e.g. from the trainer's benchmark) also
prints the sampling cost as a fraction of a step; the goal is <= 5%.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gmg_jax.data import files, procedural


def batches_per_second(dataset, batch_size: int, iters: int) -> float:
  """Median-of-3 throughput of a jitted sample-and-convert over `iters` batches."""

  @jax.jit
  def draw(ds, key):
    images, factors = ds.sample_batch(key, batch_size)
    return images.astype(jnp.float32) / 255.0, factors

  keys = jax.random.split(jax.random.key(0), iters)
  jax.block_until_ready(draw(dataset, keys[0]))  # compile
  rates = []
  for _ in range(3):
    start = time.perf_counter()
    for key in keys:
      out = draw(dataset, key)
    jax.block_until_ready(out)
    rates.append(iters / (time.perf_counter() - start))
  return float(np.median(rates))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--iters", type=int, default=200)
  parser.add_argument("--step_time_s", type=float, default=None)
  args = parser.parse_args()
  # A Cars3D-sized uint8 array on the device stands in for any in-memory real set.
  spec = files.SPECS["cars3d"]
  images = np.random.default_rng(0).integers(0, 256, (spec.num_images, 64, 64, 3), np.uint8)
  datasets = {
    "dsprites_procedural (64x64x1)": procedural.dsprites_procedural(64),
    "shapes3d_procedural (64x64x3)": procedural.shapes3d_procedural(64),
    "in-memory cars3d-sized (64x64x3)": files.place(images, spec, on_device=True),
  }
  print(f"device: {jax.devices()[0].device_kind}, batch {args.batch_size}")
  for name, dataset in datasets.items():
    rate = batches_per_second(dataset, args.batch_size, args.iters)
    line = f"{name:36s} {rate:9.1f} batches/s  ({1e3 / rate:.2f} ms/batch)"
    if args.step_time_s:
      line += f"  = {100 / rate / args.step_time_s:.2f}% of a {args.step_time_s}s step"
    print(line)


if __name__ == "__main__":
  main()
