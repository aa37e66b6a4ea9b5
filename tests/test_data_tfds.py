"""Tests of `data.source = "tfds"` under tfds.testing.mock_data (no network, no TensorFlow)."""

import dataclasses
import math
import types

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from gmg_jax import data  # noqa: E402
from gmg_jax.data import files  # noqa: E402
from gmg_jax.data import tfds as tfds_source  # noqa: E402
from gmg_jax.data.base import DataFileError, grid_factors  # noqa: E402


def _examples(sizes, label_keys, image_shape, split_filter=None):
  """Shuffled examples of a full grid whose image's first pixel is the grid index."""
  n = math.prod(sizes)
  classes = grid_factors(np.arange(n), sizes)
  out = []
  for i in np.random.default_rng(0).permutation(n):
    image = np.zeros(image_shape, np.uint8)
    image[..., :] = i if image_shape[-1] > 1 or image_shape[0] == 96 else i % 2
    ex = {"image": image, **{k: np.int64(c) for k, c in zip(label_keys, classes[i], strict=True)}}
    if split_filter is None or split_filter(classes[i]):
      out.append(ex)
  return out


def test_shapes3d_through_data_source(monkeypatch):
  sizes = (2, 1, 1, 1, 2, 3)
  spec = dataclasses.replace(files.SPECS["shapes3d"], full_sizes=sizes)
  keys = tfds_source.SOURCES["shapes3d"].label_keys
  calls = []

  def as_data_source(self, split, **kwargs):
    calls.append((self.name, split))
    return _examples(sizes, keys, (64, 64, 3))

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    ds = tfds_source.load_tfds("shapes3d", spec=spec, on_device=True)
  assert calls == [("shapes3d", "train")]
  index = np.arange(math.prod(sizes))
  got = np.asarray(ds.images_from_factors(grid_factors(index, sizes)))
  np.testing.assert_array_equal(got[:, 7, 7, 2], index)  # placed in grid order


def test_smallnorb_concatenates_splits_and_resizes():
  sizes = (2, 2, 1, 2, 1)
  spec = dataclasses.replace(files.SPECS["smallnorb"], full_sizes=sizes)
  keys = tfds_source.SOURCES["smallnorb"].label_keys

  def as_data_source(self, split, **kwargs):
    keep = (lambda c: c[1] == 1) if split == "train" else (lambda c: c[1] == 0)
    return _examples(sizes, keys, (96, 96, 1), keep)

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    ds = tfds_source.load_tfds("smallnorb", spec=spec)
  assert ds.image_shape == (64, 64, 1) and ds.factor_sizes == (2, 1, 2, 1)
  np.testing.assert_array_equal(np.asarray(ds.images)[:, 3, 3, 0], np.arange(8))


def test_dsprites_default_mock_reads_real_keys_and_reports_incomplete_grid():
  # tfds's own random examples (real feature spec) cannot fill the 737,280-image grid.
  cfg = types.SimpleNamespace(name="dsprites", source="tfds", data_dir="", image_size=64)
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(DataFileError, match="tfds:dsprites/train: expected 737280"):
      data.get_dataset(cfg)


def test_dsprites_binary_images_are_scaled():
  sizes = (3, 1, 1, 2, 1)
  spec = dataclasses.replace(files.SPECS["dsprites"], full_sizes=sizes)
  keys = tfds_source.SOURCES["dsprites"].label_keys

  def as_data_source(self, split, **kwargs):
    return _examples(sizes, keys, (64, 64, 1))

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    ds = tfds_source.load_tfds("dsprites", spec=spec)
  np.testing.assert_array_equal(np.asarray(ds.images)[:, 0, 0, 0], [0, 255] * 3)


def test_unsupported_name():
  with pytest.raises(ValueError, match="files"):
    tfds_source.load_tfds("mpi3d_toy")
