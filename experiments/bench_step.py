"""Train-step time of beta-VAE with each regularizer, measured side by side in one run.

  python experiments/bench_step.py                      # 64x64x3 conv VAE, batch 64
  python experiments/bench_step.py --image_size=32 --steps=5 --variants=none,gmg_cos_decoder

Each variant is the full jitted train step (data drawn on the device, loss, gradients, Adam
update, non-finite guard) on the procedural Shapes3D-like set. Variants are timed round-robin
(one step of each in turn, repeated) so that load from other processes hits all of them alike;
the table reports the median step time and its ratio to the plain beta-VAE step.
"""

import argparse
import time

import jax
import numpy as np

from gmg_jax import data, train  # noqa: E402
from gmg_jax.config import get_config  # noqa: E402

VARIANTS = (
  "none",
  "dst_cos_decoder",
  "gmg_cos_decoder",
  "gmg_scl2_decoder",
  "gmg_l2_decoder",
  "gmg_cos_encoder",
  "gmg_scl2_encoder",
  "gmg_l2_encoder",
  "jacobian_decoder",
)


def _setup(variant: str, args: argparse.Namespace):
  config = get_config("" if variant == "none" else variant)
  config.data.image_size = args.image_size
  config.train.batch_size = args.batch_size
  config.regularizer.gmg.epsilon_0 = args.epsilon_0
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  step = train.make_train_step(graphdef, config)
  return step, state, dataset


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
  parser.add_argument("--epsilon_0", type=float, default=0.01)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  args = parser.parse_args()
  variants = args.variants.split(",")

  runs = {}
  for v in variants:
    step, state, dataset = _setup(v, args)
    t0 = time.perf_counter()
    state, metrics = step(state, dataset)  # compile + first step
    jax.block_until_ready(metrics)
    runs[v] = [step, state, dataset, [], time.perf_counter() - t0, metrics]
  for _ in range(args.steps):
    for v in variants:
      step, state, dataset, times, _, _ = runs[v]
      t0 = time.perf_counter()
      state, metrics = step(state, dataset)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - t0)
      runs[v][1], runs[v][5] = state, metrics

  base = np.median(runs[variants[0]][3])
  print(
    f"device: {jax.devices()[0].device_kind}, image {args.image_size}x{args.image_size}x3, "
    f"batch {args.batch_size}, epsilon_0 {args.epsilon_0}, {args.steps} timed steps each"
  )
  print(f"{'variant':<20} {'median s':>9} {'ratio':>6} {'compile s':>9}  GW iters / converged")
  for v in variants:
    _, _, _, times, compile_s, metrics = runs[v]
    med = np.median(times)
    gw = ""
    if "regularizer/gmg_iterations" in metrics:
      gw = (
        f"{float(metrics['regularizer/gmg_iterations']):.0f} / "
        f"{bool(metrics['regularizer/gmg_converged'])}"
      )
    print(f"{v:<20} {med:9.3f} {med / base:6.2f} {compile_s:9.1f}  {gw}")


if __name__ == "__main__":
  main()
