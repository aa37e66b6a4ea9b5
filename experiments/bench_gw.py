r"""Where a GMG value + gradient spends its time, per GW solver, and the solvers under vmap.

    python experiments/bench_gw.py                      # ~3 min on 2 CPU cores
    python experiments/bench_gw.py --sizes 64 --image_sizes 32 --settings default --vmap_k 0

Table 1 (profile): on structured batches (procedural Shapes3D-like images / 255, their rotated
noisy factor codes, `bench_gmg.structured_batch`), for each image size, n, direction ("dec":
x = code, y = image; "enc": x = image, y = code), solver setting and solver, all jitted, median
of `--repeats` calls after a warm-up:

* ``costs_ms``: value + gradient of the plain distortion (both cost matrices and their backward
  pass): the part of a GMG step that is not the GW solve.
* ``solve_ms``: `gmg.entropic_gw_plan` alone on the (precomputed) cost matrices.
* ``gmg_ms``: the whole GMG value + gradient w.r.t. y (what a train step adds).
* outer / Sinkhorn iterations and ``converged`` of the solve; ``gap``: the entropic gap.

Settings: "default" = the trainer's (`gmg_jax.config`: epsilon_0 0.03, product start, since
round 2; 0.1 in the committed round-1 tables); "fn" = the function's defaults (epsilon_0 0.01,
both starts).

Table 2 (vmap): K batches of one case, the GMG value + gradient of each solved one after another
in a Python loop (one jitted call each) vs in one call vmapped over K (what a train step
vmapped over K replicas does), per solver.

All times are medians over repeats measured side by side in one run; read ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from bench_gmg import structured_batch

from gmg_jax import gmg
from gmg_jax.config import get_config
from gmg_jax.data import get_dataset

_TRAINER = get_config().regularizer.gmg
SETTINGS = {
  "default": dict(epsilon_0=_TRAINER.epsilon_0, init=_TRAINER.init),
  "fn": dict(epsilon_0=0.01, init="both"),
}


def median_time(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> tuple[float, Any]:
  """Median seconds of `repeats` calls after one warm-up call, and the last output."""
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out


def gmg_value_and_grad(cost: str, **kwargs: Any) -> Callable[..., Any]:
  """Unjitted ``(x, y) -> ((gap, info), d gap / d y)``."""

  def loss(y: jax.Array, x: jax.Array) -> tuple[jax.Array, Any]:
    return gmg.gromov_monge_gap(x, y, cost=cost, **kwargs)

  return lambda x, y: jax.value_and_grad(loss, has_aux=True)(y, x)


def batch(dataset: Any, key: jax.Array, n: int, direction: str) -> tuple[jax.Array, jax.Array]:
  images, codes = structured_batch(key, n, dataset)
  return (codes, images) if direction == "dec" else (images, codes)


def table_profile(args: argparse.Namespace) -> None:
  print(
    f"\n== Table 1: GMG value+grad profile, cost={args.cost}, structured batches "
    f"(median of {args.repeats})"
  )
  print(
    f"{'image':>5s} {'n':>4s} {'dir':>3s} {'setting':>7s} {'solver':>6s} {'costs_ms':>8s} "
    f"{'solve_ms':>8s} {'gmg_ms':>8s} {'gmg/costs':>9s} {'outer':>5s} {'sinkhorn':>8s} "
    f"{'conv':>5s} {'gap':>11s}"
  )
  for image_size in args.image_sizes:
    dataset = get_dataset(
      ml_collections.ConfigDict(
        dict(name="shapes3d_procedural", source="files", data_dir="", image_size=image_size)
      )
    )
    for n in args.sizes:
      for direction in args.directions:
        x, y = batch(dataset, jax.random.key(args.seed), n, direction)

        def dst(y, x):
          return gmg.distortion(gmg.cost_matrix(x, args.cost), gmg.cost_matrix(y, args.cost))

        costs_s, _ = median_time(jax.jit(jax.value_and_grad(dst)), (y, x), args.repeats)
        cost_xx, cost_yy = gmg.cost_matrix(x, args.cost), gmg.cost_matrix(y, args.cost)
        for setting in args.settings:
          kwargs = SETTINGS[setting]
          for solver in args.solvers:
            epsilon = gmg.scaled_epsilon(cost_xx, cost_yy, kwargs["epsilon_0"])
            plan_fn = jax.jit(
              lambda cx, cy, e, fx, fy, solver=solver, init=kwargs["init"]: gmg.entropic_gw_plan(
                cx, cy, e, init=init, solver=solver, factors_xx=fx, factors_yy=fy
              )
            )
            # The factors of a low-rank side, as `gmg.gromov_monge_gap` passes them.
            factors = (gmg.solver_factors(x, args.cost), gmg.solver_factors(y, args.cost))
            solve_s, _ = median_time(plan_fn, (cost_xx, cost_yy, epsilon, *factors), args.repeats)
            fn = jax.jit(gmg_value_and_grad(args.cost, solver=solver, **kwargs))
            gmg_s, ((gap, info), _) = median_time(fn, (x, y), args.repeats)
            print(
              f"{image_size:5d} {n:4d} {direction:>3s} {setting:>7s} {solver:>6s} "
              f"{1e3 * costs_s:8.2f} {1e3 * solve_s:8.2f} {1e3 * gmg_s:8.2f} "
              f"{gmg_s / costs_s:9.1f} {int(info.iterations):5d} "
              f"{int(info.sinkhorn_iterations):8d} {str(bool(info.converged)):>5s} "
              f"{float(gap):11.4g}",
              flush=True,
            )


def table_vmap(args: argparse.Namespace) -> None:
  k, n = args.vmap_k, args.vmap_n
  dataset = get_dataset(
    ml_collections.ConfigDict(
      dict(name="shapes3d_procedural", source="files", data_dir="", image_size=args.vmap_image)
    )
  )
  keys = jax.random.split(jax.random.key(args.seed + 1), k)
  xs, ys = zip(*(batch(dataset, key, n, "dec") for key in keys), strict=True)
  xk, yk = jnp.stack(xs), jnp.stack(ys)
  print(
    f"\n== Table 2: K={k} GMG value+grads, n={n}, dec, {args.vmap_image}x{args.vmap_image}x3, "
    f"cost={args.cost}: one after another vs one vmapped call (median of {args.repeats})"
  )
  print(
    f"{'setting':>7s} {'solver':>6s} {'one_ms':>7s} {'seq_ms':>7s} {'vmap_ms':>7s} "
    f"{'vmap/seq':>8s} {'outer (each)':>24s}"
  )
  for setting in args.settings:
    for solver in args.solvers:
      fn = gmg_value_and_grad(args.cost, solver=solver, **SETTINGS[setting])
      one = jax.jit(fn)
      one_s, _ = median_time(one, (xs[0], ys[0]), args.repeats)

      def sequential(xs=xs, ys=ys, one=one):
        return [one(x, y) for x, y in zip(xs, ys, strict=True)]

      seq_s, _ = median_time(sequential, (), args.repeats)
      vmap_s, ((_, info), _) = median_time(jax.jit(jax.vmap(fn)), (xk, yk), args.repeats)
      outer = ",".join(str(int(i)) for i in info.iterations)
      print(
        f"{setting:>7s} {solver:>6s} {1e3 * one_s:7.2f} {1e3 * seq_s:7.2f} "
        f"{1e3 * vmap_s:7.2f} {vmap_s / seq_s:8.2f} {outer:>24s}",
        flush=True,
      )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cost", default="cosine", choices=sorted(gmg.COSTS))
  parser.add_argument("--sizes", type=int, nargs="*", default=[64, 256], help="none skips table 1")
  parser.add_argument("--image_sizes", type=int, nargs="+", default=[32, 64])
  parser.add_argument("--directions", nargs="+", default=["dec", "enc"], choices=["dec", "enc"])
  parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
  parser.add_argument("--solvers", nargs="+", default=list(gmg.SOLVERS), choices=gmg.SOLVERS)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--vmap_k", type=int, default=8, help="0 skips table 2")
  parser.add_argument("--vmap_n", type=int, default=64)
  parser.add_argument("--vmap_image", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, device {jax.devices()[0].device_kind}")
  start = time.perf_counter()
  if args.sizes:
    table_profile(args)
  if args.vmap_k:
    table_vmap(args)
  print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
