"""The output-gradient diagnostic: the regularizer's gradient w.r.t. the map's outputs, set beside
the distortion's and the rest of the loss's, logged every step and summarized per run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gmg_jax import data, gmg, train
from gmg_jax.losses import diagnostics, maps, objectives, regularizers
from gmg_jax.losses import loss as loss_lib
from gmg_jax.losses import terms as loss_terms


def _setup(tiny, variant):
  config = tiny(variant)
  graphdef, state = train.create_train_state(config, (16, 16, 3))
  dataset = data.get_dataset(config.data)
  data_key, loss_key, _ = train.step_keys(state.rng, state.step)
  images, _ = dataset.sample_batch(data_key, config.train.batch_size)
  model = nnx.merge(graphdef, state.modules, copy=True)[0]
  return config, graphdef, state, dataset, model, images, loss_key


@pytest.mark.parametrize("variant", ["dst_cos_decoder", "gmg_scl2_decoder", "gmg_cos_encoder"])
def test_output_gradients_equal_direct_differentiation(tiny, variant):
  config, _, _, _, model, images, key = _setup(tiny, variant)
  reg = regularizers.make_regularizer(config.regularizer)
  shape = maps.regularized_output_shape(config.regularizer, images.shape, 4)
  _, aux = loss_lib.vae_loss(
    model, images, key, 0, config.objective, reg, config.regularizer, probe=jnp.zeros(shape)
  )
  # The same batch by hand: codes, network output, regularizer and DST as functions of it.
  keys = objectives.split_keys(key)
  x = images.astype(jnp.float32) / 255.0
  mu, logvar = model.encode(x)
  if config.regularizer.on == "decoder":
    map_x = objectives.reparameterize(mu, logvar, keys.sample)
    out, to_y = model.decode(map_x), jax.nn.sigmoid
  else:
    map_x, out, to_y = x, mu, lambda o: o
  reg_grad = jax.grad(lambda o: reg(None, map_x, to_y(o), keys.regularizer)[0])(out)
  cost = config.regularizer[config.regularizer.name].cost
  dst_grad = jax.grad(
    lambda o: gmg.distortion(gmg.cost_matrix(map_x, cost), gmg.cost_matrix(to_y(o), cost))
  )(out)
  # float32: entries that cancel to ~1e-5 of the largest carry round-off of that size.
  scale = float(jnp.abs(reg_grad).max())
  np.testing.assert_allclose(
    aux[diagnostics.OUTPUT_GRADIENT], reg_grad, rtol=2e-4, atol=1e-5 * scale
  )
  norms = np.linalg.norm(reg_grad), np.linalg.norm(dst_grad)
  assert float(aux["grad/regularizer"]) == pytest.approx(norms[0], rel=1e-4)
  assert float(aux["grad/distortion"]) == pytest.approx(norms[1], rel=1e-4)
  assert float(aux["grad/regularizer_to_distortion"]) == pytest.approx(
    norms[0] / norms[1], rel=1e-4
  )
  cosine = float(np.vdot(reg_grad, dst_grad) / (norms[0] * norms[1]))
  assert float(aux["grad/cosine_to_distortion"]) == pytest.approx(cosine, abs=1e-4)
  if variant.startswith("dst"):  # DST against itself: ratio and cosine are 1.
    assert float(aux["grad/regularizer_to_distortion"]) == pytest.approx(1.0, rel=1e-5)
    assert float(aux["grad/cosine_to_distortion"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("variant", ["dst_cos_decoder", "gmg_cos_decoder", "gmg_scl2_encoder"])
def test_the_diagnosed_loss_has_the_plain_losss_value_and_parameter_gradients(tiny, variant):
  # With the probe, the loss takes the regularizer's first-order surrogate (one backward pass of
  # the regularizer); its gradient w.r.t. every parameter, through the outputs and the map's
  # inputs (the decoder's codes reach the encoder), must be the loss's own.
  config, _, _, _, model, images, key = _setup(tiny, variant)
  config.regularizer.weight = 50.0  # The regularizer's part of the gradient is not negligible.
  reg = regularizers.make_regularizer(config.regularizer)
  shape = maps.regularized_output_shape(config.regularizer, images.shape, 4)

  def loss(model, probe):
    return loss_lib.vae_loss(
      model, images, key, 0, config.objective, reg, config.regularizer, probe=probe
    )

  (plain, _), plain_grads = nnx.value_and_grad(loss, has_aux=True)(model, None)
  (diagnosed, aux), grads = nnx.value_and_grad(loss, has_aux=True)(model, jnp.zeros(shape))
  assert float(diagnosed) == pytest.approx(float(plain), rel=1e-6)
  assert float(aux["grad/regularizer"]) > 0
  flat_plain, flat = jax.tree.leaves(plain_grads), jax.tree.leaves(grads)
  assert len(flat) == len(flat_plain) > 0
  for got, want in zip(flat, flat_plain, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("weight", [1.0, 1e4])
def test_the_step_logs_the_regularizers_share_of_the_output_gradient(tiny, weight):
  config, graphdef, state, dataset, model, images, key = _setup(tiny, "dst_cos_decoder")
  config.regularizer.weight = weight
  reg = regularizers.make_regularizer(config.regularizer)
  # Beta-VAE on the decoder: the rest of the loss reaches the logits only through the
  # reconstruction, so its output gradient is the reconstruction's.
  keys = objectives.split_keys(key)
  x = images.astype(jnp.float32) / 255.0
  mu, logvar = model.encode(x)
  z = objectives.reparameterize(mu, logvar, keys.sample)
  logits = model.decode(z)
  rest = jax.grad(lambda o: loss_terms.bernoulli_reconstruction(o, x))(logits)
  reg_grad = jax.grad(lambda o: reg(None, z, jax.nn.sigmoid(o), keys.regularizer)[0])(logits)
  a, b = np.linalg.norm(weight * reg_grad), np.linalg.norm(rest)
  _, metrics = train.make_train_step(graphdef, config)(state, dataset)  # Donates `state`.
  assert float(metrics["grad/regularizer_share"]) == pytest.approx(a / (a + b), rel=1e-3)
  assert bool(metrics["grad/negligible"]) == (a / (a + b) < diagnostics.NEGLIGIBLE_SHARE)


def test_gradient_summary_takes_medians_and_flags_a_negligible_regularizer():
  records = [
    {
      "step": 50,
      "grad/regularizer_share": 0.001,
      "grad/regularizer_to_distortion": 0.2,
      "grad/cosine_to_distortion": 0.1,
      "grad/negligible": True,
    },
    {
      "step": 100,
      "grad/regularizer_share": 0.003,
      "grad/regularizer_to_distortion": 0.4,
      "grad/cosine_to_distortion": 0.3,
      "grad/negligible": True,
    },
    {
      "step": 150,
      "grad/regularizer_share": 0.5,
      "grad/regularizer_to_distortion": 0.9,
      "grad/cosine_to_distortion": 0.5,
      "grad/negligible": False,
    },
    {"step": 150, "loss": 3.0},  # A record without diagnostics (e.g. a run without them).
  ]
  assert train.gradient_summary(records) == {
    "logged_steps": 3,
    "median_regularizer_share": 0.003,
    "median_regularizer_to_distortion": 0.4,
    "median_cosine_to_distortion": 0.3,
    "negligible_fraction": pytest.approx(2 / 3),
    "negligible": True,
  }
  assert train.gradient_summary([{"step": 1, "loss": 1.0}]) is None


def test_a_run_with_an_inert_regularizer_says_so(tiny, tmp_path, capsys):
  config = tiny("gmg_cos_decoder")
  config.train.num_steps = 10
  config.regularizer.weight = 0.0  # Logged, but contributes nothing to the gradient.
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "train_summary.json") as f:
    summary = json.load(f)
  assert summary["median_regularizer_share"] == 0.0 and summary["negligible"]
  assert "NEGLIGIBLE" in capsys.readouterr().out
