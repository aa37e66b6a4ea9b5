"""A researcher's own regularizer or objective, registered from a file outside the package.

The example of docs/extending.md (`examples/own_regularizer/`: stress.py registers a regularizer,
my_config.py imports it) trains, logs and is scored from a directory outside the repository;
its misspelt field is refused before the workdir exists; the registered term is exactly the loss
term it claims (value and gradient, against an independent computation); a K-run varies its
float hyperparameter; `register_objective` does the same for an objective, and FactorVAE
re-registered with its critic trains bit-identically to the built-in one.
"""

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import ROOT, tiny_config
from flax import nnx

from gmg_jax import checks, losses, replicas
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses import objectives, registry
from gmg_jax.losses.terms import bernoulli_reconstruction, gaussian_kl
from gmg_jax.models import make_vae, to_float

EXAMPLE = os.path.join(ROOT, "examples", "own_regularizer")


@pytest.fixture
def registered():
  """Registers the example's "stress" in this process and restores the registry afterwards (so
  that no other test sees it)."""
  saved = (dict(registry._REGULARIZERS), dict(registry._OBJECTIVES))
  spec = importlib.util.spec_from_file_location("stress", os.path.join(EXAMPLE, "stress.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  yield module
  registry._REGULARIZERS.clear()
  registry._REGULARIZERS.update(saved[0])
  registry._OBJECTIVES.clear()
  registry._OBJECTIVES.update(saved[1])


def _stress_numpy(x, y, power):
  """The example's stress, computed independently in float64."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  dx = np.linalg.norm(x[:, None] - x[None], axis=-1) ** power
  dy = np.linalg.norm(y[:, None] - y[None], axis=-1) ** power
  scale = np.sum(dx * dy) / np.sum(dx * dx)
  return np.sum((dy - scale * dx) ** 2) / np.sum(dy * dy)


def _stress_config(power=1.0, weight=10.0):
  config = tiny_config()
  config.regularizer.name, config.regularizer.on = "stress", "decoder"
  config.regularizer.weight = weight
  config.regularizer.stress.power = power
  return config


def test_the_registered_regularizer_is_the_loss_term_it_claims(registered):
  config = _stress_config(power=1.5)
  assert dict(config.regularizer.stress) == {"power": 1.5}  # the group, from the keyword default
  assert checks.problems(config) == []
  model = make_vae(config.model, (16, 16, 3), decoder=True, rngs=nnx.Rngs(0))
  images = jax.random.randint(jax.random.key(1), (16, 16, 16, 3), 0, 256).astype(jnp.uint8)
  key, step = jax.random.key(2), 0
  loss_and_grad = losses.build(config).loss_and_grad(config)
  (loss, aux), grads = loss_and_grad(model, images, key, step)

  # Independently: the same codes, the decoder's sigmoid image, the stress in float64.
  keys = objectives.split_keys(key)
  mu, logvar = model.encode(to_float(images))
  z = objectives.reparameterize(mu, logvar, keys.sample)
  y = jax.nn.sigmoid(model.decode(z))
  stress, _ = registered.stress(None, z, y, None, power=1.5)
  # The step feeds it the sampled codes and the decoder's sigmoid image, and weighs it.
  np.testing.assert_allclose(aux["regularizer"], stress, rtol=1e-6)
  np.testing.assert_allclose(aux["regularizer/stress"], stress, rtol=1e-6)
  np.testing.assert_allclose(
    loss, aux["reconstruction"] + 4.0 * aux["kl"] + 10.0 * stress, rtol=1e-6
  )
  # The example computes what it says (float32 Gram-form distances: ~1e-4 round-off).
  np.testing.assert_allclose(stress, _stress_numpy(z, y, 1.5), rtol=1e-3)
  assert 0 < float(aux["grad/regularizer_share"]) < 1  # reads_outputs: the share is measured
  assert "grad/regularizer_to_distortion" not in aux  # it has no distortion to compare with

  # The step's gradient (the regularizer linearized once) is the plain loss's gradient.
  def direct(model):
    x = to_float(images)
    mu, logvar = model.encode(x)
    z = objectives.reparameterize(mu, logvar, keys.sample)
    logits = model.decode(z)
    value, _ = registered.stress(None, z, jax.nn.sigmoid(logits), None, power=1.5)
    return bernoulli_reconstruction(logits, x) + 4.0 * gaussian_kl(mu, logvar) + 10.0 * value

  expected = nnx.grad(direct)(model)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


def test_a_k_run_varies_a_registered_float_hyperparameter(registered):
  assert "regularizer.stress.power" in replicas.variable_fields()
  config = _stress_config()
  config.num_seeds, config.vary = 1, "regularizer.stress.power=1,2"
  runs = replicas.expand(config)
  assert [r.name for r in runs] == ["power=1,seed=0", "power=2,seed=0"]
  assert [r.config.regularizer.stress.power for r in runs] == [1.0, 2.0]
  # Traced, as inside a K-run's step, the value reaches the regularizer.
  model = make_vae(config.model, (16, 16, 3), decoder=True, rngs=nnx.Rngs(0))
  images = jnp.full((16, 16, 16, 3), 128, jnp.uint8).at[::2].set(30)
  built = losses.build(config)
  graphdef, state = nnx.split(model)

  def regularizer(state, power):
    run_config = replicas.with_values(runs[0].config, {"regularizer.stress.power": power})
    loss_and_grad = built.loss_and_grad(run_config)
    (_, aux), _ = loss_and_grad(nnx.merge(graphdef, state), images, jax.random.key(0), 0)
    return aux["regularizer"]

  traced = functools.partial(jax.jit(regularizer), state)
  for run in runs:
    (_, aux), _ = built.loss_and_grad(run.config)(model, images, jax.random.key(0), 0)
    # Jitted vs eager float32: fused round-off only.
    value = traced(run.values["regularizer.stress.power"])
    np.testing.assert_allclose(value, aux["regularizer"], rtol=1e-6)
  assert float(traced(1.0)) != float(traced(2.0))


def test_register_objective_and_its_checks():
  saved = dict(registry._OBJECTIVES)
  try:

    @losses.register_objective("l1_prior", ranges={"alpha": registry.NON_NEGATIVE})
    def l1_prior(inputs, *, alpha: float = 2.0, center: bool = True):
      mu = inputs.mu - jnp.mean(inputs.mu, axis=0) if center else inputs.mu
      value = alpha * jnp.mean(jnp.abs(mu))
      return value, {"l1": value}

    config = tiny_config()
    assert dict(config.objective.l1_prior) == {"alpha": 2.0, "center": True}
    config.objective.name = "l1_prior"
    assert checks.problems(config) == [] and checks.inert_settings(config) == []
    assert "objective.l1_prior.alpha" in replicas.variable_fields()
    assert "objective.l1_prior.center" not in replicas.variable_fields()  # not a float
    model = make_vae(config.model, (16, 16, 3), decoder=True, rngs=nnx.Rngs(0))
    images = jax.random.randint(jax.random.key(1), (16, 16, 16, 3), 0, 256).astype(jnp.uint8)
    loss, aux = loss_lib.vae_loss(
      model, images, jax.random.key(2), 0, config.objective, None, config.regularizer
    )
    mu, _ = model.encode(to_float(images))
    l1 = 2.0 * np.mean(np.abs(np.asarray(mu) - np.asarray(mu).mean(0)))
    np.testing.assert_allclose(aux["l1"], l1, rtol=1e-5)
    np.testing.assert_allclose(loss, aux["reconstruction"] + l1, rtol=1e-5)

    # Its own checks, the inert flat fields and a misspelt hyperparameter.
    config.objective.l1_prior.alpha = -1.0
    config.objective.beta = 8.0  # beta-VAE's field: l1_prior does not read it
    config.objective.l1_prior.alpah = 1.0
    found = "\n".join(checks.problems(config) + checks.inert_settings(config))
    assert "objective.l1_prior.alpha=-1.0: must be a finite number >= 0" in found
    assert "objective.beta=8.0 has no effect" in found
    assert "did you mean objective.l1_prior.alpha?" in found
  finally:
    registry._OBJECTIVES.clear()
    registry._OBJECTIVES.update(saved)


def test_registration_refuses_what_a_config_cannot_hold():
  def no_default(map_fn, x, y, key, *, scale):
    return x, {}

  with pytest.raises(TypeError, match="'scale' has no default"):
    losses.register_regularizer("mine")(no_default)

  def bad_default(map_fn, x, y, key, *, table=None):
    return x, {}

  with pytest.raises(TypeError, match="only bool, int, float, str or tuple"):
    losses.register_regularizer("mine")(bad_default)

  def other_gmg(map_fn, x, y, key):
    return x, {}

  with pytest.raises(ValueError, match="already registered by gmg_jax.losses.regularizers.gmg"):
    losses.register_regularizer("gmg")(other_gmg)
  with pytest.raises(ValueError, match="field of config.regularizer"):
    losses.register_regularizer("weight")(other_gmg)
  assert "mine" not in losses.regularizer_specs()


def test_an_unregistered_name_says_how_to_register_it():
  config = tiny_config()
  config.regularizer.name = "strss"
  config.regularizer.strss = ml_collections.ConfigDict({"power": 1.0})
  (problem,) = [p for p in checks.problems(config) if "strss" in p]
  assert "regularizer 'strss' is not registered" in problem and "import it" in problem


@pytest.mark.slow
def test_a_regularizer_from_outside_the_repository_trains_logs_and_is_scored(tmp_path):
  for name in ("stress.py", "my_config.py"):
    shutil.copy(os.path.join(EXAMPLE, name), tmp_path)
  workdir = tmp_path / "run"
  main = [sys.executable, "-m", "gmg_jax.main", "--config=my_config.py:runlocal,tiny"]
  train = subprocess.run(
    [*main, f"--workdir={workdir}"], cwd=tmp_path, capture_output=True, text=True, check=False
  )
  assert train.returncode == 0, train.stderr[-2000:]
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [5, 10, 15, 20]
  assert all(r["regularizer"] == r["regularizer/stress"] > 0 for r in records)
  assert all(0 < r["grad/regularizer_share"] < 1 for r in records)
  summary = json.loads((workdir / "train_summary.json").read_text())
  assert summary["median_regularizer_to_distortion"] is None
  assert "Regularizer gradient: median" in train.stdout

  # Scoring needs only the model: from the repository root, without the module imported.
  score = subprocess.run(
    [sys.executable, "-m", "gmg_jax.evaluate", f"--workdir={workdir}", "--metrics=mig"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert score.returncode == 0, score.stderr[-2000:]
  assert "mig" in json.loads((workdir / "metrics.json").read_text())

  # A misspelt hyperparameter, on the command line or in the file: refused, nothing written.
  flag = subprocess.run(
    [*main, "--config.regularizer.stress.powr=2", f"--workdir={tmp_path / 'bad'}"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    check=False,
  )
  assert flag.returncode == 2
  assert "did you mean --config.regularizer.stress.power?" in flag.stderr + flag.stdout
  text = (tmp_path / "my_config.py").read_text()
  (tmp_path / "my_config.py").write_text(
    text.replace("  return config", "  config.regularizer.stress.powr = 2.0\n  return config")
  )
  in_file = subprocess.run(
    [*main, f"--workdir={tmp_path / 'bad'}"], cwd=tmp_path, capture_output=True, text=True
  )
  assert in_file.returncode == 2
  assert "did you mean regularizer.stress.power?" in in_file.stderr + in_file.stdout
  assert not (tmp_path / "bad").exists()


def test_the_guide_shows_the_example_files_as_they_are():
  with open(os.path.join(ROOT, "docs", "extending.md"), encoding="utf-8") as f:
    guide = f.read()
  for name in ("stress.py", "my_config.py"):
    with open(os.path.join(EXAMPLE, name), encoding="utf-8") as f:
      assert f.read() in guide, f"docs/extending.md does not show {name} as it is"


def test_an_objective_with_its_own_critic_trains_like_the_built_in_factor_vae(tiny):
  """FactorVAE re-registered from outside the package, with its critic: two steps from the same
  seed give the built-in FactorVAE's parameters, critic's parameters and metrics, bit for bit."""
  import optax  # noqa: PLC0415

  from gmg_jax import data, models, train  # noqa: PLC0415

  saved = dict(registry._OBJECTIVES)
  try:
    critic = losses.Critic(
      models.make_discriminator,
      lambda optim: optax.adam(optim.disc_learning_rate, b1=optim.disc_b1, b2=optim.disc_b2),
      objectives.factor_vae_discriminator_loss,
    )

    @losses.register_objective("my_factor_vae", min_batch_size=2, critic=critic)
    def my_factor_vae(inputs, *, gamma: float = 7.0):
      tc = objectives.factor_vae_tc(inputs.critic(inputs.z))
      return gaussian_kl(inputs.mu, inputs.logvar) + gamma * tc, {"tc": tc}

    runs = []
    for name in ("factor_vae", "my_factor_vae"):
      config = tiny()
      config.objective.name = name
      config.objective.gamma = 7.0
      assert checks.problems(config) == []
      graphdef, state = train.create_train_state(config, (16, 16, 3))
      step = train.make_train_step(graphdef, config)
      dataset = data.get_dataset(config.data)
      for _ in range(2):
        state, metrics = step(state, dataset)
      runs.append((jax.tree.map(np.asarray, state.modules), jax.device_get(metrics)))
    (builtin, builtin_metrics), (mine, mine_metrics) = runs
    assert len(mine) == 4  # (vae, optimizer, critic, critic optimizer)
    jax.tree.map(np.testing.assert_array_equal, mine, builtin)
    assert set(builtin_metrics) <= set(mine_metrics)
    for key, value in builtin_metrics.items():
      np.testing.assert_array_equal(mine_metrics[key], value, err_msg=key)
  finally:
    registry._OBJECTIVES.clear()
    registry._OBJECTIVES.update(saved)
