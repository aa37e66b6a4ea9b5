"""The GPU study's call rehearsed on the CPU at tiny size (experiments/study_gpu64.sh --tiny): its
arguments, the output it brings back, the records and tables experiments/gpu64_results.py makes
of it, and the next call training the other arm on the same seeds."""

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import gpu64_results  # noqa: E402
import records  # noqa: E402

_SCRIPT = os.path.join(ROOT, "experiments", "study_gpu64.sh")


def _call(*args, **kwargs):
  env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
  return subprocess.run(
    ["bash", _SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT, **kwargs
  )


@pytest.mark.parametrize(
  ("args", "message"),
  [
    ((), "no output directory"),
    (("--arm", "both", "OUT"), "--arm: auto, gmg or dst"),
    (("--steps", "0", "OUT"), "positive integers"),
    (("--fast", "OUT"), "unknown option: --fast"),
  ],
)
def test_bad_arguments_exit_2_before_any_work(tmp_path, args, message):
  args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
  result = _call(*args, "--results", str(tmp_path / "results"))
  assert result.returncode == 2 and message in result.stderr
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_two_calls_train_both_arms_on_the_same_seeds_and_the_family_follows(tmp_path):
  results = str(tmp_path / "results")
  first = _call("--tiny", "--no_bench", "--results", results, str(tmp_path / "call1"))
  assert first.returncode == 0, first.stdout + first.stderr
  summary = open(tmp_path / "call1" / "summary.md").read()
  assert "arm gmg" in summary and "| gmg_cos_decoder program | 0 |" in summary
  gpu64_results.main([str(tmp_path / "call1" / "runs.tar.gz"), f"--results={results}"])
  saved = records.read(os.path.join(results, "runs"))
  assert sorted((r["config"], r["seed"]) for r in saved) == [
    (f"beta_vae+gmg_cos_decoder+weight={w}", s) for w in (0, 1000) for s in (100, 101)
  ]
  for record in saved:
    assert [e["step"] for e in record["evaluations"]] == [10, 20]
    assert "train/median_regularizer_share" in record["train"]
  assert "## Primary family" not in open(os.path.join(results, "paired.md")).read()

  second = _call("--tiny", "--no_bench", "--results", results, str(tmp_path / "call2"))
  assert second.returncode == 0, second.stdout + second.stderr
  assert "arm dst" in open(tmp_path / "call2" / "summary.md").read()
  gpu64_results.main([str(tmp_path / "call2" / "runs.tar.gz"), f"--results={results}"])
  with open(os.path.join(results, "paired.csv")) as f:
    family = [r for r in csv.DictReader(f) if r["family"] == "primary"]
  assert [(r["arm_a"], r["arm_b"], r["n"]) for r in family] == [
    (a, b, "2") for a, b in gpu64_results.PRIMARY
  ]
  dst = json.load(open(os.path.join(results, "runs", "beta_vae+dst_cos_decoder", "seed_101.json")))
  assert dst["num_steps"] == 20
  with open(os.path.join(results, "results.csv")) as f:
    assert len(list(csv.DictReader(f))) == 6 * 2  # Six replicas, two evaluations each.

  third = _call("--tiny", "--no_bench", "--results", results, str(tmp_path / "call3"))
  assert third.returncode == 0 and "nothing left to train" in third.stdout
