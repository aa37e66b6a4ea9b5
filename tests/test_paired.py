"""Tests for experiments/paired.py: arms paired by seed, the paired t interval, the declared
primary family (Holm, verdicts, minimal detectable effect), exploratory rows, files and CLI."""

import csv
import json
import math
import os
import sys

import numpy as np
import pytest
from conftest import ROOT
from scipy import stats as sps

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import aggregate  # noqa: E402
import paired  # noqa: E402
import stats  # noqa: E402

_METRIC = "dci/disentanglement"


def _rows(values: dict[str, dict[int, float]], metric: str = _METRIC) -> list[dict]:
  """Rows as `aggregate.collect` makes them: {config: {seed: value}}."""
  return [
    {**aggregate.parse_name(config), "seed": seed, "step": 100, metric: value}
    for config, by_seed in values.items()
    for seed, value in by_seed.items()
  ]


def test_the_interval_is_the_paired_t_interval_of_the_per_seed_differences(rng):
  a = {s: float(v) for s, v in enumerate(rng.normal(0.3, 0.1, 7))}
  b = {s: float(v) for s, v in enumerate(rng.normal(0.25, 0.1, 7))}
  result = paired.paired_differences(_rows({"A": a, "B": b}), _METRIC, "A", "B", confidence=0.9)
  d = np.array([a[s] - b[s] for s in range(7)])
  half = sps.t.ppf(0.95, 6) * d.std(ddof=1) / math.sqrt(7)
  assert result.n == 7 and result.seeds == tuple(range(7)) and result.unpaired_seeds == ()
  np.testing.assert_array_equal(result.differences, d)
  assert result.ci == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
  assert result.result.p == pytest.approx(sps.ttest_rel(list(a.values()), list(b.values())).pvalue)
  assert result.family == "exploratory" and result.verdict == "exploratory"
  assert result.mde == pytest.approx(stats.detectable_effect(d.std(ddof=1), 7))


def test_runs_are_paired_by_seed_and_unpaired_seeds_dropped_and_counted():
  # Seed 3 of B has a NaN metric (an evaluation that failed): not a pair.
  rows = _rows(
    {
      "A": {0: 0.9, 1: 0.50, 2: 0.30, 3: 0.4, 5: 0.70},
      "B": {1: 0.45, 2: 0.10, 3: math.nan, 4: 0.2, 5: 0.20},
      "C": {1: 5.0},
    }
  )
  result = paired.paired_differences(rows[::-1], "dci.disentanglement", "A", "B")
  assert result.metric == _METRIC  # The "." spelling reads the "/"-flattened column.
  assert result.seeds == (1, 2, 5) and result.n == 3
  assert result.unpaired_seeds == (0, 3, 4)
  np.testing.assert_allclose(result.differences, [0.05, 0.20, 0.50])
  assert result.mean_diff == pytest.approx(0.25)


def test_primary_verdicts_follow_holm_not_the_raw_p(rng):
  n = 10
  base = {s: float(v) for s, v in enumerate(rng.normal(0.2, 0.05, n))}
  noise = rng.normal(0.0, 1.0, n)
  noise = (noise - noise.mean()) / noise.std(ddof=1)  # Exactly mean 0, SD 1.
  # Mean shift chosen so that the raw paired t p is ~0.03: below 0.05, above 0.05 / 3.
  shift = sps.t.ppf(1 - 0.03 / 2, n - 1) * 0.02 / math.sqrt(n)
  arms = {
    "base": base,
    "big": {s: base[s] + 0.3 + 0.02 * noise[s] for s in range(n)},
    "small": {s: base[s] + shift + 0.02 * noise[s] for s in range(n)},
    "none": {s: base[s] + 0.02 * noise[s] for s in range(n)},
  }
  family = paired.primary_family(
    _rows(arms), [("big", "base"), ("small", "base"), ("base", "none")], _METRIC
  )
  raw = [c.result.p for c in family]
  assert raw[0] < 1e-6 and raw[1] == pytest.approx(0.03, rel=1e-6)
  np.testing.assert_allclose([c.p_adjusted for c in family], stats.holm(raw))
  # Holm: 0.03 * 2 = 0.06 >= 0.05, so the raw "significant" contrast gets no verdict.
  assert [c.verdict for c in family] == [
    "a > b",
    "no difference detected",
    "no difference detected",
  ]
  assert all(c.family == "primary" for c in family)
  behind = paired.primary_family(_rows(arms), [("base", "big")], _METRIC)[0]
  assert behind.verdict == "a < b"


def test_a_missing_arm_or_no_shared_seed_names_the_arm_and_the_configs():
  rows = _rows({"beta_vae": {0: 0.1, 1: 0.2}, "beta_vae+dst_cos_decoder": {2: 0.3}})
  with pytest.raises(ValueError, match=r"'beta_vae\+gmg_cos_decoder' has no runs") as error:
    paired.paired_differences(rows, _METRIC, "beta_vae+gmg_cos_decoder", "beta_vae")
  assert "configs present: beta_vae, beta_vae+dst_cos_decoder" in str(error.value)
  with pytest.raises(ValueError, match="share no seed") as error:
    paired.paired_differences(rows, _METRIC, "beta_vae+dst_cos_decoder", "beta_vae")
  message = str(error.value)
  assert (
    "'beta_vae+dst_cos_decoder' (seeds [2])" in message and "'beta_vae' (seeds [0, 1])" in message
  )
  with pytest.raises(ValueError, match="no_such_metric"):
    paired.paired_differences(rows, "no_such_metric", "beta_vae", "beta_vae")


def _write_run(root, name, seed, metrics):
  workdir = os.path.join(root, name, f"seed_{seed}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"step": 100, **metrics}, f)


def test_cli_writes_the_family_and_the_exploratory_rows(tmp_path, capsys):
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
  aggregate.main(
    [
      f"--root={root}",
      f"--out={out}",
      "--primary=beta_vae+dst_cos_decoder:beta_vae,beta_vae+gmg_cos_decoder:beta_vae",
      "--compare=beta_vae+gmg_cos_decoder:beta_vae+dst_cos_decoder",
    ]
  )
  rows = aggregate.collect(root)
  family = paired.primary_family(
    rows,
    [("beta_vae+dst_cos_decoder", "beta_vae"), ("beta_vae+gmg_cos_decoder", "beta_vae")],
    _METRIC,
  )
  text = open(os.path.join(out, "paired.md")).read()
  assert text in capsys.readouterr().out
  primary, exploratory = text.split("## Exploratory")
  lines = [line for line in primary.splitlines() if line.startswith("| beta_vae")]
  first = family[0]
  assert first.n == 3 and first.unpaired_seeds == (3,)
  assert lines[0] == (
    "| beta_vae+dst_cos_decoder | beta_vae | dci/disentanglement | 3 (1 unpaired dropped) "
    f"| 0.450 | 0.150 | +0.300 | [{first.ci[0]:+.3f}, {first.ci[1]:+.3f}] "
    f"| {first.result.p:.3f} | {first.p_adjusted:.3f} | {first.mde:.3f} | {first.verdict} |"
  )
  assert first.p_adjusted == pytest.approx(min(1.0, 2 * first.result.p))  # Holm's first step.
  assert exploratory.count("| exploratory |") == 2  # Two default metrics.

  with open(os.path.join(out, "paired.csv")) as f:
    written = list(csv.DictReader(f))
  assert [(r["family"], r["metric"]) for r in written] == [
    ("primary", _METRIC),
    ("primary", _METRIC),
    ("exploratory", _METRIC),
    ("exploratory", "mig/discrete_mig"),
  ]
  assert float(written[0]["p_holm"]) == first.p_adjusted and written[0]["seeds"] == "0 1 2"
  assert written[2]["p_holm"] == "nan" and written[2]["verdict"] == "exploratory"
  expected_png = {
    "paired_beta_vae+dst_cos_decoder_vs_beta_vae.png",
    "paired_beta_vae+gmg_cos_decoder_vs_beta_vae.png",
    "paired_beta_vae+gmg_cos_decoder_vs_beta_vae+dst_cos_decoder.png",
  }
  assert set(os.listdir(out)) == {"paired.md", "paired.csv", *expected_png}  # No temp files.

  with pytest.raises(SystemExit) as exit_info:
    aggregate.main([f"--root={root}", f"--out={out}", "--compare=beta_vae+hfs:beta_vae"])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert "'beta_vae+hfs' has no runs" in error and "beta_vae+gmg_cos_decoder" in error
  five = ",".join(["beta_vae+gmg_cos_decoder:beta_vae"] * 5)
  with pytest.raises(SystemExit):
    aggregate.main([f"--root={root}", f"--out={out}", f"--primary={five}"])
  assert "at most 4" in capsys.readouterr().err


def test_each_pair_is_compared_at_each_step_on_that_steps_values_only(tmp_path, rng):
  # A - B is +0.0 at step 1000, +0.1 at step 2000 and +0.3 at step 5000, plus per-seed noise;
  # B has no run at step 5000 for seed 4, and arm C only reached step 1000.
  noise = {s: float(v) for s, v in enumerate(rng.normal(0, 0.01, 5))}
  shift = {1000: 0.0, 2000: 0.1, 5000: 0.3}
  curves = []
  for seed in range(5):
    for step, delta in shift.items():
      base = 0.2 + 0.05 * seed + step / 1e5
      curves.append(
        {"config": "A", "seed": seed, "step": step, _METRIC: base + delta + noise[seed]}
      )
      if not (step == 5000 and seed == 4):
        curves.append({"config": "B", "seed": seed, "step": step, _METRIC: base})
  curves.append({"config": "C", "seed": 0, "step": 1000, _METRIC: 0.5})
  for arm in "AB":  # A step evaluated with another metric only: skipped.
    curves.append({"config": arm, "seed": 0, "step": 3000, "mig/discrete_mig": 0.1})
  found = paired.by_step(curves[::-1], [("A", "B"), ("A", "C"), ("A", "B")], _METRIC)
  assert [(c.arm_b, step, c.n) for step, c in found] == [
    ("B", 1000, 5),
    ("B", 2000, 5),
    ("B", 5000, 4),
    ("C", 1000, 1),
  ]
  for step, c in found[:3]:
    expected = [shift[step] + noise[s] for s in c.seeds]
    np.testing.assert_allclose(c.differences, expected, atol=1e-12)
    assert c.family == "exploratory" and c.unpaired_seeds == ((4,) if step == 5000 else ())

  rows = [dict(r) for r in curves if r["step"] == 5000]
  paired.write_paired(
    rows, str(tmp_path), exploratory=[("A", "B")], metrics=[_METRIC], curves=curves
  )
  text = open(tmp_path / "paired.md").read()
  assert f"## Exploratory: {_METRIC} at each evaluation step" in text
  assert "| A | B | 2000 | 5 |" in text
  with open(tmp_path / "paired_steps.csv") as f:
    written = list(csv.DictReader(f))
  assert [(r["arm_b"], int(r["step"]), int(r["n"])) for r in written] == [
    ("B", 1000, 5),
    ("B", 2000, 5),
    ("B", 5000, 4),
  ]
  assert float(written[2]["mean_diff"]) == pytest.approx(
    0.3 + np.mean([noise[s] for s in range(4)])
  )
