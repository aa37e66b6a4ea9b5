"""Tests of the dataset interface, the registry and jit behaviour (gmg_jax/data/base.py)."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmg_jax import data
from gmg_jax.config import get_config
from gmg_jax.data import base, files, procedural

ALL_GRIDS = {
  "dsprites": (3, 6, 40, 32, 32),
  "shapes3d": (10, 10, 10, 8, 4, 15),
  "mpi3d": (6, 6, 2, 3, 3, 40, 40),
  "smallnorb_full": (5, 10, 9, 18, 6),
  "cars3d": (4, 24, 183),
}


@pytest.mark.parametrize("grid", list(ALL_GRIDS))
def test_index_factor_round_trip_over_whole_grid(grid):
  sizes = ALL_GRIDS[grid]
  n = math.prod(sizes)
  index = np.arange(n)
  factors = base.grid_factors(index, sizes, np)
  # Row-major: the last factor varies fastest, as in the original files.
  assert factors[1, -1] == 1 and factors[sizes[-1], -2] == 1
  np.testing.assert_array_equal(factors[-1], np.asarray(sizes) - 1)
  np.testing.assert_array_equal(base.grid_index(factors, sizes, np), index)
  # The jnp path (int32) agrees with numpy over the whole grid.
  np.testing.assert_array_equal(
    np.asarray(base.grid_factors(jnp.asarray(index), sizes, jnp)), factors
  )
  np.testing.assert_array_equal(
    np.asarray(base.grid_index(jnp.asarray(factors), sizes, jnp)), index
  )


def test_real_specs_match_disentanglement_lib_grids():
  sizes = {name: spec.factor_sizes for name, spec in files.SPECS.items()}
  assert sizes["dsprites"] == (3, 6, 40, 32, 32)
  assert sizes["shapes3d"] == (10, 10, 10, 8, 4, 15)
  assert sizes["mpi3d_real"] == (6, 6, 2, 3, 3, 40, 40)
  assert files.SPECS["mpi3d_toy"].num_images == 1_036_800
  assert sizes["smallnorb"] == (5, 9, 18, 6)
  assert files.SPECS["smallnorb"].num_images == 48_600
  assert files.SPECS["cars3d"].num_images == 17_568
  # The procedural stand-ins use the same grids and names as the real sets.
  assert procedural.DSPRITES_FACTOR_SIZES == sizes["dsprites"]
  assert procedural.SHAPES3D_FACTOR_SIZES == sizes["shapes3d"]
  assert procedural.SHAPES3D_FACTOR_NAMES == files.SPECS["shapes3d"].factor_names


def test_sample_factors_is_uniform_over_grid():
  key = jax.random.key(0)
  ds = procedural.shapes3d_procedural(16)
  factors = np.asarray(jax.jit(ds.sample_factors, static_argnums=1)(key, 20_000))
  assert factors.dtype == np.int32 and factors.shape == (20_000, 6)
  for k, size in enumerate(ds.factor_sizes):
    counts = np.bincount(factors[:, k], minlength=size)
    assert len(counts) == size  # never out of range
    np.testing.assert_allclose(counts / len(factors), 1 / size, atol=0.02)


def test_get_dataset_registry_and_unknown_name():
  cfg = types.SimpleNamespace(
    name="dsprites_procedural", source="files", data_dir="", image_size=16
  )
  ds = data.get_dataset(cfg)
  assert ds.image_shape == (16, 16, 1) and ds.jittable
  assert ds.num_images == 737_280 and ds.num_factors == 5
  assert set(data.DATASETS) == {
    "dsprites_procedural",
    "shapes3d_procedural",
    "dsprites",
    "shapes3d",
    "mpi3d_toy",
    "mpi3d_realistic",
    "mpi3d_real",
    "smallnorb",
    "cars3d",
    "npz",
    "hdf5",
  }
  with pytest.raises(ValueError, match="valid names.*cars3d"):
    data.get_dataset(types.SimpleNamespace(name="mnist"))
  with pytest.raises(ValueError, match="data.source"):
    data.get_dataset(types.SimpleNamespace(name="cars3d", source="hub"))
  # A partial config gets the base config's defaults (gmg_jax/config.py), not a second copy.
  default_size = get_config().data.image_size
  partial = data.get_dataset(types.SimpleNamespace(name="shapes3d_procedural"))
  assert partial.image_shape == (default_size, default_size, 3)
  full = get_config().data
  full.image_size = 32
  assert data.get_dataset(full).image_shape == (32, 32, 3)


def _array_dataset(n_side=8):
  sizes = (2, 3, 4)
  images = np.arange(math.prod(sizes), dtype=np.uint8)[:, None, None, None] * np.ones(
    (1, n_side, n_side, 1), np.uint8
  )
  spec = base.Spec("toy", ("a", "b", "c"), sizes, (0, 1, 2), 1, ())
  return base.place(images, spec, on_device=True), images


@pytest.mark.parametrize("make", ["procedural", "array"])
def test_dataset_is_a_jit_argument_without_retracing(make):
  key = jax.random.key(0)
  ds = procedural.dsprites_procedural(16) if make == "procedural" else _array_dataset()[0]
  traces = []

  @jax.jit
  def step(dataset, key):
    traces.append(1)
    images, factors = dataset.sample_batch(key, 8)
    return images.astype(jnp.float32).mean(), factors

  out1 = step(ds, key)
  out2 = step(ds, jax.random.key(1))
  assert len(traces) == 1
  # Only device arrays are leaves: the procedural set has none, the array set its images.
  leaves = jax.tree.leaves(ds)
  assert len(leaves) == (0 if make == "procedural" else 1)
  eager_images, eager_factors = ds.sample_batch(key, 8)
  np.testing.assert_array_equal(np.asarray(out1[1]), np.asarray(eager_factors))
  np.testing.assert_allclose(float(out1[0]), float(eager_images.astype(jnp.float32).mean()))
  assert not np.array_equal(np.asarray(out1[1]), np.asarray(out2[1]))


def test_array_dataset_gathers_the_right_image():
  ds, images = _array_dataset()
  factors = jnp.asarray([[0, 0, 0], [1, 2, 3], [1, 0, 2]])
  got = np.asarray(jax.jit(lambda d, f: d.images_from_factors(f))(ds, factors))
  expected_index = [0, 1 * 12 + 2 * 4 + 3, 1 * 12 + 2]
  np.testing.assert_array_equal(got, images[expected_index])
  assert got.dtype == np.uint8


def test_host_dataset_is_numpy_and_not_jittable():
  key = jax.random.key(0)
  sizes = (2, 3)
  images = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
  spec = base.Spec("toy", ("a", "b"), sizes, (0, 1), 3, ())
  ds = base.place(images, spec, on_device=False)
  assert isinstance(ds, data.HostArrayDataset) and not ds.jittable
  batch, factors = ds.sample_batch(key, 16)
  assert isinstance(batch, np.ndarray) and batch.dtype == np.uint8
  np.testing.assert_array_equal(batch[:, 0, 0, 0], factors[:, 0] * 3 + factors[:, 1])
  np.testing.assert_array_equal(ds.index_to_factors(np.arange(6))[:, 1], [0, 1, 2] * 2)
  with pytest.raises(TypeError):
    jax.jit(lambda d: d.images)(ds)


def test_on_device_auto_uses_the_budget():
  images = np.zeros((6, 4, 4, 1), np.uint8)
  spec = base.Spec("toy", ("a", "b"), (2, 3), (0, 1), 1, ())
  assert base.place(images, spec, "auto", device_budget_gb=1.0).jittable
  assert not base.place(images, spec, "auto", device_budget_gb=images.nbytes / 2**31).jittable
  assert not base.place(images, spec, "host").jittable
  with pytest.raises(ValueError, match="on_device"):
    base.place(images, spec, "gpu")
  assert files.place is base.place  # experiments/bench_data.py calls files.place


def test_search_dirs_order(monkeypatch, tmp_path):
  monkeypatch.setenv("GMG_DATA_DIR", str(tmp_path / "env"))
  dirs = base.search_dirs(str(tmp_path / "cfg"))
  assert dirs[:2] == [str(tmp_path / "cfg"), str(tmp_path / "env")]
  assert dirs[2].endswith("gmg_data")
  assert base.search_dirs("")[0] == str(tmp_path / "env")
