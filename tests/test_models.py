"""Tests for gmg_jax.models: disentanglement_lib shapes, parameter counts, the builders.

Shape and structure checks build abstract models with `nnx.eval_shape`: eager initialization
compiles a random-number kernel per parameter shape, seconds each on a shared 2-core CPU.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from gmg_jax import models


def _config(arch: str = "conv", **overrides) -> ml_collections.ConfigDict:
  fields = dict(arch=arch, latent_dim=10, mlp_hidden=(32, 16), disc_hidden=8, disc_layers=6)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _abstract_vae(cfg: ml_collections.ConfigDict, image_shape, *, decoder: bool = True):
  return nnx.eval_shape(
    lambda: models.make_vae(cfg, image_shape, decoder=decoder, rngs=nnx.Rngs(0))
  )


def _materialize(abstract: nnx.Module, seed: int = 0) -> nnx.Module:
  """Fills an abstract module's parameters with numpy normals (no per-shape init compiles)."""
  rng = np.random.default_rng(seed)
  graphdef, state = nnx.split(abstract)
  state = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), state)
  return nnx.merge(graphdef, state)


def _num_params(module: nnx.Module) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _dense_params(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


def _conv_params(k: int, c_in: int, c_out: int) -> int:
  return k * k * c_in * c_out + c_out


@pytest.mark.parametrize("image_shape", [(64, 64, 3), (32, 32, 1), (16, 32, 2)])
def test_conv_vae_shapes(image_shape):
  graphdef, state = nnx.split(_abstract_vae(_config(), image_shape))

  def forward(state, images):
    model = nnx.merge(graphdef, state)
    mu, logvar = model.encode(images)
    return mu, logvar, model.decode(mu)

  mu, logvar, logits = jax.eval_shape(
    forward, state, jax.ShapeDtypeStruct((2, *image_shape), jnp.uint8)
  )
  assert mu.shape == logvar.shape == (2, 10)
  assert logits.shape == (2, *image_shape)
  assert logits.dtype == jnp.float32


def test_conv_parameter_count_matches_disentanglement_lib_64x64x3():
  model = _abstract_vae(_config(), (64, 64, 3))
  encoder = (
    _conv_params(4, 3, 32)
    + _conv_params(4, 32, 32)
    + _conv_params(2, 32, 64)
    + _conv_params(2, 64, 64)
    + _dense_params(4 * 4 * 64, 256)
    + 2 * _dense_params(256, 10)
  )
  decoder = (
    _dense_params(10, 256)
    + _dense_params(256, 1024)
    + _conv_params(4, 64, 64)
    + _conv_params(4, 64, 32)
    + _conv_params(4, 32, 32)
    + _conv_params(4, 32, 3)
  )
  assert _num_params(model.encoder) == encoder
  assert _num_params(model.decoder) == decoder
  # The 32x32 decoder starts at 2x2x64 (FC 256 instead of FC 1024).
  small = _abstract_vae(_config(), (32, 32, 1))
  assert small.decoder.fc2.kernel.shape == (256, 2 * 2 * 64)


def test_conv_rejects_sizes_not_divisible_by_16():
  with pytest.raises(ValueError, match="multiples of 16"):
    models.make_vae(_config(), (20, 20, 1), decoder=True, rngs=nnx.Rngs(0))


def test_mlp_vae_shapes_and_mirrored_widths():
  model = _materialize(_abstract_vae(_config("mlp", latent_dim=4, mlp_hidden=(8,)), (2, 3, 1)))
  raw = np.random.default_rng(0).integers(0, 256, (3, 2, 3, 1)).astype(np.uint8)

  @nnx.jit
  def forward(model, raw):
    mu, _ = model.encode(raw)
    # to_float runs inside encode: the same images as floats in [0, 1] must agree.
    return mu, model.encode(raw.astype(jnp.float32) / 255.0)[0], model.decode(mu)

  mu, mu_from_float, logits = forward(model, raw)
  assert mu.shape == (3, 4)
  assert logits.shape == (3, 2, 3, 1)
  np.testing.assert_allclose(mu, mu_from_float, rtol=1e-5, atol=1e-6)
  model = _abstract_vae(_config("mlp"), (8, 8, 1))
  assert [layer.kernel.shape for layer in model.encoder.layers] == [(64, 32), (32, 16)]
  assert [layer.kernel.shape for layer in model.decoder.layers] == [(10, 16), (16, 32)]


def test_unknown_arch_is_named():
  with pytest.raises(ValueError, match="'resnet'"):
    models.make_vae(_config("resnet"), (8, 8, 1), decoder=True, rngs=nnx.Rngs(0))


def test_to_float():
  images = jnp.array([[0, 128, 255]], jnp.uint8)
  np.testing.assert_allclose(models.to_float(images), [[0.0, 128 / 255, 1.0]], rtol=1e-6)
  assert models.to_float(images).dtype == jnp.float32
  floats = jnp.array([0.25, 0.5], jnp.float32)
  np.testing.assert_array_equal(models.to_float(floats), floats)


def test_decoder_free_model_has_no_decoder_parameters():
  model = _abstract_vae(_config(), (32, 32, 1), decoder=False)
  full = _abstract_vae(_config(), (32, 32, 1))
  assert model.decoder is None
  assert "decoder" not in nnx.state(model, nnx.Param)
  assert _num_params(model) == _num_params(full.encoder)
  with pytest.raises(ValueError, match="decoder=False"):
    model.decode(jnp.zeros((1, 10)))


def test_discriminator_structure():
  disc = nnx.eval_shape(lambda: models.make_discriminator(_config(), rngs=nnx.Rngs(0)))
  assert len(disc.layers) == 6
  assert [layer.kernel.shape for layer in disc.layers] == [(10, 8)] + [(8, 8)] * 5
  assert disc.out.kernel.shape == (8, 2)
  default = nnx.eval_shape(lambda: models.Discriminator(3, rngs=nnx.Rngs(0)))
  assert len(default.layers) == 6 and default.layers[-1].kernel.shape == (1000, 1000)


def test_discriminator_uses_leaky_relu():
  # A critic whose weights are all ones on 1 layer: out = sum(leaky(z * 1)) per logit.
  abstract = nnx.eval_shape(
    lambda: models.Discriminator(1, hidden=1, num_layers=1, rngs=nnx.Rngs(0))
  )
  graphdef, state = nnx.split(abstract)
  disc = nnx.merge(graphdef, jax.tree.map(lambda s: np.ones(s.shape, np.float32), state))
  # out = leaky(z + 1) + 1 per logit.
  np.testing.assert_allclose(
    disc(np.array([[-3.0], [2.0]], np.float32)), [[0.6, 0.6], [4.0, 4.0]], rtol=1e-6
  )
