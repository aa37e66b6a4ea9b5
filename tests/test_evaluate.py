"""Tests for gmg_jax.evaluate: a saved run is restored, scored and written atomically."""

import json
import subprocess
import sys

import numpy as np
from conftest import ROOT

from gmg_jax import evaluation, metrics, saved_runs, train


def test_evaluate_a_saved_run_matches_scoring_its_encoder(tiny, tmp_path):
  config = tiny()
  config.train.num_steps = 10
  config.eval.metrics = ("mig", "modularity_explicitness")
  config.eval.num_train = 300
  config.eval.num_test = 200
  final = train.train_and_evaluate(config, str(tmp_path))

  loaded_config, graphdef, state, dataset = saved_runs.load_run(str(tmp_path))
  assert int(state.step) == 10
  for a, b in zip(np.asarray(final.rng), np.asarray(state.rng), strict=True):
    assert a == b
  record = evaluation.evaluate_and_write(loaded_config, str(tmp_path), graphdef, state, dataset)
  with open(tmp_path / "metrics.json") as f:
    written = json.load(f)
  # metrics.json is the record plus where each value came from.
  sources = written.pop("sources")
  assert written == json.loads(json.dumps(record))
  assert sources == {
    name: {"step": 10, "mode": "fast", "num_train": 300, "num_test": 200, "by": "train"}
    for name in ("mig", "modularity_explicitness")
  }
  assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".tmp-*"))
  assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == [
    "reconstructions_00000010.png",
    "traversal_00000010.gif",
    "traversal_00000010.png",
  ]

  # The same numbers from the metrics library on the restored encoder.
  import jax
  from flax import nnx

  vae = nnx.merge(graphdef, state.modules)[0]
  expected = metrics.compute_metrics(
    ("mig", "modularity_explicitness"),
    dataset,
    jax.jit(lambda x: vae.encode(x)[0]),
    jax.random.fold_in(jax.random.key(config.seed), 10),
    mode=config.eval.mode,
    num_train=300,
    num_test=200,
    random_state=config.seed,
  )
  assert record["mig"] == expected["mig"]
  assert 0.0 <= record["mig"]["discrete_mig"] <= 1.0


def test_cli_on_a_directory_without_a_run_says_what_is_missing(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "gmg_jax.evaluate", f"--workdir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode != 0
  assert "config.json does not exist" in result.stderr + result.stdout


def test_cli_with_an_unknown_metric_says_so_before_any_work(tiny, tmp_path):
  config = tiny()
  config.train.num_steps = config.eval.every_steps = 4
  config.eval.metrics = ("mig",)
  config.eval.num_train, config.eval.num_test = 100, 50
  train.train_and_evaluate(config, str(tmp_path))
  written = {p: p.read_bytes() for p in (tmp_path / "metrics.json", tmp_path / "eval.jsonl")}
  result = subprocess.run(
    [sys.executable, "-m", "gmg_jax.evaluate", f"--workdir={tmp_path}", "--metrics=mig,mgi"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode != 0
  assert "Error: Unknown metrics ['mgi']" in result.stderr, result.stderr[-2000:]
  assert "Nothing was evaluated or written" in result.stderr
  assert "Traceback" not in result.stderr
  assert {p: p.read_bytes() for p in written} == written  # The run is as it was.
