"""A newcomer's first commands (issue 29): every mistake before training is one line with exit
status 2 and nothing written, settings that cannot act are refused, and the programs say what
they are doing, in the syntax of the command that printed it."""

import glob
import importlib.util
import json
import os
import struct
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config, tiny_main_command, tree_digest
from tensorboardX.proto import event_pb2

from gmg_jax import checks, train
from gmg_jax import config as config_lib
from gmg_jax.config import ConfigError
from gmg_jax.data import files

_RUN_FLAGS = (  # The shared run: checkpoints at 10 and 20, evaluated (MIG) at the end.
  "--config.train.checkpoint_every=10",
  "--config.eval.every_steps=20",
  "--config.eval.metrics=('mig',)",
  "--config.eval.num_train=200",
  "--config.eval.num_test=100",
)


def _run(cmd, env=None):
  return subprocess.run(
    cmd,
    cwd=ROOT,
    env={**os.environ, **(env or {})},
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


def _evaluate(*args):
  return _run([sys.executable, "-m", "gmg_jax.evaluate", *args])


def _tensorboard_steps(logdir, kind="simple_value"):
  """The steps of the `kind` values ("simple_value", "image") in `logdir`'s event files, in the
  order TensorBoard reads them (files in name order, records in file order)."""
  steps = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):  # TFRecord: length, its CRC, the event, the event's CRC.
      (length,) = struct.unpack("<Q", data[at : at + 8])
      event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
      at += 12 + length + 4
      steps += [event.step for v in event.summary.value if v.WhichOneof("value") == kind]
  return steps


def _assert_one_line_error(result, workdir, *patterns):
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
  for pattern in patterns:
    assert pattern in lines[0], lines[0]
  assert not os.path.exists(workdir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny GMG run through `python -m gmg_jax.main`, then the same command again."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  cmd = tiny_main_command(workdir, *_RUN_FLAGS, variant="gmg_cos_decoder")
  first = _run(cmd)
  assert first.returncode == 0, first.stderr[-3000:]
  before = tree_digest(workdir)
  again = _run(cmd)
  return {"workdir": str(workdir), "first": first, "again": again, "before": before}


# 1. Mistakes the flag parser sees.
@pytest.mark.parametrize(
  ("config", "args", "message"),
  [
    (None, ["--config.train.num_stepz=10"], "did you mean --config.train.num_steps?"),
    (None, ["--config.trian.num_steps=5"], "no field 'trian'; did you mean --config.train."),
    ("configs/nonexistent.py", [], "--config=configs/nonexistent.py: no file"),
    ("configs/default.py:runlocl", [], "variant 'runlocl'; did you mean 'runlocal'?"),
    (None, ["--config.train.batch_size=abc"], "--config.train.batch_size=abc"),
    (None, ["--workdr=/tmp/x"], "Unknown command line flag 'workdr'"),
    (None, ["stray"], "unexpected arguments ['stray']"),
  ],
)
def test_a_command_line_mistake_is_one_line_and_exit_2(tmp_path, config, args, message):
  cmd = tiny_main_command(tmp_path / "w", *args)
  if config:
    cmd[3] = f"--config={config}"
  result = _run(cmd)
  _assert_one_line_error(result, tmp_path / "w", message)
  assert result.stdout == ""  # Answered before JAX is imported.


# 2. A dataset config with `runlocal`.
def _dataset_config(name, variants):
  spec = importlib.util.spec_from_file_location("c", os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variants)


@pytest.mark.parametrize("name", ["shapes3d", "dsprites", "mpi3d"])
def test_runlocal_keeps_a_stored_datasets_size(name):
  for variants in ("runlocal", "runlocal,tiny"):
    config = _dataset_config(name, variants)
    assert config.data.image_size == 64 and config.model.arch == "mlp"
    assert checks.problems(config) == []


def test_stored_sizes_are_the_data_loaders_and_a_wrong_size_is_a_config_problem(tmp_path):
  env = {"GMG_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
  for name in files.SPECS:
    with pytest.MonkeyPatch.context() as m:
      for key, value in env.items():
        m.setenv(key, value)
      with pytest.raises(ValueError) as error:  # No file here: DataFileError, or the size.
        files.load_files(name, data_dir=str(tmp_path), image_size=32)
    assert ("is stored at 64x64" in str(error.value)) == (name in config_lib.STORED_IMAGE_SIZE)
  config = config_lib.dataset_config("shapes3d", "runlocal")
  config.data.image_size = 32
  assert checks.problems(config) == [
    "data.image_size=32: shapes3d is stored at 64x64; use --config.data.image_size=64."
  ]
  main = [sys.executable, "-m", "gmg_jax.main", "--config=configs/shapes3d.py:runlocal"]
  result = _run([*main, f"--workdir={tmp_path / 'w'}"], env=env)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "not found" in result.stderr
  assert "python -m gmg_jax.data.download shapes3d" in result.stderr
  assert not (tmp_path / "w").exists()


# 4. Settings that cannot act.
def test_a_varied_weight_without_a_regularizer_is_refused(tmp_path):
  result = _run(
    tiny_main_command(
      tmp_path / "w", "--config.num_seeds=2", "--config.vary=regularizer.weight=100,300"
    )
  )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "vary: regularizer.weight has no effect (regularizer.name='none'" in result.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  ("variant", "field", "value", "why"),
  [
    ("", "objective.gamma", 30.0, "objective.name='beta_vae' does not read it"),
    ("", "objective.prior_matching", "sinkhorn", "pick an objective that reads it (decoder_free)"),
    ("dip_vae", "objective.c_max", 5.0, "(annealed_vae)"),
    ("beta_tcvae", "objective.tcvae_alpha", 2.0, "objective.tcvae_estimator='decomposed'"),
    ("beta_tcvae,hfs", "objective.beta", 8.0, "in its 'decomposed' form"),
    ("", "objective.hfs_pairs", 3, "objective.hfs_weight=0"),
    ("", "regularizer.weight", 100.0, "regularizer.name='none' trains no regularizer"),
    ("", "regularizer.on", "encoder", "regularizer.name='none'"),
    ("", "regularizer.scope", "local", "regularizer.name='none'"),
    ("dst_cos_decoder", "regularizer.gmg.epsilon_0", 0.1, "use regularizer.name='gmg'"),
    ("gmg_cos_decoder", "regularizer.jacobian.num_projections", 4, "reads regularizer.gmg.*"),
    ("jacobian_decoder", "regularizer.dst.cost", "sqeuclidean", "regularizer.name='dst'"),
    ("gmg_cos_encoder", "regularizer.target", "logits", "regularizer.on='encoder'"),
  ],
)
def test_a_setting_the_run_does_not_read_is_refused_on_the_command_line(variant, field, value, why):
  config = tiny_config(variant)
  group, *path = field.split(".")
  node = config[group]
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value
  (line,) = checks.check_config(config)  # A library caller is warned ...
  assert line.startswith(f"{field}={value!r} has no effect") and why in line
  with pytest.raises(ConfigError, match="has no effect"):  # ... the command line refuses.
    checks.check_config(config, refuse_inert=True)


@pytest.mark.parametrize(
  ("variant", "vary"),
  [("", "objective.gamma=10,30"), ("dst_cos_decoder", "regularizer.gmg.epsilon_0=0.1,0.3")],
)
def test_a_varied_field_the_run_does_not_read_is_refused(variant, vary):
  config = tiny_config(variant)
  config.vary = vary
  (line,) = checks.inert_settings(config)
  assert line.startswith(f"vary: {vary.split('=')[0]} has no effect") and "identical" in line


def test_no_variant_combination_sets_what_it_does_not_read():
  objectives = ("beta_vae", "beta_tcvae", "factor_vae", "dip_vae", "annealed_vae", "decoder_free")
  regularizers = [v for v in config_lib.VARIANTS if v.startswith(("gmg_", "dst_", "jacobian_"))]
  for objective in objectives:
    for hfs in ("", "hfs"):
      for regularizer in ["", *regularizers]:
        variant = ",".join(filter(None, [objective, hfs, regularizer, "runlocal"]))
        assert checks.inert_settings(config_lib.get_config(variant)) == [], variant


# 5. The weight of a regularizer variant, calibrated for cpu32.
def test_a_run_says_which_setting_its_weight_was_calibrated_for(run):
  out = run["first"].stdout
  assert "regularizer.weight=500 is gmg_cos_decoder's weight calibrated for the cpu32" in out
  assert "data.image_size=16" in out and "Regularizer gradient" in out
  cpu32 = config_lib.get_config("gmg_cos_decoder")
  for field, value in config_lib.CALIBRATION_SETTING.items():
    group, key = field.split(".")
    cpu32[group][key] = value
  assert config_lib.calibration_note(cpu32) is None  # The setting it was measured in.
  own = config_lib.get_config("runlocal,gmg_cos_decoder")
  own.regularizer.weight = 1000.0
  assert config_lib.calibration_note(own) is None  # A weight of the user's.


# 6. evaluate speaks its own syntax, prints one JSON document, keeps TensorBoard in order.
def test_evaluate_help_names_metrics_not_config_variants():
  result = _evaluate("--help")
  assert result.returncode == 0
  assert "Config variants" not in result.stdout and "--config" not in result.stdout
  assert "Metrics (--metrics=NAME,NAME): dci, mig, sap" in result.stdout


def test_evaluate_errors_speak_evaluates_syntax(run):
  result = _evaluate(f"--workdir={run['workdir']}", "--metrics=mig,dcii")
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert "Unknown metrics ['dcii']" in line and "--metrics=dci,mig" in line
  assert "--config" not in line


def test_evaluate_all_steps_is_one_json_document_and_tensorboard_stays_in_order(run):
  # 7. first: a second run of a finished command says so and writes nothing.
  assert "Already finished at step 20" in run["again"].stdout, run["again"].stdout
  assert run["again"].returncode == 0 and tree_digest(run["workdir"]) == run["before"]
  result = _evaluate(f"--workdir={run['workdir']}", "--step=all", "--metrics=mig")
  assert result.returncode == 0, result.stderr[-3000:]
  records = json.loads(result.stdout)
  assert [r["step"] for r in records] == [10, 20] and "discrete_mig" in records[0]["mig"]
  logdir = os.path.join(run["workdir"], "tensorboard", "eval")
  assert _tensorboard_steps(logdir) == [10, 20]  # The trainer wrote 20, evaluate 10 and 20.
  assert sorted(set(_tensorboard_steps(logdir, "image"))) == [10, 20]


# 7. Silences.
def test_the_trainer_says_what_it_is_doing(run):
  lines = run["first"].stdout.splitlines()
  assert lines[0] == "Loading JAX and the model code ..."
  order = [
    "Building the model ...",
    "Compiling the train step ...",
    "Evaluating at step 20",
    "Done",
  ]
  at = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
  assert at == sorted(at)


def test_a_divergence_before_any_checkpoint_says_there_is_none(tmp_path):
  config = tiny_config()
  config.optim.learning_rate = 1e3
  with pytest.raises(train.Diverged) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert error.value.step < config.train.checkpoint_every
  assert "No checkpoint was saved before it" in str(error.value)
  assert "Resume from" not in str(error.value)
  later = train.Diverged(12, {"loss": float("nan")}, last_checkpoint=10)
  assert "Resume from the last one (step 10)" in str(later)
