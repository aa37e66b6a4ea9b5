"""Flax NNX models: disentanglement_lib conv encoder/decoder, MLPs, VAE and FactorVAE critic.

The conv pair follows disentanglement_lib (`methods/shared/architectures.py`, `conv_encoder` and
`deconv_decoder`) for images of shape [H, W, C]:

  encoder: conv32 k4 s2, conv32 k4 s2, conv64 k2 s2, conv64 k2 s2 (ReLU, SAME), FC256 (ReLU),
           then FC latent for the mean and FC latent for the log-variance;
  decoder: FC256, FC(h0 * w0 * 64), reshape [h0, w0, 64], deconv64 k4 s2, deconv32 k4 s2,
           deconv32 k4 s2 (ReLU, SAME), deconv C k4 s2 -> logits,

with (h0, w0) = (H / 16, W / 16), i.e. the 4x4x64 = FC1024 of the 64x64 original; 32x32 images
start the decoder at 2x2, 16x16 images at 1x1. H and W must be multiples of 16. Kernels use
Glorot-uniform and biases zeros, the TensorFlow defaults disentanglement_lib ran with.

The MLP pair flattens the image (`mlp_hidden` ReLU layers each way, mirrored in the decoder).
Images arrive as uint8; `to_float` maps them to float32 in [0, 1] inside `VAE.encode`, so the
encoder also accepts images that are already float (the encoder regularizer calls it on them).

`make_vae(model_config, image_shape, decoder=..., rngs=...)` builds a `VAE` from the config
fields `arch` ("conv" | "mlp"), `latent_dim` and `mlp_hidden`; `make_discriminator(model_config,
rngs=...)` builds the FactorVAE critic from `latent_dim`, `disc_hidden` and `disc_layers`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gmg_jax.registry import lookup

_KERNEL_INIT = nnx.initializers.xavier_uniform()
_BIAS_INIT = nnx.initializers.zeros_init()
# Spatial downsampling of the four stride-2 encoder convolutions (and upsampling of the decoder).
_CONV_STRIDE_PRODUCT = 16


def to_float(images: jax.Array) -> jax.Array:
  """Maps uint8 images to float32 in [0, 1]; float inputs are only cast to float32.

  Args:
    images: [..., H, W, C] uint8 (0..255) or float images.

  Returns:
    [..., H, W, C] float32 images in [0, 1].
  """
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _dense(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(
    in_features, out_features, kernel_init=_KERNEL_INIT, bias_init=_BIAS_INIT, rngs=rngs
  )


def _dense_stack(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([_dense(a, b, rngs) for a, b in itertools.pairwise(widths)])


def _check_conv_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}.")
  height, width, channels = (int(s) for s in image_shape)
  if height % _CONV_STRIDE_PRODUCT or width % _CONV_STRIDE_PRODUCT:
    raise ValueError(
      f"The conv architecture halves the image 4 times, so H and W must be multiples of "
      f"{_CONV_STRIDE_PRODUCT}; got image_shape {(height, width, channels)}. Use arch='mlp' "
      "or resize the images."
    )
  return height, width, channels


class ConvEncoder(nnx.Module):
  """disentanglement_lib conv encoder: images -> (mean, log-variance)."""

  def __init__(self, image_shape: Sequence[int], latent_dim: int, *, rngs: nnx.Rngs):
    """Builds the encoder.

    Args:
      image_shape: (H, W, C) with H and W multiples of 16.
      latent_dim: size of the latent code.
      rngs: parameter initialization keys.
    """
    height, width, channels = _check_conv_shape(image_shape)
    specs = ((channels, 32, 4), (32, 32, 4), (32, 64, 2), (64, 64, 2))
    self.convs = nnx.List(
      [
        nnx.Conv(
          c_in,
          c_out,
          kernel_size=(k, k),
          strides=(2, 2),
          padding="SAME",
          kernel_init=_KERNEL_INIT,
          bias_init=_BIAS_INIT,
          rngs=rngs,
        )
        for c_in, c_out, k in specs
      ]
    )
    flat = (height // _CONV_STRIDE_PRODUCT) * (width // _CONV_STRIDE_PRODUCT) * 64
    self.fc = _dense(flat, 256, rngs)
    self.mean = _dense(256, latent_dim, rngs)
    self.logvar = _dense(256, latent_dim, rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes a batch.

    Args:
      x: [B, H, W, C] float images in [0, 1].

    Returns:
      mean [B, latent_dim] and log-variance [B, latent_dim].
    """
    h = x
    for conv in self.convs:
      h = jax.nn.relu(conv(h))
    h = jax.nn.relu(self.fc(h.reshape(h.shape[0], -1)))
    return self.mean(h), self.logvar(h)


class ConvDecoder(nnx.Module):
  """disentanglement_lib deconv decoder: latent codes -> Bernoulli logits."""

  def __init__(self, image_shape: Sequence[int], latent_dim: int, *, rngs: nnx.Rngs):
    """Builds the decoder.

    Args:
      image_shape: (H, W, C) of the output, H and W multiples of 16.
      latent_dim: size of the latent code.
      rngs: parameter initialization keys.
    """
    height, width, channels = _check_conv_shape(image_shape)
    self.start_shape = (height // _CONV_STRIDE_PRODUCT, width // _CONV_STRIDE_PRODUCT, 64)
    self.fc1 = _dense(latent_dim, 256, rngs)
    self.fc2 = _dense(256, math.prod(self.start_shape), rngs)
    specs = ((64, 64), (64, 32), (32, 32), (32, channels))
    self.deconvs = nnx.List(
      [
        nnx.ConvTranspose(
          c_in,
          c_out,
          kernel_size=(4, 4),
          strides=(2, 2),
          padding="SAME",
          kernel_init=_KERNEL_INIT,
          bias_init=_BIAS_INIT,
          rngs=rngs,
        )
        for c_in, c_out in specs
      ]
    )

  def __call__(self, z: jax.Array) -> jax.Array:
    """Decodes a batch of codes.

    Args:
      z: [B, latent_dim] latent codes.

    Returns:
      [B, H, W, C] logits of the pixel-wise Bernoulli likelihood.
    """
    h = jax.nn.relu(self.fc1(z))
    h = jax.nn.relu(self.fc2(h)).reshape(z.shape[0], *self.start_shape)
    for deconv in self.deconvs[:-1]:
      h = jax.nn.relu(deconv(h))
    return self.deconvs[-1](h)


class MLPEncoder(nnx.Module):
  """Fully connected encoder on flattened images: images -> (mean, log-variance)."""

  def __init__(
    self, image_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], *, rngs: nnx.Rngs
  ):
    """Builds the encoder.

    Args:
      image_shape: (H, W, C) (any shape; it is flattened).
      latent_dim: size of the latent code.
      hidden: widths of the ReLU hidden layers, input side first.
      rngs: parameter initialization keys.
    """
    widths = (math.prod(image_shape), *hidden)
    self.layers = _dense_stack(widths, rngs)
    self.mean = _dense(widths[-1], latent_dim, rngs)
    self.logvar = _dense(widths[-1], latent_dim, rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes a batch.

    Args:
      x: [B, *image_shape] float images in [0, 1].

    Returns:
      mean [B, latent_dim] and log-variance [B, latent_dim].
    """
    h = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      h = jax.nn.relu(layer(h))
    return self.mean(h), self.logvar(h)


class MLPDecoder(nnx.Module):
  """Fully connected decoder: latent codes -> Bernoulli logits of the image shape."""

  def __init__(
    self, image_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], *, rngs: nnx.Rngs
  ):
    """Builds the decoder.

    Args:
      image_shape: (H, W, C) of the output.
      latent_dim: size of the latent code.
      hidden: widths of the encoder's hidden layers; the decoder mirrors them (reversed).
      rngs: parameter initialization keys.
    """
    self.image_shape = tuple(int(s) for s in image_shape)
    widths = (latent_dim, *reversed(tuple(hidden)))
    self.layers = _dense_stack(widths, rngs)
    self.out = _dense(widths[-1], math.prod(self.image_shape), rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Decodes a batch of codes.

    Args:
      z: [B, latent_dim] latent codes.

    Returns:
      [B, *image_shape] logits of the pixel-wise Bernoulli likelihood.
    """
    h = z
    for layer in self.layers:
      h = jax.nn.relu(layer(h))
    return self.out(h).reshape(z.shape[0], *self.image_shape)


class VAE(nnx.Module):
  """Gaussian-encoder VAE; `decoder` is None for the decoder-free model."""

  def __init__(self, encoder: nnx.Module, decoder: nnx.Module | None):
    """Wraps an encoder and an optional decoder.

    Args:
      encoder: maps [B, H, W, C] float images to (mean, log-variance), each [B, D].
      decoder: maps [B, D] codes to [B, H, W, C] logits, or None (decoder-free model).
    """
    self.encoder = encoder
    self.decoder = decoder

  def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior parameters of a batch.

    Args:
      images: [B, H, W, C] uint8 images, or float images in [0, 1].

    Returns:
      mu [B, D] and logvar [B, D] of the diagonal Gaussian q(z | x).
    """
    return self.encoder(to_float(images))

  def decode(self, z: jax.Array) -> jax.Array:
    """Bernoulli logits of the reconstruction.

    Args:
      z: [B, D] latent codes.

    Returns:
      [B, H, W, C] logits.

    Raises:
      ValueError: for the decoder-free model.
    """
    if self.decoder is None:
      raise ValueError("This VAE was built with decoder=False and cannot decode.")
    return self.decoder(z)


class Discriminator(nnx.Module):
  """FactorVAE critic: `num_layers` x Dense(hidden) with LeakyReLU(0.2), then 2 logits.

  Logit 0 scores "sample of q(z)", logit 1 "sample of prod_j q(z_j)" (dlib's convention).
  """

  def __init__(self, latent_dim: int, *, hidden: int = 1000, num_layers: int = 6, rngs: nnx.Rngs):
    """Builds the critic.

    Args:
      latent_dim: size of the latent code.
      hidden: width of each hidden layer (1000 in FactorVAE).
      num_layers: number of hidden layers (6 in FactorVAE).
      rngs: parameter initialization keys.
    """
    widths = (latent_dim,) + (hidden,) * num_layers
    self.layers = _dense_stack(widths, rngs)
    self.out = _dense(widths[-1], 2, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Scores a batch of codes.

    Args:
      z: [B, D] latent codes.

    Returns:
      [B, 2] logits.
    """
    h = z
    for layer in self.layers:
      h = jax.nn.leaky_relu(layer(h), negative_slope=0.2)
    return self.out(h)


ARCHITECTURES: dict[str, tuple[Callable[..., nnx.Module], Callable[..., nnx.Module]]] = {
  "conv": (
    lambda shape, cfg, rngs: ConvEncoder(shape, cfg.latent_dim, rngs=rngs),
    lambda shape, cfg, rngs: ConvDecoder(shape, cfg.latent_dim, rngs=rngs),
  ),
  "mlp": (
    lambda shape, cfg, rngs: MLPEncoder(shape, cfg.latent_dim, cfg.mlp_hidden, rngs=rngs),
    lambda shape, cfg, rngs: MLPDecoder(shape, cfg.latent_dim, cfg.mlp_hidden, rngs=rngs),
  ),
}


def make_vae(
  model_config: ml_collections.ConfigDict,
  image_shape: Sequence[int],
  *,
  decoder: bool,
  rngs: nnx.Rngs,
) -> VAE:
  """Builds the VAE named by the config.

  Args:
    model_config: fields `arch` ("conv" | "mlp"), `latent_dim` and `mlp_hidden` (tuple of widths,
      used by "mlp").
    image_shape: (H, W, C) of the data.
    decoder: False builds the decoder-free model (`VAE.decoder is None`).
    rngs: parameter initialization keys.

  Returns:
    The VAE.

  Raises:
    ValueError: unknown architecture, or an image shape the architecture cannot take.
  """
  make_encoder, make_decoder = lookup(ARCHITECTURES, model_config.arch, "model.arch")
  shape = tuple(int(s) for s in image_shape)
  return VAE(
    make_encoder(shape, model_config, rngs),
    make_decoder(shape, model_config, rngs) if decoder else None,
  )


def make_discriminator(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Discriminator:
  """Builds the FactorVAE critic from `latent_dim`, `disc_hidden` and `disc_layers`.

  Args:
    model_config: the model config.
    rngs: parameter initialization keys.

  Returns:
    The discriminator.
  """
  return Discriminator(
    model_config.latent_dim,
    hidden=model_config.disc_hidden,
    num_layers=model_config.disc_layers,
    rngs=rngs,
  )
