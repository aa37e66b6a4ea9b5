"""Tests for a study's committed run records (experiments/records.py), the runner counting them
as done on a fresh machine, the primary analysis waiting for every run, learning curves, and the
sweep refusing an unknown study."""

import csv
import json
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import aggregate  # noqa: E402
import records  # noqa: E402
import studies  # noqa: E402
import sweep  # noqa: E402

_SETTING = {"train.num_steps": 4}


def _study(primary=True, seeds=(0, 1, 2)):
  def runs():
    yield from studies.product(("beta_vae",), seeds, _SETTING)
    yield from studies.product(("beta_vae,gmg_cos_decoder",), seeds, _SETTING)

  pair = (("beta_vae+gmg_cos_decoder", "beta_vae"),)
  return studies.Study(
    runs,
    primary=pair if primary else (),
    declared="in this test",
    compare=pair,
    metrics=("dci/disentanglement",),
  )


def _fake_workdir(root, name, seed, curve, step=4):
  """A finished run's workdir: eval.jsonl with one record per (step, value), metrics.json at the
  last, and a training log."""
  workdir = os.path.join(root, name, f"seed_{seed}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "eval.jsonl"), "w") as f:
    for s, value in curve:
      f.write(json.dumps({"step": s, "dci/disentanglement": value}) + "\n")
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"step": step, "dci": {"disentanglement": curve[-1][1]}, "sources": {}}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for s, rec in ((2, 9.0), (4, 7.0)):
      f.write(json.dumps({"step": s, "reconstruction": rec, "regularizer/gmg_entropic": s}) + "\n")
  return workdir


def _values(seed, name):
  base = 0.1 + 0.05 * seed
  return [(2, base), (4, base + (0.2 + 0.01 * seed if "gmg" in name else 0.0))]


def test_records_let_a_fresh_machine_skip_the_committed_runs(tmp_path, monkeypatch):
  root, out = str(tmp_path / "work"), str(tmp_path / "results")
  runs = sweep.study_runs(_study())
  for run in runs:
    _fake_workdir(root, run.name, run.seed, _values(run.seed, run.name))
  steps = sweep.steps_of("configs/default.py", runs)
  written = sweep.record_finished(steps, root, os.path.join(out, "runs"))
  assert len(written) == 6
  saved = records.read(os.path.join(out, "runs"))
  first = saved[0]
  assert (first["config"], first["seed"], first["num_steps"]) == ("beta_vae", 0, 4)
  assert first["evaluations"] == [
    {"step": 2, "dci/disentanglement": 0.1},
    {"step": 4, "dci/disentanglement": 0.1},
  ]
  assert first["train"]["train/reconstruction"] == 7.0  # The last logged value.
  assert first["train"]["train/regularizer/gmg_entropic"] == 3.0  # The mean over the logs.
  assert "sources" not in first["metrics"]
  # A second pass writes nothing new; a fresh machine has no workdirs, only the records.
  assert sweep.record_finished(steps, root, os.path.join(out, "runs")) == []
  shutil.rmtree(root)

  def no_training(*args, **kwargs):
    raise AssertionError(f"launched {args}")

  monkeypatch.setattr(sweep.subprocess, "call", no_training)
  statuses = sweep.run_all("configs/default.py", runs, root, 1, os.path.join(out, "runs"))
  assert [s for _, s in statuses] == ["skipped"] * 6
  # A record of a shorter run does not count for a longer one.
  longer = [sweep.Run(r.variant, r.seed, ("train.num_steps=8",)) for r in runs[:1]]
  assert not sweep.is_done(root, os.path.join(out, "runs"), longer[0], 8)

  rows = records.final_rows(saved)
  assert [(r["config"], r["seed"], r["step"]) for r in rows][:2] == [
    ("beta_vae", 0, 4),
    ("beta_vae", 1, 4),
  ]
  assert rows[3]["dci/disentanglement"] == pytest.approx(0.1 + 0.2)  # GMG, seed 0.
  curves = records.step_rows(saved)
  assert len(curves) == 12 and {r["step"] for r in curves} == {2, 4}


def test_a_record_is_only_written_for_a_finished_run(tmp_path):
  workdir = _fake_workdir(str(tmp_path), "beta_vae", 0, [(2, 0.1)], step=2)
  with pytest.raises(ValueError, match="not finished"):
    records.write(str(tmp_path / "runs"), "beta_vae", 0, workdir, 4)
  assert not os.path.exists(tmp_path / "runs")


def test_the_primary_analysis_waits_for_every_run_then_runs_once(tmp_path, monkeypatch, capsys):
  root, out = str(tmp_path / "work"), str(tmp_path / "results")
  monkeypatch.setitem(studies.STUDIES, "planned", _study())
  runs = sweep.study_runs(_study())
  for run in runs[:-1]:  # The last run (GMG, seed 2) has not finished.
    _fake_workdir(root, run.name, run.seed, _values(run.seed, run.name))
  sweep.write_results(root, out, "planned")
  assert "waits for every run of the study: 5 of 6 finished" in capsys.readouterr().out
  assert not os.path.exists(os.path.join(out, "paired.md"))
  assert os.path.exists(os.path.join(out, "learning_curves.png"))
  with open(os.path.join(out, "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 10  # One row per (run, evaluation step).

  _fake_workdir(root, runs[-1].name, runs[-1].seed, _values(runs[-1].seed, runs[-1].name))
  sweep.write_results(root, out, "planned")
  text = open(os.path.join(out, "paired.md")).read()
  assert "## Primary family" in text and "Declared: in this test" in text
  with open(os.path.join(out, "paired.csv")) as f:
    primary = next(csv.DictReader(f))
  assert primary["family"] == "primary" and primary["n"] == "3"
  # GMG - beta-VAE at step 4: 0.2 + 0.01 * seed.
  assert float(primary["mean_diff"]) == pytest.approx(0.21)
  assert primary["verdict"] == "a > b"


def test_a_study_without_a_primary_family_compares_what_has_run(tmp_path, monkeypatch, capsys):
  root, out = str(tmp_path / "work"), str(tmp_path / "results")
  monkeypatch.setitem(studies.STUDIES, "open", _study(primary=False))
  for run in sweep.study_runs(_study())[:4]:
    _fake_workdir(root, run.name, run.seed, _values(run.seed, run.name))
  sweep.write_results(root, out, "open")
  with open(os.path.join(out, "paired.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["family"], r["n"]) for r in rows] == [("exploratory", "1")]


def test_curve_summary_is_the_percentiles_over_seeds_at_each_step():
  rows = [
    {"config": c, "seed": s, "step": step, "m": v}
    for c, offset in (("a", 0.0), ("b", 1.0))
    for s in range(5)
    for step, v in ((10, s + offset), (20, 2 * s + offset))
  ]
  rows.append({"config": "a", "seed": 9, "step": 30, "other": 1.0})  # No "m": not a point.
  summary = aggregate.curve_summary(rows, "m")
  steps, bands = summary["a"]
  assert steps == [10, 20]
  np.testing.assert_allclose(bands, [[1, 2, 3], [2, 4, 6]])
  np.testing.assert_allclose(summary["b"][1], [[2, 3, 4], [3, 5, 7]])
  assert aggregate.curve_summary(rows, "missing") == {}


def test_an_unknown_study_is_refused_with_the_registered_ones(capsys):
  with pytest.raises(SystemExit) as exit_info:
    sweep.parse_args(["--print", "--study=nope"])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert "unknown study 'nope'" in error
  assert all(name in error for name in studies.STUDIES) and "--name" in error
  with pytest.raises(SystemExit):
    sweep.parse_args(["--print", "--study=confirm_cpu32", "--name=x"])


def test_the_declared_families_are_small_and_name_arms_their_study_runs():
  for name, study in studies.STUDIES.items():
    assert 1 <= len(study.primary) <= 4, name
    arms = {run.name for run in sweep.study_runs(study)}
    for a, b in study.primary + study.compare:
      assert a in arms and b in arms, (name, a, b)
  confirm = sweep.study_runs(studies.STUDIES["confirm_cpu32"])
  seeds = {run.seed for run in confirm}
  assert seeds == set(range(100, 140))  # Fresh seeds: none of round 2's 0-9.
  assert len(confirm) == 3 * 40 + 10
