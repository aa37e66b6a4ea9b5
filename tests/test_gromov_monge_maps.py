"""experiments/gromov_monge_maps.py: the paper's Figure 2 mechanism on tiny runs (in-process).

Every run here uses the same tiny static setting (square target, sqeuclidean cost, 40 steps,
batch 32, lr 1e-2), so each regularizer's training compiles once for the whole file.
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import gromov_monge_maps as gm  # noqa: E402

from gmg_jax import gmg  # noqa: E402

# lr 1e-2: at 3e-2 (the default, tuned for 1,000 steps) a huge DST weight oscillates for ~40 steps.
TINY = ["--steps=40", "--batch=32", "--eval_size=64", "--lr=0.01", "--target=square"]


def run(tmp_path, name: str, *extra: str) -> dict:
  out = tmp_path / f"{name}.json"
  gm.main([*TINY, *extra, f"--out={out}"])
  with open(out, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
  """One tiny run per arm, seed 0: none, dst at weight 100, gmg at weight 1."""
  tmp = tmp_path_factory.mktemp("runs")
  return {
    "none": run(tmp, "none", "--regularizer=none"),
    "dst": run(tmp, "dst", "--regularizer=dst", "--weight=100"),
    "gmg": run(tmp, "gmg", "--regularizer=gmg", "--weight=1"),
  }


def test_the_json_holds_finite_metrics_at_init_and_after_training_and_the_arguments(runs):
  for name, record in runs.items():
    for key in (*gm.METRICS, "fit_floor"):
      assert math.isfinite(record[key]), (name, key)
      assert math.isfinite(record["init"][key]), (name, key)
    assert record["finite"] is True
    assert record["args"]["regularizer"] == name
    assert record["args"]["steps"] == 40 and record["args"]["batch"] == 32
    assert record["args"]["cost"] == "sqeuclidean" == gm.parse_args(["--out=x"]).cost
    assert record["args"]["epsilon_0"] == gm.DEFAULT_EPSILON_0 == 0.03
    # The certified gap is a certified lower bound: in [0, distortion].
    assert 0.0 <= record["gmg_certified"] <= record["distortion"] + 1e-6
  # The same seed starts from the same map: the values at init are identical across arms.
  assert runs["none"]["init"] == runs["dst"]["init"] == runs["gmg"]["init"]
  assert runs["none"]["args"]["weight"] == 0.0  # "none" records no weight.


def test_training_without_regularizer_improves_the_held_out_fit(runs):
  record = runs["none"]
  assert record["fit"] < 0.5 * record["init"]["fit"]
  assert record["history"]["reg"] == [0.0] * len(record["history"]["reg"])


def test_a_huge_dst_weight_keeps_the_distortion_below_the_unregularized_map(runs):
  assert runs["dst"]["distortion"] < 0.5 * runs["none"]["distortion"]
  assert runs["dst"]["distortion"] < 0.5 * runs["dst"]["init"]["distortion"]


def test_the_trained_loss_is_fit_plus_weight_times_the_regularizer(runs):
  for name, weight in (("dst", 100.0), ("gmg", 1.0)):
    h = runs[name]["history"]
    want = np.array(h["fit"]) + weight * np.array(h["reg"])
    np.testing.assert_allclose(h["loss"], want, rtol=1e-4, atol=1e-5)
    assert np.any(np.array(h["reg"]) != 0.0)


@pytest.mark.parametrize("cost", gm.COSTS)
def test_the_regularizers_are_gmg_jax_values(cost):
  x, _ = gm.sample_source(jax.random.key(0), 32)
  y = gm.apply_mlp(gm.init_mlp(jax.random.key(1)), x)

  @jax.jit
  def values(x, y):
    gap, info = gmg.gromov_monge_gap(x, y, cost=cost, epsilon_0=0.03, init="product")
    trained = {r: gm.regularizer_value(r, x, y, cost, 0.03) for r in gm.REGULARIZERS}
    grad = jax.grad(lambda y: gm.regularizer_value("gmg", x, y, cost, 0.03))(y)
    return gap, info, trained, grad

  gap, info, trained, grad = values(x, y)
  assert float(trained["none"]) == 0.0
  assert float(trained["dst"]) == pytest.approx(float(info.distortion), rel=1e-6)
  # The trained GMG value is the entropic estimator with the trainer's settings.
  assert gm.GMG_KWARGS["estimator"] == "entropic" and gm.GMG_KWARGS["init"] == "product"
  assert float(trained["gmg"]) == pytest.approx(float(info.entropic_gap), rel=1e-5, abs=1e-7)
  assert float(trained["gmg"]) == pytest.approx(float(gap), rel=1e-5, abs=1e-7)
  # Differentiable in y.
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


def test_the_targets_are_the_documented_sets():
  square = gm.sample_target(jax.random.key(0), 4096, "square")
  assert float(jnp.abs(square).max()) <= 1.0 and float(jnp.abs(square).max()) > 0.99
  circle = gm.sample_target(jax.random.key(0), 512, "circle")
  np.testing.assert_allclose(jnp.linalg.norm(circle, axis=1), 1.0, rtol=1e-5)
  x, components = gm.sample_source(jax.random.key(0), 2048)
  assert set(np.asarray(components).tolist()) == set(range(gm.NUM_COMPONENTS))
  means = np.array([np.asarray(x)[np.asarray(components) == k].mean(0) for k in range(5)])
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), gm.MEAN_RADIUS, atol=0.03)


@pytest.mark.parametrize(
  "args, message",
  [
    (["--target=triangle"], "invalid choice: 'triangle'"),
    (["--weight=-1"], "--weight must be >= 0"),
    (["--weight=nan"], "--weight must be >= 0"),
    (["--steps=0"], "--steps must be >= 1"),
    (["--epsilon_0=0"], "--epsilon_0 must be > 0"),
    (["--regularizer=jacobian"], "invalid choice: 'jacobian'"),
    (["--study", "--weights=0.1,-1"], "--weights must be > 0"),
    (["--study", "--weights=a"], "not a comma-separated list"),
    (["--study", "--targets=square,disk"], "unknown target or cost"),
  ],
)
def test_bad_arguments_fail_with_one_line_before_any_work(
  tmp_path, monkeypatch, capsys, args, message
):
  def no_work(*_):
    raise AssertionError("work started")

  monkeypatch.setattr(gm, "train_and_evaluate", no_work)
  out, out_dir = tmp_path / "run.json", tmp_path / "study"
  with pytest.raises(SystemExit) as error:
    gm.main([*args, f"--out={out}", f"--out_dir={out_dir}"])
  assert error.value.code == 2
  err = capsys.readouterr().err
  assert message in err
  assert len(err.strip().splitlines()[-1]) < 200
  assert not out.exists() and not out_dir.exists()


def test_the_study_writes_its_runs_and_table_and_resumes(tmp_path, monkeypatch, capsys):
  out_dir = tmp_path / "study"
  study = [
    *TINY[:4], "--study", "--targets=square", "--costs=sqeuclidean", "--weights=1",
    "--seeds=0,1", f"--out_dir={out_dir}",
  ]  # fmt: skip
  gm.main(study)
  names = sorted(p.name for p in out_dir.glob("*.json"))
  assert names == sorted(
    f"square_sqeuclidean_{arm}_s{s}.json" for arm in ("none", "dst_w1", "gmg_w1") for s in (0, 1)
  )
  table = (out_dir / "table.md").read_text()
  rows = [line for line in table.splitlines() if line.startswith("| square")]
  assert len(rows) == 3 and "| gmg | 1 | 2 |" in rows[2]
  assert "[" in rows[1]  # Two seeds: intervals.
  assert (out_dir / "figure_square.png").stat().st_size > 10_000
  capsys.readouterr()

  # Resume: existing runs are skipped (no training), one removed run is trained again.
  calls = []
  real = gm.train_and_evaluate

  def counting(run):
    calls.append(run)
    return real(run)

  monkeypatch.setattr(gm, "train_and_evaluate", counting)
  before = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.json")}
  (out_dir / "square_sqeuclidean_dst_w1_s1.json").unlink()
  gm.main(study)
  assert [(c["regularizer"], c["seed"]) for c in calls] == [("dst", 1)]
  after = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.json")}
  assert all(after[k] == v for k, v in before.items() if k != "square_sqeuclidean_dst_w1_s1.json")
  assert capsys.readouterr().out.count("exists, skipped") == 5

  # A run JSON with other arguments is not silently mixed in.
  with pytest.raises(SystemExit, match="other arguments"):
    gm.main([*study[:-1], "--lr=0.02", f"--out_dir={out_dir}"])
