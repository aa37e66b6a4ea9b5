r"""Data-parallel scaling: step time and examples/s against batch size and device count.

    python experiments/bench_scaling.py                          # default (~6 min, 2 CPU cores)
    python experiments/bench_scaling.py --devices 1,4 --batch_sizes 64,256 --steps 2   # ~1 min

For each device count in `--devices` one subprocess starts with JAX_NUM_CPU_DEVICES set (the
count is fixed when JAX starts) and, for every batch size in `--batch_sizes` and every mode,
times the trainer's own jitted data-parallel step (`train.make_train_step(graphdef, config,
mesh)`, state replicated, the batch drawn inside the step and sharded):

  plain       the beta-VAE alone;
  gmg_global  + GMG on the decoder, one GW problem on the whole global batch;
  gmg_local   + GMG on the decoder, one GW problem per device sub-batch (B / devices points).

Columns: median ms per step over `--steps` timed steps (after one warm-up step, whose time with
the compile is `compile_s`), examples/s, the ratio to plain at the same batch and devices, and the
mean outer GW iterations of the timed steps (GMG work depends on the batch, not only its size).
Fake CPU devices share the same cores, so on a CPU more devices cannot be faster: read the
device columns as partitioning overhead; on a GPU or TPU host (JAX_NUM_CPU_DEVICES is then
ignored; run it with `--devices` equal to the real count) they measure scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from gmg_jax.config import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {"plain": None, "gmg_global": "global", "gmg_local": "local"}


def _config(args: argparse.Namespace, mode: str, batch_size: int):
  variants = "runlocal" + (",gmg_cos_decoder" if MODES[mode] else "")
  config = get_config(variants)
  config.data.image_size = args.image_size
  config.model.arch = args.arch
  config.train.batch_size = batch_size
  if MODES[mode]:
    config.regularizer.scope = MODES[mode]
  return config


def _worker(args: argparse.Namespace) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from gmg_jax import data, sharding, train

  mesh = sharding.make_mesh()
  # Every cell starts from the same replicated state (one init compile; steps donate a copy).
  config = _config(args, "plain", args.batch_sizes[0])
  dataset = sharding.replicate(data.get_dataset(config.data), mesh)
  graphdef, initial = train.create_train_state(config, dataset.image_shape)
  initial = sharding.replicate(initial, mesh)
  for batch_size in args.batch_sizes:
    for mode in args.modes:
      config = _config(args, mode, batch_size)
      state = jax.tree.map(jnp.copy, initial)
      step = train.make_train_step(graphdef, config, mesh)
      start = time.perf_counter()
      state, metrics = step(state, dataset)
      jax.block_until_ready(metrics)
      compile_s = time.perf_counter() - start
      times, iterations = [], []
      for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, dataset)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        iterations.append(float(metrics.get("regularizer/gmg_iterations", np.nan)))
      print(
        json.dumps(
          {
            "devices": jax.device_count(),
            "batch": batch_size,
            "mode": mode,
            "ms": 1e3 * float(np.median(times)),
            "compile_s": compile_s,
            "gw_iters": float(np.mean(iterations)),
          }
        ),
        flush=True,
      )


def _table(rows: list[dict]) -> str:
  plain = {(r["devices"], r["batch"]): r["ms"] for r in rows if r["mode"] == "plain"}
  lines = [
    f"{'mode':<11}{'batch':>6}{'devices':>8}{'ms/step':>10}{'examples/s':>12}"
    f"{'x plain':>9}{'gw_iters':>10}{'compile_s':>11}"
  ]
  for r in sorted(rows, key=lambda r: (list(MODES).index(r["mode"]), r["batch"], r["devices"])):
    ratio = (
      r["ms"] / plain[(r["devices"], r["batch"])]
      if (r["devices"], r["batch"]) in plain
      else float("nan")
    )
    lines.append(
      f"{r['mode']:<11}{r['batch']:>6}{r['devices']:>8}{r['ms']:>10.1f}"
      f"{1e3 * r['batch'] / r['ms']:>12.0f}{ratio:>9.2f}{r['gw_iters']:>10.1f}"
      f"{r['compile_s']:>11.1f}"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
  parser.add_argument("--devices", type=ints, default=[1, 2, 4])
  parser.add_argument("--batch_sizes", type=ints, default=[64, 256, 1024])
  parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
  parser.add_argument("--steps", type=int, default=3, help="Timed steps per cell.")
  parser.add_argument("--arch", default="mlp", help="mlp (runlocal) or conv (dlib).")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
    return
  rows = []
  for devices in args.devices:
    argv = [
      f"--batch_sizes={','.join(map(str, args.batch_sizes))}",
      f"--modes={','.join(args.modes)}",
      f"--steps={args.steps}",
      f"--arch={args.arch}",
      f"--image_size={args.image_size}",
    ]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices)}
    proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--worker", *argv],
      env=env,
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=False,
    )
    if proc.returncode:
      sys.exit(f"{devices} devices failed:\n{proc.stderr[-3000:]}")
    rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print(f"done: {devices} device(s)", file=sys.stderr, flush=True)
  print(_table(rows))


if __name__ == "__main__":
  main()
