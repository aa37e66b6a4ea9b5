"""Tests of the procedural dSprites / Shapes3D stand-ins (gmg_jax/data/procedural.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmg_jax.data import procedural

MAKERS = {"dsprites": procedural.dsprites_procedural, "shapes3d": procedural.shapes3d_procedural}


@pytest.fixture(scope="module", params=list(MAKERS))
def ds64(request):
  return MAKERS[request.param](64)


def test_every_level_of_every_factor_changes_the_image(ds64):
  base = np.asarray([s // 2 for s in ds64.factor_sizes])
  sweeps = []
  for k, size in enumerate(ds64.factor_sizes):
    factors = np.tile(base, (size, 1))
    factors[:, k] = np.arange(size)
    sweeps.append(factors)
  # One call for all sweeps: a single compiled program.
  images = np.asarray(ds64.images_from_factors(jnp.asarray(np.concatenate(sweeps))))
  images = np.split(images.astype(np.int32), np.cumsum(ds64.factor_sizes)[:-1])
  for k, sweep in enumerate(images):
    steps = np.abs(np.diff(sweep, axis=0)).mean(axis=(1, 2, 3))
    # Each step to the next level moves pixels, not just rounding noise.
    assert steps.min() > 0.05, (ds64.factor_names[k], steps.min())
    distinct = len({im.tobytes() for im in sweep})
    # dSprites' orientation grid includes both 0 and 2*pi, as in the real set.
    size = ds64.factor_sizes[k]
    expected = size - 1 if ds64.factor_names[k] == "orientation" and size == 40 else size
    assert distinct == expected, ds64.factor_names[k]


def test_shape_dtype_and_value_range(ds64):
  images, factors = ds64.sample_batch(jax.random.key(0), 16)
  assert images.shape == (16,) + ds64.image_shape and images.dtype == jnp.uint8
  assert factors.shape == (16, ds64.num_factors) and factors.dtype == jnp.int32
  if ds64.image_shape[-1] == 1:  # dSprites is binary {0, 255} like the scaled real set
    assert set(np.unique(np.asarray(images))) <= {0, 255}
  else:
    assert np.asarray(images).std() > 20


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("size", [16])
def test_deterministic_and_jit_equals_eager(name, size):
  ds = MAKERS[name](size)
  factors = ds.sample_factors(jax.random.key(3), 12)
  eager = np.asarray(ds.images_from_factors(factors))
  again = np.asarray(ds.images_from_factors(factors))
  jitted = np.asarray(jax.jit(lambda d, f: d.images_from_factors(f))(ds, factors))
  np.testing.assert_array_equal(eager, again)
  np.testing.assert_array_equal(eager, jitted)
  assert eager.shape == (12, size, size, ds.image_shape[-1])
  a = jax.jit(ds.sample_batch, static_argnums=1)(jax.random.key(5), 8)
  b = jax.jit(ds.sample_batch, static_argnums=1)(jax.random.key(5), 8)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_image_depends_only_on_factors():
  ds = procedural.shapes3d_procedural(32)
  f = jnp.asarray([[1, 2, 3, 4, 1, 7]])
  alone = np.asarray(ds.images_from_factors(f))[0]
  in_batch = np.asarray(ds.images_from_factors(jnp.concatenate([f * 0, f])))[1]
  np.testing.assert_array_equal(alone, in_batch)
