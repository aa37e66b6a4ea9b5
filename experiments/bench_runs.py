"""Runs/hour of one K-run program (`--config.num_seeds=K`) against K separate runs, side by side.

  python experiments/bench_runs.py                                  # 32x32 MLP, batch 64
  python experiments/bench_runs.py --setting=conv64 --ks=1,2,4 --steps=5
  python experiments/bench_runs.py --evaluation --ks=8             # a K-run's evaluation

For each regularizer and K, the K-run step (`train_step.make_train_step(..., replicas=...)`,
the step the trainer runs for `num_seeds=K`) and the single-run step are compiled and timed in
this process, in turn, each in blocks of `--block` consecutive steps, as a run executes them (its
state stays in the caches between its steps; a 32x32 MLP run's parameters, gradient and Adam
moments, 27 MB, fit this CPU's 32 MB L3, K of them do not), so that load from other processes
hits all of them alike. The first step of each block, which re-warms the caches the other
programs used, is not counted (stepping one step of each program in turn made every single step
pay that: 15-23 ms against 10 ms in blocks; experiments/results/bench_runs/). Reported:

* step ratio: K x (single step time) / (K-run step time), the steady-state throughput gain;
* runs/hour for a run of `--run_steps` steps, counting what each side pays once per process:
  K separate runs pay K x (process start + compilation + steps), one program pays one start,
  its own compilation and its steps. The process start (python, jax and gmg_jax imports) is
  measured here in a subprocess; evaluation is left out.

`--evaluation` times instead a K-run's evaluation at the config's sizes (10,000 + 5,000 points a
replica, `--eval_metrics`, no pictures): every replica scored on its own
(`evaluation.evaluate_and_write`, one after another, as separate runs do) against
`evaluation.evaluate_runs` of the K-run (the replicas' points encoded together), side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import studies  # experiments/ is not a package: the script's own directory.

from gmg_jax import data, evaluation, replicas, train_step
from gmg_jax.config import get_config

_MODEL = ("data.image_size", "model.arch", "model.mlp_hidden", "train.batch_size")
SETTINGS = {
  # The studies' setting (experiments/studies.py CPU32): its data, model and batch.
  "mlp32": {key: studies.CPU32[key] for key in _MODEL},
  # The paper's architecture at 64x64.
  "conv64": {"data.image_size": 64, "model.arch": "conv", "train.batch_size": 64},
}
REGULARIZERS = {"none": "", "dst": "dst_cos_decoder", "gmg": "gmg_cos_decoder"}


def _config(setting: str, regularizer: str, k: int):
  config = get_config(REGULARIZERS[regularizer])
  for key, value in SETTINGS[setting].items():
    section, field = key.split(".")
    config[section][field] = value
  config.num_seeds = k
  return config


def _program(config, dataset):
  """(compiled step, its arguments, compile seconds) of the config's program."""
  runs = replicas.expand(config) if replicas.is_multi(config) else None
  graphdef, state = train_step.create_train_state(config, dataset.image_shape, runs)
  step = train_step.make_train_step(graphdef, config, replicas=runs)
  extra = () if runs is None else (jax.numpy.ones(len(runs), bool),)
  start = time.perf_counter()
  compiled = step.lower(state, dataset, *extra).compile()
  return compiled, [state, dataset, *extra], time.perf_counter() - start


def _process_start() -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-c", "import jax, gmg_jax.train; jax.devices()"], check=True)
  return time.perf_counter() - start


def _time_evaluation(setting: str, k: int, metrics: tuple[str, ...], repeats: int) -> None:
  """Prints the seconds of K replicas' evaluation, one by one and encoded together."""
  config = _config(setting, "none", k)
  config.eval.metrics, config.eval.pictures = metrics, False
  runs = replicas.expand(config)
  dataset = data.get_dataset(config.data)
  graphdef, state = train_step.create_train_state(config, dataset.image_shape, runs)
  with tempfile.TemporaryDirectory() as root:

    def alone():
      for r in runs:
        own = replicas.take(state, r.index)
        evaluation.evaluate_and_write(r.config, os.path.join(root, r.name), graphdef, own, dataset)

    def together():
      due = [(r.index, r.config, os.path.join(root, r.name)) for r in runs]
      evaluation.evaluate_runs(replicas.program(config), due, graphdef, state, dataset)

    times = {"one by one": [], "together": []}
    for fn in (alone, together):  # Compilation and caches.
      fn()
    for _ in range(repeats):
      for name, fn in (("one by one", alone), ("together", together)):
        begin = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - begin)
  alone_s, together_s = (float(np.median(times[n])) for n in ("one by one", "together"))
  print(
    f"| {setting} | {k} | {','.join(metrics)} | {alone_s:.2f} | {together_s:.2f} | "
    f"{alone_s / together_s:.2f}x |",
    flush=True,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--setting", default="mlp32", choices=sorted(SETTINGS))
  parser.add_argument("--regularizers", default="none,dst,gmg")
  parser.add_argument("--ks", default="1,2,4,8")
  parser.add_argument("--steps", type=int, default=20, help="timed steps per program")
  parser.add_argument("--block", type=int, default=5, help="consecutive steps of a program")
  parser.add_argument("--run_steps", type=int, default=2000, help="steps of one run, for runs/hour")
  parser.add_argument("--evaluation", action="store_true", help="time a K-run's evaluation")
  parser.add_argument("--eval_metrics", default="mig", help="metrics of --evaluation")
  parser.add_argument("--repeats", type=int, default=3, help="timed evaluations of each side")
  args = parser.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  if args.evaluation:
    print(f"device: {jax.devices()[0].device_kind}")
    print(
      "| setting | K | metrics | one by one s | together s | ratio |\n|---|---|---|---|---|---|"
    )
    for k in ks:
      _time_evaluation(args.setting, k, tuple(args.eval_metrics.split(",")), args.repeats)
    return
  if 1 not in ks:
    ks = [1, *ks]
  start_s = _process_start()
  print(f"device: {jax.devices()[0].device_kind}; process start {start_s:.2f} s", flush=True)
  print(
    "| setting | regularizer | K | single step ms | K-run step ms | step ratio | compile s "
    f"(single, K-run) | runs/hour separate | runs/hour program | ratio ({args.run_steps} steps) |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for regularizer in args.regularizers.split(","):
    dataset = data.get_dataset(_config(args.setting, regularizer, 1).data)
    programs = {k: _program(_config(args.setting, regularizer, k), dataset) for k in ks}
    for compiled, arguments, _ in programs.values():  # First steps: allocation, caches.
      arguments[0], _ = compiled(*arguments)
    times = {k: [] for k in ks}
    block = min(args.block, args.steps)
    for _ in range(-(-args.steps // block)):
      for k, (compiled, arguments, _) in programs.items():
        for counted in [False] + [True] * block:
          begin = time.perf_counter()
          arguments[0], metrics = compiled(*arguments)
          jax.block_until_ready(metrics)
          if counted:
            times[k].append(time.perf_counter() - begin)
    single = float(np.median(times[1]))
    single_compile = programs[1][2]
    separate_hour = 3600 / (start_s + single_compile + args.run_steps * single)
    for k in ks:
      step_k, compile_k = float(np.median(times[k])), programs[k][2]
      program_hour = 3600 * k / (start_s + compile_k + args.run_steps * step_k)
      print(
        f"| {args.setting} | {regularizer} | {k} | {1e3 * single:.1f} | {1e3 * step_k:.1f} | "
        f"{k * single / step_k:.2f}x | {single_compile:.1f}, {compile_k:.1f} | "
        f"{separate_hour:.0f} | {program_hour:.0f} | {program_hour / separate_hour:.2f}x |",
        flush=True,
      )


if __name__ == "__main__":
  main()
