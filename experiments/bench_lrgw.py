r"""ott's low-rank GW (`LRGromovWasserstein`) against the fused entropic solve, for large batches.

    python experiments/bench_lrgw.py                                  # ~3 min on 2 CPU cores
    python experiments/bench_lrgw.py --sizes 256 --ranks 8 --costs cosine --repeats 1

Does the low-rank solver (Scetbon et al. 2023: the coupling constrained to rank r, each iteration
``O(n r (r + d))`` on factored costs) hold the gap where the entropic solve gets expensive
(batches of 256-1024)? On structured decoder batches (x = the 10-d rotated factor codes, y =
procedural Shapes3D-like 32x32x3 images / 255, `bench_gmg.structured_batch`), for each n, cost
and rank, all jitted, median of `--repeats` calls after a warm-up (whose time, compile
included, is the `compile` column):

* the fused solve (`gmg.entropic_gw_plan_with_stats` at the trainer's epsilon_0 and start, the
  codes' factors as in a train step) and ott's low-rank solver on the same mean-normalized cost
  matrices (the codes' side as a rank d + 2 `LRCGeometry`, the images' side dense);
* ``E/DST``: the GW energy of each plan (rounded onto the exact couplings) over the map's own
  distortion; the certified gap is ``DST - min(DST, E)`` (`gmg` module docstring), so a solver
  "holds the gap" when its ``E/DST`` is as low as the entropic plan's;
* ``gap/DST``: that certified gap over the distortion; ``rank``: "-" for the entropic solve.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from bench_gmg import structured_batch
from ott.geometry import geometry, low_rank
from ott.problems.quadratic import quadratic_problem
from ott.solvers.quadratic import gromov_wasserstein_lr

from gmg_jax import gmg
from gmg_jax.config import get_config
from gmg_jax.data import get_dataset

_TRAINER = get_config().regularizer.gmg


def median_time(fn: Callable[..., Any], args: tuple, repeats: int) -> tuple[float, float, Any]:
  """``(first call s, median s of `repeats` later calls, output)``."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times)), out


def entropic_plan(cost_xx, cost_yy, factors_xx, epsilon_0: float) -> jax.Array:
  epsilon = gmg.scaled_epsilon(cost_xx, cost_yy, epsilon_0)
  return gmg.entropic_gw_plan_with_stats(
    cost_xx, cost_yy, epsilon, init=_TRAINER.init, factors_xx=factors_xx
  )[0]


def low_rank_plan(cost_xx, cost_yy, factors_xx, key, *, rank: int, **solver_kwargs) -> jax.Array:
  scale_x, scale_y = jnp.mean(cost_xx), jnp.mean(cost_yy)
  geom_xx = low_rank.LRCGeometry(cost_1=factors_xx.left / scale_x, cost_2=factors_xx.right)
  problem = quadratic_problem.QuadraticProblem(
    geom_xx, geometry.Geometry(cost_matrix=cost_yy / scale_y)
  )
  solver = gromov_wasserstein_lr.LRGromovWasserstein(rank=rank, **solver_kwargs)
  return gmg.round_to_coupling(solver(problem, rng=key).matrix)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
  parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32])
  parser.add_argument("--costs", nargs="+", default=["cosine", "scaled_sqeuclidean"])
  parser.add_argument("--lr_epsilon", type=float, default=0.0, help="ott's default: 0")
  parser.add_argument(
    "--lr_iterations",
    type=int,
    nargs=3,
    default=[10_000, 100_000, 2_000],
    metavar=("MIN", "MAX", "INNER"),
    help="min_iterations, max_iterations, inner_iterations (ott's defaults)",
  )
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  names = ("min_iterations", "max_iterations", "inner_iterations")
  lr_kwargs = dict(zip(names, args.lr_iterations, strict=True), epsilon=args.lr_epsilon)
  print(f"jax {jax.__version__}, device {jax.devices()[0].platform}, low-rank solver: {lr_kwargs}")
  dataset = get_dataset(
    ml_collections.ConfigDict(
      dict(name="shapes3d_procedural", source="files", data_dir="", image_size=32)
    )
  )
  print(
    f"{'cost':>18s} {'n':>5s} {'rank':>4s} {'compile':>7s} {'ms':>9s} {'E/DST':>7s} {'gap/DST':>7s}"
  )
  for n in args.sizes:
    images, codes = structured_batch(jax.random.key(args.seed), n, dataset)
    for cost in args.costs:
      cost_xx, cost_yy = gmg.cost_matrix(codes, cost), gmg.cost_matrix(images, cost)
      factors_xx = gmg.cost_factors(codes, cost)
      dst = float(gmg.distortion(cost_xx, cost_yy))
      runs = {"-": (jax.jit(entropic_plan, static_argnums=3), (_TRAINER.epsilon_0,))}
      for rank in args.ranks:
        fn = jax.jit(functools.partial(low_rank_plan, rank=rank, **lr_kwargs))
        runs[str(rank)] = (fn, (jax.random.key(args.seed),))
      for rank, (fn, extra) in runs.items():
        first, median, plan = median_time(fn, (cost_xx, cost_yy, factors_xx, *extra), args.repeats)
        energy = float(gmg.gw_energy(cost_xx, cost_yy, plan))
        print(
          f"{cost:>18s} {n:5d} {rank:>4s} {first:7.1f} {1e3 * median:9.1f} "
          f"{energy / dst:7.3f} {(dst - min(dst, energy)) / dst:7.3f}",
          flush=True,
        )


if __name__ == "__main__":
  main()
