"""Tests for experiments/stats.py: intervals against scipy and a hand computation, coverage and
level by simulation, Holm and the seed count against hand values, bad input."""

import itertools
import math
import os
import sys

import numpy as np
import pytest
from conftest import ROOT
from scipy import stats as sps

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import stats  # noqa: E402


def test_t_interval_equals_the_textbook_formula_and_scipy():
  a = np.array([0.31, 0.25, 0.40, 0.22, 0.35, 0.28, 0.30])
  b = np.array([0.27, 0.26, 0.33, 0.20, 0.30, 0.29, 0.24])
  d = a - b
  result = stats.paired(a, b, confidence=0.9)
  n = d.size
  half = sps.t.ppf(0.95, n - 1) * d.std(ddof=1) / math.sqrt(n)
  assert result.n == n and result.method == "t"
  assert result.mean == pytest.approx(d.mean(), abs=1e-15)
  assert result.low == pytest.approx(d.mean() - half, rel=1e-12)
  assert result.high == pytest.approx(d.mean() + half, rel=1e-12)
  t_stat = d.mean() / (d.std(ddof=1) / math.sqrt(n))
  assert result.p == pytest.approx(2 * sps.t.sf(abs(t_stat), n - 1), rel=1e-12)
  assert result.p == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
  assert result.sd == pytest.approx(d.std(ddof=1), rel=1e-12)


def test_sign_flip_is_exact_enumeration_up_to_16_pairs():
  d = np.array([0.05, -0.01, 0.03, 0.04, 0.02, -0.02, 0.06, 0.01])
  observed = abs(d.mean())
  flips = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
  brute = np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12)
  result = stats.paired(d, np.zeros_like(d), method="sign_flip")
  assert result.p == pytest.approx(brute, abs=1e-12)
  assert math.isnan(result.low) and math.isnan(result.high)
  # Beyond 16 pairs it is a Monte Carlo estimate of the same p, seeded.
  big = np.concatenate([d, d, d])
  p1 = stats.paired(big, np.zeros_like(big), method="sign_flip", seed=1).p
  p2 = stats.paired(big, np.zeros_like(big), method="sign_flip", seed=1).p
  assert p1 == p2 and 0 < p1 < 0.05


def test_bca_matches_scipy_bootstrap_and_reports_the_sign_flip_p():
  rng = np.random.default_rng(3)
  a, b = rng.normal(0.3, 0.05, 12), rng.normal(0.28, 0.05, 12)
  result = stats.paired(a, b, method="bca", seed=7)
  reference = sps.bootstrap(
    (a - b,),
    np.mean,
    method="BCa",
    n_resamples=stats.NUM_RESAMPLES,
    rng=np.random.default_rng(7),
    vectorized=True,
  ).confidence_interval
  assert (result.low, result.high) == pytest.approx((reference.low, reference.high), rel=1e-12)
  assert result.p == stats.paired(a, b, method="sign_flip").p


def _coverage(method, n, draw, trials, seed=0):
  rng = np.random.default_rng(seed)
  hits = 0
  for i in range(trials):
    d, true_mean = draw(rng, n)
    r = stats.paired(d, np.zeros(n), method=method, seed=i)
    hits += r.low <= true_mean <= r.high
  return hits / trials


def _normal(rng, n):
  return rng.normal(0.02, 0.05, n), 0.02


def _skewed(rng, n):  # Gamma(4): skewness 1; mean shape * scale.
  return rng.gamma(4.0, 0.01, n) - 0.03, 0.04 - 0.03


@pytest.mark.parametrize("draw", [_normal, _skewed], ids=["normal", "skewed"])
def test_t_interval_covers_at_its_level_at_ten_seeds(draw):
  # 4,000 trials: the standard error of a 95% coverage is 0.0034; 0.935 is 4.4 SE below it,
  # where the percentile bootstrap's ~0.90 (README) would fail by far.
  coverage = _coverage("t", 10, draw, 4000)
  assert 0.935 <= coverage <= 0.965, coverage


def test_percentile_bootstrap_undercovers_where_t_does_not():
  """The reason the package moved off the percentile bootstrap, measured on the same draws."""
  rng = np.random.default_rng(11)
  trials, n = 2000, 5
  t_hits = boot_hits = 0
  for _ in range(trials):
    d = rng.normal(0.0, 1.0, n)
    r = stats.paired(d, np.zeros(n))
    t_hits += r.low <= 0 <= r.high
    means = d[rng.integers(0, n, size=(2000, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    boot_hits += low <= 0 <= high
  assert t_hits / trials > 0.93
  assert boot_hits / trials < 0.90


def test_sign_flip_holds_its_level_under_the_null():
  rng = np.random.default_rng(5)
  trials = 600
  rejections = sum(
    stats.paired(rng.standard_t(3, 10), np.zeros(10), method="sign_flip").p < 0.05
    for _ in range(trials)
  )
  # Exact test: the rejection rate is <= 0.05; 600 trials give SE 0.009.
  assert rejections / trials <= 0.05 + 3 * 0.009


def test_holm_against_hand_values():
  # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04).
  adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
  np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])
  np.testing.assert_allclose(stats.holm([0.02]), [0.02])
  with_nan = stats.holm([0.01, math.nan, 0.04])  # m = 2: NaN is not tested.
  np.testing.assert_allclose(with_nan, [0.02, math.nan, 0.04])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    stats.holm([0.1, 1.5])


def test_holm_controls_the_family_wise_error():
  rng = np.random.default_rng(2)
  trials, m = 2000, 4
  any_rejected = 0
  for _ in range(trials):
    p = [stats.paired(rng.normal(0, 1, 10), np.zeros(10)).p for _ in range(m)]
    any_rejected += np.any(stats.holm(p) < 0.05)
  assert any_rejected / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)


def test_seeds_needed_against_published_and_hand_values():
  # Cohen's d_z = 1 and 0.5 at 80% power, two-sided 5%: 10 and 34 pairs (G*Power).
  assert stats.seeds_needed(1.0, 1.0) == 10
  assert stats.seeds_needed(1.0, 0.5) == 34
  assert stats.seeds_needed(1.0, -0.5) == 34
  # Round 3's table of seeds for the observed paired SDs of DCI-D (paired SD x effect).
  table = {
    (0.03, 0.02): 20,
    (0.03, 0.03): 10,
    (0.03, 0.05): 6,
    (0.062, 0.02): 78,
    (0.062, 0.03): 36,
    (0.062, 0.05): 15,
    (0.11, 0.02): 240,
    (0.11, 0.03): 108,
    (0.11, 0.05): 40,
  }
  for (sd, effect), n in table.items():
    assert stats.seeds_needed(sd, effect) == n
    # The smallest such n: one fewer pair falls short of the power.
    assert stats.t_power(n - 1, sd, effect) < 0.8 <= stats.t_power(n, sd, effect)


def test_power_by_simulation_and_detectable_effect_inverts_it():
  rng = np.random.default_rng(4)
  n, sd, effect, trials = 12, 1.0, 0.8, 3000
  d = rng.normal(effect, sd, size=(trials, n))
  p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
  assert np.mean(p < 0.05) == pytest.approx(stats.t_power(n, sd, effect), abs=0.025)
  mde = stats.detectable_effect(0.11, 40)
  assert stats.t_power(40, 0.11, mde) == pytest.approx(0.8, abs=1e-9)
  assert stats.seeds_needed(0.11, mde * 1.001) <= 40 < stats.seeds_needed(0.11, mde * 0.98)
  assert math.isnan(stats.detectable_effect(0.1, 1))


def test_edge_cases_and_bad_input():
  one = stats.paired([0.3], [0.2])
  assert one.n == 1 and one.mean == pytest.approx(0.1)
  assert all(math.isnan(v) for v in (one.low, one.high, one.p, one.sd))
  same = stats.paired([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])  # Differences all 0.25, exactly.
  assert (same.low, same.high, same.p) == (0.25, 0.25, 0.0)
  zero = stats.paired([0.3, 0.4], [0.3, 0.4])
  assert zero.p == 1.0
  with pytest.raises(ValueError, match="equal length"):
    stats.paired([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="non-finite values at positions \\[1\\]"):
    stats.paired([1, math.nan, 3], [1, 2, 3])
  with pytest.raises(ValueError, match="Unknown method"):
    stats.paired([1, 2], [1, 2], method="percentile")
  with pytest.raises(ValueError, match="confidence"):
    stats.paired([1, 2], [1, 2], confidence=95)
  with pytest.raises(ValueError, match="sd must be"):
    stats.seeds_needed(0.0, 0.1)
  with pytest.raises(ValueError, match="effect must be"):
    stats.seeds_needed(0.1, 0.0)
  with pytest.raises(ValueError, match="alpha < power"):
    stats.seeds_needed(0.1, 0.1, power=0.01)
