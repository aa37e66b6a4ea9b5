"""Tests for experiments/aggregate.py's paired comparison of arms by seed (bootstrap CI, CLI)."""

import csv
import json
import math
import os
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import aggregate  # noqa: E402

_METRIC = "dci/disentanglement"


def _rows(values: dict[str, dict[int, float]], metric: str = _METRIC) -> list[dict]:
  """Rows as `aggregate.collect` makes them: {config: {seed: value}}."""
  return [
    {**aggregate.parse_name(config), "seed": seed, "step": 100, metric: value}
    for config, by_seed in values.items()
    for seed, value in by_seed.items()
  ]


def _brute_force_ci(differences, num_bootstrap, confidence, seed):
  """Percentile bootstrap written out: one resample at a time, sorted means, interpolation."""
  rng = np.random.default_rng(seed)
  n = len(differences)
  means = []
  for _ in range(num_bootstrap):
    resample = [differences[int(rng.integers(0, n))] for _ in range(n)]
    means.append(sum(resample) / n)
  means.sort()
  bounds = []
  for q in ((1 - confidence) / 2, (1 + confidence) / 2):
    position = q * (num_bootstrap - 1)
    below = math.floor(position)
    above = min(below + 1, num_bootstrap - 1)
    bounds.append(means[below] + (means[above] - means[below]) * (position - below))
  return tuple(bounds)


@pytest.mark.parametrize(
  ("n", "num_bootstrap", "confidence", "seed"), [(7, 2000, 0.95, 3), (4, 999, 0.9, 0)]
)
def test_ci_equals_a_brute_force_bootstrap(rng, n, num_bootstrap, confidence, seed):
  a = {s: float(v) for s, v in enumerate(rng.normal(0.3, 0.1, n))}
  b = {s: float(v) for s, v in enumerate(rng.normal(0.25, 0.1, n))}
  result = aggregate.paired_differences(
    _rows({"A": a, "B": b}),
    _METRIC,
    "A",
    "B",
    num_bootstrap=num_bootstrap,
    confidence=confidence,
    seed=seed,
  )
  differences = [a[s] - b[s] for s in range(n)]
  assert result.n == n and result.seeds == tuple(range(n)) and result.unpaired_seeds == ()
  np.testing.assert_array_equal(result.differences, differences)
  assert result.mean_diff == pytest.approx(sum(differences) / n, rel=1e-14)
  low, high = _brute_force_ci(differences, num_bootstrap, confidence, seed)
  assert result.ci == (low, high)
  assert result.confidence == confidence
  # Another seed draws other resamples: the interval depends on the Generator seed.
  other = aggregate.paired_differences(
    _rows({"A": a, "B": b}), _METRIC, "A", "B", num_bootstrap=num_bootstrap, seed=seed + 1
  )
  assert other.ci != result.ci


def test_runs_are_paired_by_seed_and_unpaired_seeds_dropped_and_counted():
  # Seed 3 of B has a NaN metric (an evaluation that failed): not a pair.
  rows = _rows(
    {
      "A": {0: 0.9, 1: 0.50, 2: 0.30, 3: 0.4, 5: 0.70},
      "B": {1: 0.45, 2: 0.10, 3: math.nan, 4: 0.2, 5: 0.20},
      "C": {1: 5.0},
    }
  )
  result = aggregate.paired_differences(rows[::-1], "dci.disentanglement", "A", "B")
  assert result.metric == _METRIC  # The "." spelling reads the "/"-flattened column.
  assert result.seeds == (1, 2, 5) and result.n == 3
  assert result.unpaired_seeds == (0, 3, 4)
  np.testing.assert_allclose(result.values_a, [0.50, 0.30, 0.70])
  np.testing.assert_allclose(result.values_b, [0.45, 0.10, 0.20])
  np.testing.assert_allclose(result.differences, [0.05, 0.20, 0.50])
  assert result.mean_diff == pytest.approx(0.25)


def test_clear_effect_is_resolved_and_a_symmetric_zero_mean_set_is_not(rng):
  n = 10
  b = {s: float(v) for s, v in enumerate(rng.normal(0.2, 0.05, n))}
  a = {s: b[s] + 0.3 + float(rng.normal(0.0, 0.02)) for s in range(n)}
  rows = _rows({"A": a, "B": b})
  ahead = aggregate.paired_differences(rows, _METRIC, "A", "B")
  assert np.all(ahead.differences > 0.2)
  assert ahead.verdict == "a > b" and 0.25 < ahead.ci[0] < ahead.mean_diff < ahead.ci[1] < 0.35
  behind = aggregate.paired_differences(rows, _METRIC, "B", "A")
  assert behind.verdict == "a < b" and behind.ci[1] < 0

  symmetric = [-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2]
  rows = _rows(
    {"A": {s: 0.5 + d for s, d in enumerate(symmetric)}, "B": {s: 0.5 for s in range(7)}}
  )
  tied = aggregate.paired_differences(rows, _METRIC, "A", "B")
  assert tied.verdict == "not resolved"
  assert tied.mean_diff == pytest.approx(0.0, abs=1e-15) and tied.ci[0] < 0 < tied.ci[1]

  one = aggregate.paired_differences(_rows({"A": {0: 1.0}, "B": {0: 0.0}}), _METRIC, "A", "B")
  assert one.n == 1 and one.verdict == "not resolved" and all(map(math.isnan, one.ci))


def test_a_missing_arm_or_no_shared_seed_names_the_arm_and_the_configs():
  rows = _rows({"beta_vae": {0: 0.1, 1: 0.2}, "beta_vae+dst_cos_decoder": {2: 0.3}})
  with pytest.raises(ValueError, match=r"'beta_vae\+gmg_cos_decoder' has no runs") as error:
    aggregate.paired_differences(rows, _METRIC, "beta_vae+gmg_cos_decoder", "beta_vae")
  assert "configs present: beta_vae, beta_vae+dst_cos_decoder" in str(error.value)
  with pytest.raises(ValueError, match="share no seed") as error:
    aggregate.paired_differences(rows, _METRIC, "beta_vae+dst_cos_decoder", "beta_vae")
  message = str(error.value)
  assert (
    "'beta_vae+dst_cos_decoder' (seeds [2])" in message and "'beta_vae' (seeds [0, 1])" in message
  )
  with pytest.raises(ValueError, match="no_such_metric"):
    aggregate.paired_differences(rows, "no_such_metric", "beta_vae", "beta_vae")


def _write_run(root, name, seed, metrics):
  workdir = os.path.join(root, name, f"seed_{seed}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"step": 100, **metrics}, f)


def test_cli_writes_paired_markdown_csv_and_one_plot_per_pair(tmp_path, capsys):
  root, out = str(tmp_path / "study"), str(tmp_path / "out")
  dci = {
    "beta_vae": [0.10, 0.20, 0.15, 0.30],
    "beta_vae+dst_cos_decoder": [0.40, 0.52, 0.43, None],  # seed 3 unfinished
    "beta_vae+gmg_cos_decoder": [0.12, 0.18, 0.16, 0.31],
  }
  for name, values in dci.items():
    for seed, value in enumerate(values):
      if value is not None:
        metrics = {"disentanglement": value, "completeness": value}
        _write_run(root, name, seed, {"dci": metrics, "mig": {"discrete_mig": value / 10}})
  os.makedirs(os.path.join(root, "beta_vae+dst_cos_decoder", "seed_3"))
  pairs = "beta_vae+dst_cos_decoder:beta_vae,beta_vae+gmg_cos_decoder:beta_vae"
  aggregate.main([f"--root={root}", f"--out={out}", f"--compare={pairs}"])

  expected = [
    aggregate.paired_differences(aggregate.collect(root), m, a, "beta_vae")
    for a in ("beta_vae+dst_cos_decoder", "beta_vae+gmg_cos_decoder")
    for m in ("dci/disentanglement", "mig/discrete_mig")
  ]
  table = open(os.path.join(out, "paired.md")).read()
  assert table in capsys.readouterr().out
  lines = table.splitlines()
  assert lines[0] == (
    "| A | B | metric | n seeds | mean A | mean B | mean diff | 95% CI | verdict |"
  )
  assert len(lines) == 2 + 4
  first = expected[0]
  assert first.n == 3 and first.unpaired_seeds == (3,) and first.verdict == "a > b"
  assert lines[2] == (
    "| beta_vae+dst_cos_decoder | beta_vae | dci/disentanglement | 3 (1 unpaired dropped) "
    f"| 0.450 | 0.150 | +0.300 | [{first.ci[0]:+.3f}, {first.ci[1]:+.3f}] | a > b |"
  )
  assert lines[4].startswith("| beta_vae+gmg_cos_decoder | beta_vae | dci/disentanglement | 4 |")

  with open(os.path.join(out, "paired.csv")) as f:
    written = list(csv.DictReader(f))
  assert [(r["arm_a"], r["metric"]) for r in written] == [(e.arm_a, e.metric) for e in expected]
  for row, e in zip(written, expected, strict=True):
    assert int(row["n"]) == e.n and row["verdict"] == e.verdict
    assert (float(row["ci_low"]), float(row["ci_high"])) == e.ci
    assert float(row["mean_diff"]) == e.mean_diff
  assert written[0]["seeds"] == "0 1 2" and written[0]["unpaired_seeds"] == "3"

  for a in ("beta_vae+dst_cos_decoder", "beta_vae+gmg_cos_decoder"):
    with open(os.path.join(out, f"paired_{a}_vs_beta_vae.png"), "rb") as f:
      png = f.read()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
  assert sorted(os.listdir(out)) == sorted(
    ["paired.md", "paired.csv"]
    + [
      f"paired_{a}_vs_beta_vae.png"
      for a in ("beta_vae+dst_cos_decoder", "beta_vae+gmg_cos_decoder")
    ]
  )  # No temporary file left behind, and no results.* written.

  with pytest.raises(SystemExit) as exit_info:
    aggregate.main([f"--root={root}", f"--out={out}", "--compare=beta_vae+hfs:beta_vae"])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert "'beta_vae+hfs' has no runs" in error and "beta_vae+gmg_cos_decoder" in error
