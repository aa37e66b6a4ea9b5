"""Train-step time of beta-VAE with each regularizer, measured side by side in one run.

  python experiments/bench_step.py                      # 64x64x3 conv VAE, batch 64
  python experiments/bench_step.py --arch=mlp --image_size=32 --learning_rate=1e-3 \
      --warmup=300 --steps=30 --variants=none,dst_cos_decoder,gmg_cos_decoder \
      --solvers=fused,ott                                 # the cpu32 setting, after 300 steps

Each variant is the full jitted train step (data drawn on the device, loss, gradients, Adam
update, non-finite guard) on the procedural Shapes3D-like set, with the config's defaults
(GMG: epsilon_0 0.03, product start) unless `--epsilon_0` is given. Every GMG variant runs once
per GW solver in `--solvers` (`gmg_cos_decoder[ott]`, ...). Each variant first trains
`--warmup` untimed steps (the GW solve needs more iterations once the networks have trained than
at initialization). Variants are timed round-robin (one step of each in turn, repeated) so that
load from other processes hits all of them alike; the table reports the median step time, its
ratio to the plain beta-VAE step (the first variant), the setup time (compile and warm-up), and
for GMG the mean outer GW and Sinkhorn iterations and the fraction of converged solves over the
timed steps.
"""

import argparse
import time

import jax
import numpy as np

from gmg_jax import data, train
from gmg_jax.config import get_config

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


def _setup(variant: str, solver: str | None, args: argparse.Namespace):
  config = get_config("" if variant == "none" else variant)
  config.data.image_size = args.image_size
  config.train.batch_size = args.batch_size
  config.model.arch = args.arch
  if args.learning_rate is not None:
    config.optim.learning_rate = args.learning_rate
  if args.epsilon_0 is not None:
    config.regularizer.gmg.epsilon_0 = args.epsilon_0
  if solver is not None:
    config.regularizer.gmg.solver = solver
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  step = train.make_train_step(graphdef, config)
  return step, state, dataset


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="conv", choices=["conv", "mlp"])
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
  parser.add_argument(
    "--warmup", type=int, default=0, help="untimed training steps per variant before timing"
  )
  parser.add_argument("--learning_rate", type=float, default=None, help="default: the config's")
  parser.add_argument("--epsilon_0", type=float, default=None, help="default: the config's")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--solvers", default="fused", help="GW solvers timed per GMG variant")
  args = parser.parse_args()
  runs = {}
  for variant in args.variants.split(","):
    solvers = args.solvers.split(",") if variant.startswith("gmg") else [None]
    for solver in solvers:
      name = variant if solver is None else f"{variant}[{solver}]"
      step, state, dataset = _setup(variant, solver, args)
      t0 = time.perf_counter()
      state, metrics = step(state, dataset)  # compile + first step
      for _ in range(args.warmup):
        state, metrics = step(state, dataset)
      jax.block_until_ready(metrics)
      runs[name] = dict(step=step, state=state, dataset=dataset, times=[], metrics=[])
      runs[name]["compile"] = time.perf_counter() - t0
  for _ in range(args.steps):
    for run in runs.values():
      t0 = time.perf_counter()
      run["state"], metrics = run["step"](run["state"], run["dataset"])
      jax.block_until_ready(run["state"])
      run["times"].append(time.perf_counter() - t0)
      run["metrics"].append(metrics)

  names = list(runs)
  base = np.median(runs[names[0]]["times"])
  print(
    f"device: {jax.devices()[0].device_kind}, {args.arch} {args.image_size}x{args.image_size}x3, "
    f"batch {args.batch_size}, epsilon_0 "
    f"{'config default' if args.epsilon_0 is None else args.epsilon_0}, "
    f"{args.steps} timed steps each, round-robin"
  )
  print(
    f"{'variant':<26} {'median ms':>9} {'ratio':>6} {'setup s':>9}  GW outer / Sinkhorn / converged"
  )
  for name in names:
    run = runs[name]
    med = np.median(run["times"])
    gw = ""
    if "regularizer/gmg_iterations" in run["metrics"][0]:
      outer = np.mean([float(m["regularizer/gmg_iterations"]) for m in run["metrics"]])
      inner = np.mean([float(m["regularizer/gmg_sinkhorn_iterations"]) for m in run["metrics"]])
      conv = np.mean([float(m["regularizer/gmg_converged"]) for m in run["metrics"]])
      gw = f"{outer:.1f} / {inner:.0f} / {conv:.2f}"
    print(f"{name:<26} {1e3 * med:9.1f} {med / base:6.2f} {run['compile']:9.1f}  {gw}")


if __name__ == "__main__":
  main()
