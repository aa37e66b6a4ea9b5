"""A failed run never damages its workdir; every bad input is refused before any work."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_main_command, tree_digest

from gmg_jax import checkpointing, checks, data, evaluation, train
from gmg_jax.config import ConfigError
from gmg_jax.losses import loss as loss_lib
from gmg_jax.writers import MetricWriter, finite_json, read_jsonl, write_json_atomic


@pytest.mark.parametrize(
  ("field", "value", "message"),
  [
    ("train.batch_size", 0, r"train.batch_size=0: must be an integer >= 1"),
    ("train.batch_size", -4, r"train.batch_size=-4: must be"),
    ("regularizer.on", "decodr", r"Unknown regularizer.on 'decodr'; choose one of \['decoder'"),
    ("model.latent_dim", 0, r"model.latent_dim=0: must be an integer >= 1"),
    (
      "regularizer.gmg.epsilon_0",
      0.0,
      r"regularizer.gmg.epsilon_0=0.0: must be a finite number > 0",
    ),
    ("regularizer.gmg.epsilon_0", -0.1, r"regularizer.gmg.epsilon_0=-0.1"),
    ("regularizer.gmg.epsilon_0", 1e-6, r"epsilon_0=1e-06: below 0.000119"),
    ("train.num_steps", 0, r"train.num_steps=0: must be an integer >= 1"),
    ("train.checkpoint_every", 0, r"train.checkpoint_every=0"),
    ("train.log_every", 0, r"train.log_every=0"),
    ("optim.learning_rate", float("nan"), r"optim.learning_rate=nan: must be a finite number > 0"),
    ("optim.learning_rate", -1e-3, r"optim.learning_rate=-0.001"),
    ("data.name", "shapes4d", r"Unknown data.name 'shapes4d'; choose one of \[.*'shapes3d'"),
    (
      "objective.name",
      "beta_vea",
      r"objective 'beta_vea' is not registered; did you mean 'beta_vae'",
    ),
    ("regularizer.name", "gmm", r"regularizer 'gmm' is not registered; did you mean 'gmg'.*'none'"),
    (
      "regularizer.gmg.cost",
      "cos",
      r"Unknown regularizer.gmg.cost 'cos'; choose one of \['cosine'",
    ),
    ("regularizer.jacobian.num_projections", 0, r"regularizer.jacobian.num_projections=0"),
    ("regularizer.gmg.estimator", "exact", r"Unknown regularizer.gmg.estimator 'exact'"),
    ("regularizer.gmg.init", "random", r"Unknown regularizer.gmg.init 'random'"),
    ("regularizer.target", "probs", r"Unknown regularizer.target 'probs'"),
    ("regularizer.scope", "device", r"Unknown regularizer.scope 'device'"),
    ("eval.metrics", ("mig", "dcii"), r"Unknown metrics \['dcii'\]"),
    ("eval.mode", "slow", r"Unknown eval.mode 'slow'"),
  ],
)
def test_bad_values_are_refused_before_the_workdir_exists(tiny, tmp_path, field, value, message):
  config = tiny()
  *groups, name = field.split(".")
  node = config
  for group in groups:
    node = node[group]
  node[name] = value
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_every_problem_is_listed_at_once(tiny):
  config = tiny()
  config.train.batch_size = 0
  config.regularizer.dst.cost = "l2"
  config.train.log_every = 0
  found = checks.problems(config)
  assert len(found) == 3 and not checks.problems(tiny())


def test_decoder_regularizer_on_a_decoder_free_model_is_refused(tiny):
  config = tiny("decoder_free,gmg_cos_decoder")
  with pytest.raises(ConfigError, match=r"regularizer.on='decoder'.*regularizer.on=encoder"):
    checks.check_config(config)


def test_a_step_that_does_not_build_fails_before_any_write_and_the_fix_then_runs(tiny, tmp_path):
  config = tiny("hfs")
  config.model.latent_dim = 1  # HFS pairs latent dims: raised while tracing the step.
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"train step does not build.*at least 2 latent"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  fixed = tiny("hfs")
  fixed.train.num_steps = 2
  assert int(train.train_and_evaluate(fixed, str(workdir)).step) == 2


def test_failed_forced_resume_leaves_the_workdir_byte_for_byte(tiny, tmp_path):
  config = tiny()
  config.train.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path))
  before = tree_digest(tmp_path)
  changed = tiny()
  changed.train.num_steps = 2
  changed.model.latent_dim = 3
  changed.train.resume_with_changed_config = True
  with pytest.raises(
    ConfigError, match=r"step 2 .*does not fit.*stored \(4,\), this config \(3,\)"
  ):
    train.train_and_evaluate(changed, str(tmp_path))
  assert tree_digest(tmp_path) == before
  config.train.num_steps = 4  # The original command still resumes.
  assert int(train.train_and_evaluate(config, str(tmp_path)).step) == 4


def test_fields_added_after_a_run_started_do_not_block_its_resume(tiny):
  current = tiny().to_dict()
  saved = json.loads(json.dumps(current))
  del saved["regularizer"]["gmg"]["threshold"]  # A run from before the field existed.
  assert checkpointing.config_differences(saved, current) == []
  current["regularizer"]["gmg"]["threshold"] = 0.5  # Not the default: a real change.
  assert checkpointing.config_differences(saved, current) == ["regularizer.gmg.threshold"]


def test_the_guard_checks_the_updated_state_not_only_the_loss(tiny):
  config = tiny()
  config.optim.learning_rate = float("nan")  # Finite loss and gradients, NaN update.
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  before = [np.asarray(leaf) for leaf in train.jax.tree.leaves(state.modules)]
  state, metrics = train.make_train_step(graphdef, config)(state, data.get_dataset(config.data))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert not bool(metrics["finite"])
  after = train.jax.tree.leaves(state.modules)
  for a, b in zip(before, after, strict=True):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_a_checkpoint_whose_own_loss_is_non_finite_is_dropped(tiny, tmp_path, monkeypatch):
  original = loss_lib.vae_loss

  def poisoned(model, images, key, step, *args, **kwargs):
    loss, aux = original(model, images, key, step, *args, **kwargs)
    return loss * jnp.where(step >= 10, jnp.nan, 1.0), aux  # The loss of the state at step 10.

  monkeypatch.setattr(loss_lib, "vae_loss", poisoned)
  config = tiny()
  config.train.checkpoint_every = 5
  with pytest.raises(train.Diverged, match=r"step 11 .*--config.optim.learning_rate=<lower>"):
    train.train_and_evaluate(config, str(tmp_path))
  # Resuming from step 10 would meet the same NaN at step 11 whatever the learning rate.
  manager = checkpointing.make_manager(str(tmp_path), config.train)
  assert manager.all_steps() == [5]


def test_preemption_saves_and_raises_with_the_resume_hint(tiny, tmp_path, monkeypatch):
  monkeypatch.setattr(train._Preemption, "reached", lambda self, step: step == 3)
  config = tiny()
  with pytest.raises(train.Preempted, match=r"Preempted at step 3.*same command to resume"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpointing.make_manager(str(tmp_path), config.train).latest_step() == 3


def test_json_logs_hold_null_and_a_flag_for_non_finite_values(tmp_path):
  record = {"loss": float("nan"), "dci": {"d": float("inf"), "c": 0.5}, "ok": 1.0}
  assert finite_json(record) == {
    "loss": None,
    "dci": {"d": None, "c": 0.5},
    "ok": 1.0,
    "nonfinite": ["dci.d", "loss"],
  }
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  writer.write(3, {"grad_norm": np.float32("inf"), "loss": np.float32(2.0)})
  writer.close()
  write_json_atomic(str(tmp_path / "m.json"), {"mig": float("-inf")})
  for name in ("metrics.jsonl", "m.json"):
    text = (tmp_path / name).read_text()
    assert "Infinity" not in text and "NaN" not in text
  assert read_jsonl(str(tmp_path / "metrics.jsonl")) == [
    {"step": 3, "grad_norm": None, "loss": 2.0, "nonfinite": ["grad_norm"]}
  ]


def _run(cmd, cwd):
  return subprocess.run(
    cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False, env=os.environ
  )


def test_cli_exit_statuses_help_and_quiet_logs(tmp_path):
  bad = _run(tiny_main_command(tmp_path / "bad", "--config.train.batch_size=0"), ROOT)
  assert bad.returncode == 2 and "train.batch_size=0" in bad.stderr
  assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
  help_ = _run([sys.executable, "-m", "gmg_jax.main", "--help"], tmp_path)
  assert help_.returncode == 0
  assert "gmg_cos_decoder" in help_.stdout and "gmg_jax/config.py" in help_.stdout
  diverged = _run(
    tiny_main_command(
      tmp_path / "lr", "--config.optim.learning_rate=1e3", "--config.train.num_steps=50"
    ),
    ROOT,
  )
  assert diverged.returncode == 3 and "Non-finite" in diverged.stderr, diverged.stderr[-2000:]
  # Orbax and absl INFO lines are off by default (--verbosity turns them back on).
  assert not [line for line in diverged.stderr.splitlines() if line.startswith("I1")]


def test_dataset_configs_load_from_any_directory(tmp_path):
  code = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('c', sys.argv[1])\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "c = m.get_config('gmg_cos_decoder'); print(c.data.name, c.regularizer.name)\n"
  )
  for name, dataset in (("shapes3d", "shapes3d"), ("mpi3d", "mpi3d_toy"), ("default", None)):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    out = _run([sys.executable, "-c", code, path], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [dataset or "shapes3d_procedural", "gmg"]


def test_metrics_json_merges_and_keeps_the_latest_value_of_each_metric(tmp_path):
  path = str(tmp_path / "metrics.json")
  train_source = {"step": 10, "mode": "fast", "by": "train"}
  evaluation.merge_metrics_json(path, 10, {"mig": {"discrete_mig": 0.1}}, train_source)
  exact = {"step": 10, "mode": "exact", "by": "evaluate"}
  evaluation.merge_metrics_json(path, 10, {"dci": {"disentanglement": 0.3}}, exact)
  older = {"step": 5, "mode": "exact", "by": "evaluate"}
  merged = evaluation.merge_metrics_json(path, 5, {"mig": {"discrete_mig": 0.9}}, older)
  assert merged == {
    "step": 10,
    "mig": {"discrete_mig": 0.1},  # The step-5 value does not replace the step-10 one.
    "dci": {"disentanglement": 0.3},
    "sources": {"mig": train_source, "dci": exact},
  }
  with open(path) as f:
    assert json.load(f) == merged


def test_evaluate_cli_scores_every_checkpoint_and_keeps_the_trainers_metrics(tiny, tmp_path):
  config = tiny()
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.eval.every_steps = 4
  config.eval.metrics = ("mig",)
  config.eval.num_train = config.eval.num_test = 100
  train.train_and_evaluate(config, str(tmp_path))
  help_ = _run([sys.executable, "-m", "gmg_jax.evaluate", "--help"], tmp_path)
  assert help_.returncode == 0 and "--step" in help_.stdout
  out = _run(
    [
      sys.executable,
      "-m",
      "gmg_jax.evaluate",
      f"--workdir={tmp_path}",
      "--step=all",
      "--metrics=modularity_explicitness",
    ],
    tmp_path,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  with open(tmp_path / "metrics.json") as f:
    record = json.load(f)
  assert record["step"] == 4 and "mig" in record and "modularity_explicitness" in record
  assert record["sources"]["mig"]["by"] == "train"
  assert record["sources"]["modularity_explicitness"] == {
    "step": 4,
    "mode": "fast",
    "num_train": 100,
    "num_test": 100,
    "by": "evaluate",
  }
  evaluations = read_jsonl(str(tmp_path / "eval.jsonl"))
  assert [r["step"] for r in evaluations] == [4, 2, 4]
  missing = _run(
    [sys.executable, "-m", "gmg_jax.evaluate", f"--workdir={tmp_path}", "--step=3"], tmp_path
  )
  assert missing.returncode == 2 and "no checkpoint at step 3; it has [2, 4]" in missing.stderr


def test_a_k_run_killed_while_evaluating_resumes_with_the_evaluations_it_owed(
  tiny, tmp_path, monkeypatch
):
  """The checkpoint of an evaluation's step is saved first; a program stopped after evaluating
  one of its replicas evaluates the other at resume, once, and not the first again."""
  config = tiny()
  config.num_seeds = 2
  config.train.num_steps = config.train.checkpoint_every = config.eval.every_steps = 6
  config.eval.metrics = ("mig",)
  config.eval.num_train = config.eval.num_test = 100
  real = evaluation.evaluate_and_write
  calls = []

  def killed_at_the_second(*args, **kwargs):
    calls.append(os.path.basename(args[1]))
    if len(calls) == 2:
      raise KeyboardInterrupt  # What a kill leaves: the first replica evaluated, not the second.
    return real(*args, **kwargs)

  monkeypatch.setattr(evaluation, "evaluate_and_write", killed_at_the_second)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path))
  assert calls == ["seed=0", "seed=1"]
  assert [r["step"] for r in read_jsonl(str(tmp_path / "seed=0" / "eval.jsonl"))] == [6]
  assert not (tmp_path / "seed=1" / "eval.jsonl").exists()
  # The error reaches the caller as itself, and the replica index names the saved step.
  with open(tmp_path / "replicas.json") as f:
    assert json.load(f)["step"] == 6

  calls.clear()
  monkeypatch.setattr(
    evaluation, "evaluate_and_write", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1]
  )
  train.train_and_evaluate(config, str(tmp_path))
  assert [os.path.basename(c) for c in calls] == ["seed=1"]
  for name in ("seed=0", "seed=1"):
    records = read_jsonl(str(tmp_path / name / "eval.jsonl"))
    assert [r["step"] for r in records] == [6]
    assert 0.0 <= records[0]["mig/discrete_mig"] <= 1.0
