"""Exact vs fast disentanglement metrics, side by side on the same codes.

10,000 training and 5,000 test codes (10 dims, 6 factors with Shapes3D's sizes) of a
partly disentangled synthetic representation: six noisy factor dims, two of them mixed, and
four noise dims. Prints each metric's time in both modes, the speed-up, and the values.
The fast mode is timed twice: the first call includes JAX compilation.

    python experiments/bench_metrics.py [--num_train=10000] [--num_test=5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gmg_jax import metrics

FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


def make_codes(rng: np.random.Generator, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes [num, 10] and factors [num, 6] of a partly disentangled representation."""
    factors = np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES], axis=1)
    signal = factors / np.array(FACTOR_SIZES) + 0.05 * rng.standard_normal((num, 6))
    signal[:, 0] += 0.5 * signal[:, 1]  # one code mixes two factors
    codes = np.concatenate([signal, rng.standard_normal((num, 4))], axis=1)
    return codes.astype(np.float32), factors.astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train", type=int, default=10000)
    parser.add_argument("--num_test", type=int, default=5000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train, test = make_codes(rng, args.num_train), make_codes(rng, args.num_test)
    runs = {
        "dci": lambda mode: metrics.dci(*train, *test, mode=mode),
        "mig": lambda mode: metrics.mig(*train, mode=mode),
        "sap": lambda mode: metrics.sap(*train, *test, mode=mode),
        "modularity_explicitness": lambda mode: metrics.modularity_explicitness(
            *train, *test, mode=mode
        ),
    }
    totals = {"exact": 0.0, "fast": 0.0, "fast (cold)": 0.0}
    print(f"{'metric':<26}{'key':<26}{'exact':>9}{'fast':>9}{'|diff|':>9}")
    for name, run in runs.items():
        times = {}
        for label, mode in (("exact", "exact"), ("fast (cold)", "fast"), ("fast", "fast")):
            start = time.perf_counter()
            values = run(mode)
            times[label] = time.perf_counter() - start
            if label == "exact":
                exact_values = values
        for key, value in exact_values.items():
            diff = abs(value - values[key])
            print(f"{name:<26}{key:<26}{value:9.4f}{values[key]:9.4f}{diff:9.4f}")
        print(
            f"{name:<26}{'time [s]':<26}{times['exact']:9.2f}{times['fast']:9.2f}"
            f"   x{times['exact'] / times['fast']:.1f} faster"
            f" (cold fast: {times['fast (cold)']:.2f}s)"
        )
        for label in totals:
            totals[label] += times[label]
    print(
        f"total: exact {totals['exact']:.1f}s, fast {totals['fast']:.1f}s "
        f"(cold {totals['fast (cold)']:.1f}s), x{totals['exact'] / totals['fast']:.1f} faster"
    )


if __name__ == "__main__":
    main()
