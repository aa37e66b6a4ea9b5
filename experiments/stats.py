"""Statistics of paired seed studies: intervals that hold their level, Holm's adjustment, power.

Every comparison in `experiments/` pairs two arms by seed (arm A's run with seed s against arm
B's run with seed s) and asks about the mean paired difference A - B. This module is the one
place that turns such differences into an interval, a p-value, a family-wise adjustment, a seed
count and the smallest effect a study could have seen; it is built on `scipy.stats`:

* `paired(a, b, method="t")`: the paired t interval and test (`scipy.stats.ttest_rel`). At
  n = 10 it covers the mean at its level on normal and mildly skewed differences, where the
  percentile bootstrap covers ~90% (~74% at n = 3; `tests/test_stats.py` simulates both).
* `paired(a, b, method="bca")`: the BCa bootstrap interval (`scipy.stats.bootstrap`), with the
  sign-flip test's p-value (a bootstrap has no test of its own).
* `paired(a, b, method="sign_flip")`: the sign-flip permutation test of the mean
  (`scipy.stats.permutation_test`, permutation_type="samples" on the differences), exact up to
  `EXACT_SIGN_FLIP_PAIRS` pairs (all 2^n sign patterns), Monte Carlo beyond; no interval.
* `holm(pvalues)`: Holm's step-down adjustment of a declared family, in the input order.
* `t_power(n, sd, effect)`: the two-sided paired t test's power, from the noncentral t
  distribution (`scipy.stats.nct`); `seeds_needed(sd, effect)` and `detectable_effect(sd, n)`
  solve it for n or for the effect.

    import stats
    result = stats.paired(gmg_dci, beta_vae_dci)          # arrays paired by position (seed)
    result.mean, result.low, result.high, result.p, result.n
    stats.holm([r.p for r in family])                     # family-wise adjusted p-values
    stats.seeds_needed(sd=0.11, effect=0.05)              # -> 40
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as sps

Method = Literal["t", "bca", "sign_flip"]
METHODS = ("t", "bca", "sign_flip")
# Up to this many pairs the sign-flip test enumerates all 2^n sign patterns (65,536 at 16).
EXACT_SIGN_FLIP_PAIRS = 16
# Resamples of the BCa bootstrap and of the Monte Carlo sign-flip test.
NUM_RESAMPLES = 10_000


@dataclasses.dataclass(frozen=True)
class Paired:
  """The mean paired difference A - B with its interval and two-sided p-value.

  Attributes:
    mean: mean of the n differences.
    low: lower end of the `confidence` interval (NaN where the method gives none, or n < 2).
    high: upper end.
    p: two-sided p-value of "mean difference = 0" (NaN for n < 2).
    n: number of pairs.
    sd: sample standard deviation of the differences (ddof = 1; NaN for n < 2).
    method: "t", "bca" or "sign_flip".
    confidence: the interval's level.
  """

  mean: float
  low: float
  high: float
  p: float
  n: int
  sd: float
  method: str
  confidence: float


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(
      f"paired() takes two 1-D arrays of equal length (paired by position); got shapes "
      f"{a.shape} and {b.shape}."
    )
  d = a - b
  if not np.all(np.isfinite(d)):
    raise ValueError(
      f"paired() got non-finite values at positions {np.flatnonzero(~np.isfinite(d)).tolist()}; "
      "drop those pairs first."
    )
  return d


def _sign_flip_p(d: np.ndarray, seed: int) -> float:
  """Two-sided p-value of the sign-flip permutation test of mean(d) = 0."""
  if not np.any(d):
    return 1.0
  exact = d.size <= EXACT_SIGN_FLIP_PAIRS
  result = sps.permutation_test(
    (d,),
    np.mean,
    permutation_type="samples",
    n_resamples=np.inf if exact else NUM_RESAMPLES,
    alternative="two-sided",
    vectorized=True,
    rng=np.random.default_rng(seed),
  )
  return float(result.pvalue)


def paired(
  a: Sequence[float],
  b: Sequence[float],
  *,
  method: Method = "t",
  confidence: float = 0.95,
  seed: int = 0,
) -> Paired:
  """Mean paired difference ``a - b`` (arrays paired by position), interval and p-value.

  Args:
    a: [n] arm A's values.
    b: [n] arm B's values, same order (same seeds).
    method: "t" (paired t interval and test), "bca" (BCa bootstrap interval; the p-value is the
      sign-flip test's) or "sign_flip" (exact or Monte Carlo sign-flip test; no interval).
    confidence: the interval's level, in (0, 1).
    seed: seed of the resampling (BCa, Monte Carlo sign flips); the t method ignores it.

  Returns:
    The `Paired` result. With n < 2 the interval, p and sd are NaN. Differences that are all
    equal give a zero-width interval at their value (p = 1 if they are 0, else p = 0 for "t").

  Raises:
    ValueError: unknown method, confidence outside (0, 1), shapes that do not pair, or
      non-finite values.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
  d = _differences(a, b)
  n = int(d.size)
  if n == 0:
    raise ValueError("paired() needs at least one pair.")
  mean = float(np.mean(d))
  nan = math.nan
  if n < 2:
    return Paired(mean, nan, nan, nan, n, nan, method, confidence)
  sd = float(np.std(d, ddof=1))
  if sd == 0.0:
    # scipy returns NaN here; the limit of the interval is the point, and of the test 0 or 1.
    p = 1.0 if mean == 0.0 else (0.0 if method == "t" else _sign_flip_p(d, seed))
    low, high = (nan, nan) if method == "sign_flip" else (mean, mean)
    return Paired(mean, low, high, p, n, sd, method, confidence)
  if method == "t":
    result = sps.ttest_1samp(d, 0.0)
    interval = result.confidence_interval(confidence)
    return Paired(
      mean,
      float(interval.low),
      float(interval.high),
      float(result.pvalue),
      n,
      sd,
      method,
      confidence,
    )
  p = _sign_flip_p(d, seed)
  if method == "sign_flip":
    return Paired(mean, nan, nan, p, n, sd, method, confidence)
  boot = sps.bootstrap(
    (d,),
    np.mean,
    confidence_level=confidence,
    method="BCa",
    n_resamples=NUM_RESAMPLES,
    vectorized=True,
    rng=np.random.default_rng(seed),
  )
  interval = boot.confidence_interval
  return Paired(mean, float(interval.low), float(interval.high), p, n, sd, method, confidence)


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values of a family, in the input order.

  Sorted ascending, the i-th smallest of m p-values (i = 1..m) is adjusted to
  ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted p < alpha controls
  the family-wise error rate at alpha. NaN p-values (a contrast that could not be tested) stay
  NaN and do not count in m.

  Raises:
    ValueError: a p-value outside [0, 1].
  """
  p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
  tested = ~np.isnan(p)
  if np.any((p[tested] < 0) | (p[tested] > 1)):
    raise ValueError(f"p-values must lie in [0, 1]; got {p.tolist()}.")
  adjusted = np.full_like(p, np.nan)
  index = np.flatnonzero(tested)
  order = index[np.argsort(p[index], kind="stable")]
  m = order.size
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted


def t_power(n: int, sd: float, effect: float, *, alpha: float = 0.05) -> float:
  """Power of the two-sided paired t test at level `alpha` with n pairs, when the differences
  have standard deviation `sd` and mean `effect` (noncentral t with n - 1 degrees of freedom)."""
  if n < 2:
    return math.nan
  df = n - 1
  noncentrality = abs(effect) / sd * math.sqrt(n)
  critical = sps.t.ppf(1.0 - alpha / 2.0, df)
  value = sps.nct.sf(critical, df, noncentrality) + sps.nct.cdf(-critical, df, noncentrality)
  if not np.isfinite(value):
    # scipy's nct loses the far tail at large noncentrality (n = 100 at effect = sd gives NaN);
    # there the test rejects with probability 1 to double precision.
    value = 1.0 if noncentrality > critical else alpha
  return float(min(value, 1.0))


def _check_power_args(sd: float, power_: float, alpha: float) -> None:
  if not sd > 0 or not math.isfinite(sd):
    raise ValueError(f"sd must be a positive finite number; got {sd}.")
  if not 0.0 < alpha < 1.0 or not alpha < power_ < 1.0:
    raise ValueError(f"Need 0 < alpha < power < 1; got alpha {alpha}, power {power_}.")


def seeds_needed(
  sd: float, effect: float, *, power: float = 0.8, alpha: float = 0.05, max_n: int = 100_000
) -> int:
  """The smallest number of pairs n >= 2 at which a two-sided paired t test at level `alpha`
  detects a mean difference `effect` with probability >= `power`, the differences' SD being `sd`.

  Raises:
    ValueError: sd <= 0, effect == 0, or power/alpha outside 0 < alpha < power < 1; or more than
      `max_n` pairs would be needed.
  """
  _check_power_args(sd, power, alpha)
  if effect == 0 or not math.isfinite(effect):
    raise ValueError(f"effect must be a nonzero finite number; got {effect}.")
  high = 2  # Power grows with n: double n until it is reached, then bisect.
  while t_power(high, sd, effect, alpha=alpha) < power:
    if high >= max_n:
      raise ValueError(f"More than {max_n} pairs needed for effect {effect} at sd {sd}.")
    high = min(2 * high, max_n)
  low = max(2, high // 2)
  while low < high:
    mid = (low + high) // 2
    if t_power(mid, sd, effect, alpha=alpha) >= power:
      high = mid
    else:
      low = mid + 1
  return low


def detectable_effect(sd: float, n: int, *, power: float = 0.8, alpha: float = 0.05) -> float:
  """The smallest mean difference (in the differences' units) that a two-sided paired t test at
  level `alpha` with n pairs detects with probability `power` (the minimal detectable effect);
  NaN for n < 2 or sd NaN. A null result says effects of this size were unlikely to be missed."""
  if n < 2 or math.isnan(sd):
    return math.nan
  if sd == 0:
    return 0.0
  _check_power_args(sd, power, alpha)
  # Power grows with the effect; it is ~alpha at 0 and reaches `power` below 100 sd for n >= 2.
  return float(
    optimize.brentq(lambda e: t_power(n, sd, e, alpha=alpha) - power, 1e-12 * sd, 100.0 * sd)
  )
