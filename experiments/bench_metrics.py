"""Exact vs fast disentanglement metrics, side by side on the same codes.

10,000 training and 5,000 test codes (10 dims, 6 factors with Shapes3D's sizes) of a
partly disentangled synthetic representation: six noisy factor dims, two of them mixed, and
four noise dims. Prints each metric's time in both modes, the speed-up, and the values.
Modularity and explicitness (one metric in `gmg_jax.metrics`, `modularity_explicitness`) are
timed apart. DCI's exact mode also runs with a second seed: its values move with the seed (the
seed breaks ties between equally good splits), which puts the fast mode's deviation in scale.

Timing: the fast mode runs once cold (first call: imports, caches), then `--repeats` times;
its best time is reported. The exact mode runs `--repeats` times too, except DCI (minutes),
which runs once. BLAS/OpenMP pools are limited to `--threads` threads for both modes: on a
small shared CPU, idle-spinning thread pools made sklearn's logistic regressions 10x slower.

    python experiments/bench_metrics.py [--num_train=10000] [--num_test=5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import threadpoolctl

from gmg_jax import metrics

FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


def make_codes(rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray]:
  """Codes [num, 10] and factors [num, 6] of a partly disentangled representation."""
  factors = np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES], axis=1)
  signal = factors / np.array(FACTOR_SIZES) + 0.05 * rng.standard_normal((num, 6))
  signal[:, 0] += 0.5 * signal[:, 1]  # one code mixes two factors
  codes = np.concatenate([signal, rng.standard_normal((num, 4))], axis=1)
  return codes.astype(np.float32), factors.astype(np.int32)


def _best_time(run, repeats: int) -> tuple[float, dict]:
  best, values = np.inf, None
  for _ in range(repeats):
    start = time.perf_counter()
    values = run()
    best = min(best, time.perf_counter() - start)
  return best, values


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_train", type=int, default=10000)
  parser.add_argument("--num_test", type=int, default=5000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=1)
  parser.add_argument("--metrics", default="dci,mig,sap,modularity,explicitness")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  train, test = make_codes(rng, args.num_train), make_codes(rng, args.num_test)
  runs = {
    "dci": lambda mode: metrics.dci(*train, *test, mode=mode),
    "mig": lambda mode: metrics.mig(*train, mode=mode),
    "sap": lambda mode: metrics.sap(*train, *test, mode=mode),
    # The two halves of `modularity_explicitness`, timed apart: modularity is histogram MI,
    # explicitness a logistic regression per factor.
    "modularity": lambda mode: {
      "modularity_score": metrics.modularity(
        metrics.discrete_mutual_info(
          metrics.histogram_discretize(train[0], 20, mode=mode), train[1], mode=mode
        )
      )
    },
    "explicitness": lambda mode: dict(
      zip(
        ("explicitness_score_train", "explicitness_score_test"),
        (float(np.mean(s)) for s in metrics.explicitness(*train, *test, mode=mode)),
        strict=True,
      )
    ),
  }
  totals = {"exact": 0.0, "fast": 0.0, "fast (cold)": 0.0}
  print(f"{'metric':<26}{'key':<26}{'exact':>9}{'fast':>9}{'|diff|':>9}")
  with threadpoolctl.threadpool_limits(limits=args.threads):
    for name in args.metrics.split(","):
      run = runs[name]
      times = {}
      repeats = 1 if name == "dci" else args.repeats
      times["exact"], exact_values = _best_time(lambda r=run: r("exact"), repeats)
      times["fast (cold)"], _ = _best_time(lambda r=run: r("fast"), 1)
      times["fast"], values = _best_time(lambda r=run: r("fast"), args.repeats)
      for key, value in exact_values.items():
        diff = abs(value - values[key])
        print(f"{name:<26}{key:<26}{value:9.4f}{values[key]:9.4f}{diff:9.4f}")
      if name == "dci":
        other_seed = metrics.dci(*train, *test, random_state=1)
        for key, value in exact_values.items():
          diff = abs(value - other_seed[key])
          print(
            f"{name:<26}{key:<26}{value:9.4f}{other_seed[key]:9.4f}{diff:9.4f}"
            "  (exact, seed 0 vs seed 1)"
          )
      print(
        f"{name:<26}{'time [s]':<26}{times['exact']:9.3f}{times['fast']:9.3f}"
        f"   x{times['exact'] / times['fast']:.1f} faster"
        f" (cold fast: {times['fast (cold)']:.3f}s)",
        flush=True,
      )
      for label in totals:
        totals[label] += times[label]
  print(
    f"total: exact {totals['exact']:.1f}s, fast {totals['fast']:.1f}s "
    f"(cold {totals['fast (cold)']:.1f}s), x{totals['exact'] / totals['fast']:.1f} faster"
  )


if __name__ == "__main__":
  main()
