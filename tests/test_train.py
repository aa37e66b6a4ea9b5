"""Tests for the trainer: one compilation, learning, resume after SIGKILL/SIGTERM, bad input."""

import json
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import ROOT, tiny_config, tiny_main_command
from flax import nnx

from gmg_jax import checkpointing, cli, data, train
from gmg_jax import train_step as train_step_lib
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses import regularizers


def _params(state):
  return jax.tree.leaves(state.modules)


def _run_main(workdir, *overrides, wait=True, env=None):
  cmd = tiny_main_command(workdir, *overrides)
  kwargs = dict(
    cwd=ROOT,
    env={**os.environ, **(env or {})},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  if wait:
    return subprocess.run(cmd, timeout=300, check=False, **kwargs)
  return subprocess.Popen(cmd, **kwargs)


def _latest_params(workdir):
  config = tiny_config()
  with open(os.path.join(workdir, "config.json")) as f:
    config = type(config)(json.load(f))
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  manager = checkpointing.make_manager(workdir, config.train)
  state, meta = checkpointing.restore(manager, state)
  return state, meta


def test_step_compiles_once_and_training_lowers_the_loss(tiny, tmp_path, monkeypatch):
  traces = 0
  original = train_step_lib.train_step

  def counting(*args, **kwargs):
    nonlocal traces
    traces += 1
    return original(*args, **kwargs)

  monkeypatch.setattr(train_step_lib, "train_step", counting)
  config = tiny()
  config.train.num_steps = 300
  config.train.log_every = 20
  train.train_and_evaluate(config, str(tmp_path))
  assert traces == 1
  with open(tmp_path / "metrics.jsonl") as f:
    losses = [json.loads(line)["loss"] for line in f]
  assert len(losses) == 15  # The reconstruction of this tiny MLP falls ~30% in 300 steps.
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])


# Each variant's penalty, the config field weighting it, and the aux key it is logged under.
_PENALTIES = [
  ("gmg_cos_decoder", "regularizer.weight", "regularizer"),
  ("gmg_scl2_encoder", "regularizer.weight", "regularizer"),
  ("jacobian_decoder", "regularizer.weight", "regularizer"),
  ("factor_vae", "objective.gamma", "tc"),
]


def _loss_fn(config, field, graphdef, state, images):
  """jit((params, weight) -> (loss, aux, grads)): the step's loss on one batch, `field` = weight."""
  modules = nnx.merge(graphdef, state.modules)
  vae, critic = modules[0], (modules[2] if len(modules) == 4 else None)
  vae_graph, params, rest = nnx.split(vae, nnx.Param, ...)
  _, loss_key, _ = train.step_keys(state.rng, 0)
  regularizer_fn = regularizers.make_regularizer(config.regularizer)
  group, name = field.split(".")

  @jax.jit
  def fn(params, weight):
    # A new ConfigDict takes the traced weight (one compilation serves every weight).
    groups = {g: config[g].to_dict() for g in ("objective", "regularizer")}
    groups[group][name] = weight
    groups = {g: ml_collections.ConfigDict(v) for g, v in groups.items()}

    def loss(model):
      return loss_lib.vae_loss(
        model,
        images,
        loss_key,
        0,
        groups["objective"],
        regularizer_fn,
        groups["regularizer"],
        critic,
      )

    (value, aux), grads = nnx.value_and_grad(loss, has_aux=True)(nnx.merge(vae_graph, params, rest))
    return value, aux, grads

  return fn, params


@pytest.mark.parametrize(("variant", "field", "term"), _PENALTIES)
def test_each_penalty_enters_the_loss_and_its_gradient_at_its_weight(variant, field, term):
  # loss(w) = rest + w * term: raising w by dw adds dw * term to the loss and dw * grad(term) to
  # the gradient, and grad(term) is the term's own derivative (central differences along it). A
  # penalty logged but left out of the loss, or cut from the gradient, fails here.
  config = tiny_config(variant)
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  dataset = data.get_dataset(config.data)
  images, _ = dataset.sample_batch(train.step_keys(state.rng, 0)[0], config.train.batch_size)
  fn, params = _loss_fn(config, field, graphdef, state, images)
  loss_0, aux_0, grads_0 = fn(params, 0.0)
  value = float(aux_0[term])
  assert value != 0
  dw = 10.0 / abs(value)  # a loss change far above float32 round-off of the loss
  loss_1, aux_1, grads_1 = fn(params, dw)
  assert float(aux_1[term]) == value  # the term itself does not depend on its weight
  np.testing.assert_allclose(float(loss_1 - loss_0), dw * value, rtol=1e-3)
  term_grad = jax.tree.map(lambda a, b: (a - b) / dw, grads_1, grads_0)
  norm = float(optax.tree.norm(term_grad))
  assert norm > 0
  direction = jax.tree.map(lambda g: g / norm, term_grad)
  h = 1e-2 / max(norm, 1.0)

  def term_at(t):
    shifted = jax.tree.map(lambda p, d: p + t * d, params, direction)
    return float(fn(shifted, 0.0)[1][term])

  if variant.startswith("gmg"):
    return  # the certified GMG trains the envelope gradient, not its own value's (test_gmg.py)
  # d/dt term(params + t * grad / |grad|) at t=0 is |grad(term)|.
  np.testing.assert_allclose((term_at(h) - term_at(-h)) / (2 * h), norm, rtol=0.1)


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tiny, tmp_path, monkeypatch):
  original = loss_lib.vae_loss

  def poisoned(model, images, key, step, *args, **kwargs):
    loss, aux = original(model, images, key, step, *args, **kwargs)
    return loss * jnp.where(step >= 13, jnp.nan, 1.0), aux

  monkeypatch.setattr(loss_lib, "vae_loss", poisoned)
  config = tiny()
  with pytest.raises(FloatingPointError, match=r"step 14 .*kl=.*reconstruction="):
    train.train_and_evaluate(config, str(tmp_path))
  manager = checkpointing.make_manager(str(tmp_path), config.train)
  assert manager.latest_step() == 10
  state, _ = checkpointing.restore(manager, train.create_train_state(config, (16, 16, 3))[1])
  assert all(np.all(np.isfinite(np.asarray(p))) for p in _params(state))


@pytest.mark.parametrize("variant", ["", "factor_vae"])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # On purpose.
def test_a_step_whose_parameters_overflow_is_not_applied(tiny, variant):
  """A finite loss and gradient, but a learning rate that overflows float32 (inf): the new
  parameters are inf while the Adam moments stay finite (the step checks only the parameters).
  The step must flag it and keep the old state."""
  config = tiny(variant)
  config.optim.learning_rate = 1e39  # A finite Python float; inf in float32.
  dataset = data.get_dataset(config.data)
  graphdef, state = train.create_train_state(config, dataset.image_shape)
  before = jax.tree.map(np.array, state.modules)
  new, metrics = train.make_train_step(graphdef, config)(jax.tree.map(jnp.copy, state), dataset)
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
  assert not bool(metrics["finite"]) and int(new.step) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(new.modules), strict=True):
    np.testing.assert_array_equal(a, np.asarray(b))
  # What the check relies on: the same update unguarded has finite moments, infinite parameters.
  modules = nnx.merge(graphdef, jax.tree.map(jnp.asarray, before))
  vae, optimizer = modules[:2]
  grads = nnx.grad(lambda m: jnp.sum(m.encode(dataset.sample_batch(jax.random.key(0), 8)[0])[0]))(
    vae
  )
  optimizer.update(vae, grads)
  assert not all(np.all(np.isfinite(p)) for p in jax.tree.leaves(nnx.state(vae, nnx.Param)))
  assert all(np.all(np.isfinite(m)) for m in jax.tree.leaves(nnx.state(optimizer.opt_state)))


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
  steps = ["--config.train.num_steps=60", "--config.train.checkpoint_every=10"]
  reference = _run_main(tmp_path / "reference", *steps)
  assert reference.returncode == 0, reference.stdout[-3000:]

  killed = tmp_path / "killed"
  proc = _run_main(killed, *steps, wait=False)
  ckpt_dir = killed / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    if ckpt_dir.exists() and any(
      p.name.isdigit() and int(p.name) >= 20 for p in ckpt_dir.iterdir()
    ):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = _run_main(killed, *steps)
  assert resumed.returncode == 0, resumed.stdout[-3000:]

  ref_state, _ = _latest_params(tmp_path / "reference")
  res_state, meta = _latest_params(killed)
  assert int(res_state.step) == int(ref_state.step) == 60 and meta["data_position"] == 60
  for a, b in zip(_params(ref_state), _params(res_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The resumed run's log has each step once.
  with open(killed / "metrics.jsonl") as f:
    steps_logged = [json.loads(line)["step"] for line in f]
  assert steps_logged == sorted(set(steps_logged))


@pytest.mark.slow
def test_sigterm_saves_before_exiting(tmp_path):
  proc = _run_main(
    tmp_path,
    "--config.train.num_steps=100000",
    "--config.train.checkpoint_every=100000",
    wait=False,
  )
  log = tmp_path / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (log.exists() and log.stat().st_size > 0):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == cli.EXIT_PREEMPTED, out[-3000:]
  state, meta = _latest_params(tmp_path)
  assert 0 < int(state.step) < 100000 and meta["step"] == int(state.step)


def test_bad_config_keys_fail_before_any_work(tmp_path):
  typo = _run_main(tmp_path / "a", "--config.train.num_stepz=5")
  assert typo.returncode != 0 and "num_stepz" in typo.stdout
  wrong_type = _run_main(tmp_path / "b", "--config.train.batch_size=abc")
  assert wrong_type.returncode != 0 and "batch_size" in wrong_type.stdout
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unknown_metric_fails_before_any_work(tiny, tmp_path):
  config = tiny()
  config.eval.every_steps = 5
  config.eval.metrics = ("mig", "dcii")
  with pytest.raises(ValueError, match=r"Unknown metrics \['dcii'\].*--config.eval.metrics="):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_batch_size_not_divisible_by_devices_names_both_numbers(tiny, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  config = tiny()
  with pytest.raises(ValueError, match=r"batch_size=16 .* device count 3"):
    train.train_and_evaluate(config, str(tmp_path))


def test_workdir_with_a_different_config_refuses_to_resume(tiny, tmp_path):
  config = tiny()
  config.train.num_steps = 2
  train.train_and_evaluate(config, str(tmp_path))
  changed = tiny()
  changed.objective.beta = 8.0
  with pytest.raises(ValueError, match=r"objective.beta: 4.0 -> 8.0.*resume_with_changed_config"):
    train.train_and_evaluate(changed, str(tmp_path))
  longer = tiny()
  longer.train.num_steps = 4  # Extending a run is allowed.
  assert int(train.train_and_evaluate(longer, str(tmp_path)).step) == 4
