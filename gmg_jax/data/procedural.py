"""Procedural stand-ins for dSprites and Shapes3D, rendered on the fly in JAX.

They are the embedded default dataset: no file, no download, any image size. Each has the same
factor names, grid sizes, index order and dtypes as the real set, so metrics that need fresh
images for fixed factors work exactly as on the real data, and a batch is sampled and drawn
inside the jitted train step (the dataset is a pytree without array leaves).

Rendering is a pure function of the factor *values* (the real sets' linspaces), evaluated per
pixel on a [S, S] grid with implicit shape functions; nothing is cached.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from gmg_jax.data.base import GroundTruthDataset

DSPRITES_FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
DSPRITES_FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES3D_FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
SHAPES3D_FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


def _pixel_grid(size: int) -> tuple[jax.Array, jax.Array]:
  """Pixel centres in [0, 1]: x [S, S] (columns), y [S, S] (rows, downwards)."""
  coords = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  y, x = jnp.meshgrid(coords, coords, indexing="ij")
  return x, y


def _rotate(u: jax.Array, v: jax.Array, angle: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Coordinates in a frame rotated by `angle` (radians)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return c * u + s * v, -s * u + c * v


def _render_sprite(factors: jax.Array, size: int) -> jax.Array:
  """One dSprites-like image.

  Args:
    factors: [5] int32 (shape, scale, orientation, pos_x, pos_y) classes.
    size: image side S.

  Returns:
    [S, S, 1] uint8 binary image in {0, 255}.
  """
  shape, scale_i, orient_i, x_i, y_i = (factors[k] for k in range(5))
  # The real set's factor values (dSprites README / latents_values).
  scale = jnp.linspace(0.5, 1.0, 6)[scale_i]
  angle = jnp.linspace(0.0, 2.0 * jnp.pi, 40)[orient_i]
  # Positions in [0, 1] map to the central 60% of the canvas, as in dSprites where sprites
  # never leave the frame.
  cx = 0.2 + 0.6 * x_i.astype(jnp.float32) / 31.0
  cy = 0.2 + 0.6 * y_i.astype(jnp.float32) / 31.0
  x, y = _pixel_grid(size)
  radius = 0.16 * scale
  u, v = _rotate((x - cx) / radius, (y - cy) / radius, angle)
  square = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= 0.8
  # An elongated ellipse so that orientation is visible (a circle would hide it).
  ellipse = u**2 + (v / 0.5) ** 2 <= 1.0
  # Implicit heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, point up in the rotated frame.
  hx, hy = 1.1 * u, -1.1 * v + 0.1
  heart = (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
  mask = jnp.stack([square, ellipse, heart])[shape]
  return (mask.astype(jnp.uint8) * 255)[..., None]


def _hsv_to_rgb(hue: jax.Array, saturation: float = 1.0, value: float = 1.0) -> jax.Array:
  """[3] RGB in [0, 1] of an HSV colour (hue in [0, 1))."""
  n = jnp.asarray([5.0, 3.0, 1.0])
  k = (n + hue * 6.0) % 6.0
  return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _render_shapes3d(factors: jax.Array, size: int) -> jax.Array:
  """One Shapes3D-like image: floor, wall and a shaded object, seen from a turning camera.

  Args:
    factors: [6] int32 (floor_hue, wall_hue, object_hue, scale, shape, orientation) classes.
    size: image side S.

  Returns:
    [S, S, 3] uint8 RGB image.
  """
  floor_i, wall_i, object_i, scale_i, shape, orient_i = (factors[k] for k in range(6))
  hues = jnp.linspace(0.0, 0.9, 10)
  scale = jnp.linspace(0.75, 1.25, 8)[scale_i]
  angle = jnp.deg2rad(jnp.linspace(-30.0, 30.0, 15)[orient_i])
  x, y = _pixel_grid(size)
  # Orientation turns the camera: the floor/wall edge tilts and the object turns with it.
  horizon = 0.55 + 0.5 * jnp.tan(angle) * (x - 0.5)
  is_floor = y > horizon
  # Depth shading: the floor darkens towards the horizon, the wall towards the top.
  floor_shade = 0.6 + 0.4 * jnp.clip((y - horizon) / 0.45, 0.0, 1.0)
  wall_shade = 0.75 + 0.25 * jnp.clip(y / 0.55, 0.0, 1.0)
  floor_rgb = _hsv_to_rgb(hues[floor_i]) * floor_shade[..., None]
  wall_rgb = _hsv_to_rgb(hues[wall_i]) * wall_shade[..., None]
  background = jnp.where(is_floor[..., None], floor_rgb, wall_rgb)

  half = 0.17 * scale
  cx, cy = 0.5, 0.72 - half  # the object stands on the floor
  u, v = _rotate((x - cx) / half, (y - cy) / half, 0.5 * angle)
  cube = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= 1.0
  cylinder = (jnp.abs(u) <= 0.75) & (
    (jnp.abs(v) <= 0.85) | (u**2 / 0.75**2 + (jnp.abs(v) - 0.85) ** 2 / 0.15**2 <= 1.0)
  )
  sphere = u**2 + v**2 <= 1.0
  capsule = (jnp.abs(u) <= 0.5) & (jnp.abs(v) <= 0.6) | (u**2 + (jnp.abs(v) - 0.6) ** 2 <= 0.25)
  mask = jnp.stack([cube, cylinder, sphere, capsule])[shape]
  # Light from the upper left gives each shape a distinct shading profile.
  shade = jnp.where(
    shape == 2,
    0.55 + 0.45 * jnp.clip(1.0 - 0.5 * ((u + 0.4) ** 2 + (v + 0.4) ** 2), 0.0, 1.0),
    0.7 + 0.3 * jnp.clip(0.5 - 0.5 * u, 0.0, 1.0),
  )
  object_rgb = _hsv_to_rgb(hues[object_i]) * shade[..., None]
  image = jnp.where(mask[..., None], object_rgb, background)
  return jnp.round(image * 255.0).astype(jnp.uint8)


@struct.dataclass
class ProceduralDataset(GroundTruthDataset):
  """A procedurally rendered dataset: a pytree with no array leaves, fully jittable.

  Attributes:
    name: registry name.
    factor_names: [K] names, the real set's order.
    factor_sizes: [K] sizes, the real set's grid.
    image_shape: (S, S, C).
    renderer: "dsprites" or "shapes3d".
  """

  name: str = struct.field(pytree_node=False)
  factor_names: tuple[str, ...] = struct.field(pytree_node=False)
  factor_sizes: tuple[int, ...] = struct.field(pytree_node=False)
  image_shape: tuple[int, int, int] = struct.field(pytree_node=False)
  renderer: str = struct.field(pytree_node=False)
  jittable: ClassVar[bool] = True

  def images_from_factors(self, factors: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Render images for factor tuples (no nuisance factors, so `key` is ignored).

    Args:
      factors: [n, K] int factor classes.
      key: unused.

    Returns:
      [n, S, S, C] uint8 images.
    """
    del key
    return _render_batch(jnp.asarray(factors, dtype=jnp.int32), self.renderer, self.image_shape[0])


_RENDERERS = {"dsprites": _render_sprite, "shapes3d": _render_shapes3d}


@functools.partial(jax.jit, static_argnums=(1, 2))
def _render_batch(factors: jax.Array, renderer: str, size: int) -> jax.Array:
  # Jitted so that eager calls (metrics, tests) run one compiled program instead of
  # dispatching every op; inside an outer jit it is simply inlined.
  return jax.vmap(lambda f: _RENDERERS[renderer](f, size))(factors)


def dsprites_procedural(image_size: int = 64) -> ProceduralDataset:
  """dSprites-like stand-in: 737,280 binary sprites (3 shapes, 6 scales, 40 angles, 32x32 pos).

  Args:
    image_size: side of the square image; 64 matches the real set.

  Returns:
    A jittable `ProceduralDataset` with image shape (image_size, image_size, 1).
  """
  return ProceduralDataset(
    name="dsprites_procedural",
    factor_names=DSPRITES_FACTOR_NAMES,
    factor_sizes=DSPRITES_FACTOR_SIZES,
    image_shape=(image_size, image_size, 1),
    renderer="dsprites",
  )


def shapes3d_procedural(image_size: int = 64) -> ProceduralDataset:
  """Shapes3D-like stand-in: 480,000 RGB scenes over the 3dshapes factor grid.

  Args:
    image_size: side of the square image; 64 matches the real set.

  Returns:
    A jittable `ProceduralDataset` with image shape (image_size, image_size, 3).
  """
  return ProceduralDataset(
    name="shapes3d_procedural",
    factor_names=SHAPES3D_FACTOR_NAMES,
    factor_sizes=SHAPES3D_FACTOR_SIZES,
    image_shape=(image_size, image_size, 3),
    renderer="shapes3d",
  )
