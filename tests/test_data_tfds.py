"""Tests of `data.source = "tfds"` under tfds.testing.mock_data (no network, no TensorFlow)."""

import dataclasses
import math
import socket
import sys
import time
import types

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from gmg_jax import data  # noqa: E402
from gmg_jax.data import files  # noqa: E402
from gmg_jax.data import tfds as tfds_source  # noqa: E402
from gmg_jax.data.base import DataFileError, grid_factors  # noqa: E402


@pytest.fixture
def online(monkeypatch):
  """TFDS's (mocked) download may run: the network probe answers."""
  monkeypatch.setattr(tfds_source, "_unreachable", lambda url: None)


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


def test_shapes3d_through_data_source(monkeypatch, online):
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


def test_smallnorb_concatenates_splits_and_resizes(online):
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


def test_dsprites_default_mock_reads_real_keys_and_reports_incomplete_grid(online):
  # tfds's own random examples (real feature spec) cannot fill the 737,280-image grid.
  cfg = types.SimpleNamespace(name="dsprites", source="tfds", data_dir="", image_size=64)
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(DataFileError, match="tfds:dsprites/train: expected 737280"):
      data.get_dataset(cfg)


def test_dsprites_binary_images_are_scaled(online):
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


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _record_data_source(monkeypatch, examples=()):
  calls = []

  def data_source(name, split, **kwargs):
    calls.append(kwargs)
    return list(examples)

  monkeypatch.setattr(tfds, "data_source", data_source)
  return calls


def test_offline_without_prepared_data_fails_fast_and_says_what_to_place(tmp_path, monkeypatch):
  dead = f"http://127.0.0.1:{_closed_port()}/3dshapes.h5"  # refused at once, like offline
  source = dataclasses.replace(tfds_source.SOURCES["shapes3d"], urls=(dead,))
  monkeypatch.setitem(tfds_source.SOURCES, "shapes3d", source)
  calls = _record_data_source(monkeypatch)
  start = time.monotonic()
  with pytest.raises(DataFileError) as err:
    tfds_source.load_tfds("shapes3d", data_dir=str(tmp_path / "tfds"))
  assert time.monotonic() - start < 30
  assert calls == []  # TFDS never got to try the network
  msg = str(err.value)
  assert str(tmp_path / "tfds" / "shapes3d") in msg  # the prepared directory looked for
  assert dead in msg and "Connection refused" in msg
  assert "--config.data.manual_dir=DIR where DIR holds ['3dshapes.h5']" in msg
  assert "--config.data.source=files" in msg


def test_manual_dir_is_checked_then_handed_to_tfds_without_network(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "_unreachable", lambda url: pytest.fail("probed the network"))
  calls = _record_data_source(monkeypatch)
  with pytest.raises(DataFileError, match=r"manual_dir=.*lacks \['3dshapes.h5'\]"):
    tfds_source.load_tfds("shapes3d", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))
  assert calls == []
  (tmp_path / "3dshapes.h5").write_bytes(b"original file")
  with pytest.raises(DataFileError, match="is empty"):  # the recorder serves no examples
    tfds_source.load_tfds("shapes3d", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))
  config = calls[0]["download_and_prepare_kwargs"]["download_config"]
  assert calls[0]["download"] is True and str(config.manual_dir) == str(tmp_path)
  assert config.try_download_gcs is False


def test_prepared_data_is_read_without_download(tmp_path, monkeypatch):
  class Prepared:
    data_dir = str(tmp_path)

    def is_prepared(self):
      return True

  monkeypatch.setattr(tfds, "builder", lambda *args, **kwargs: Prepared())
  monkeypatch.setattr(tfds_source, "_unreachable", lambda url: pytest.fail("probed the network"))
  calls = _record_data_source(monkeypatch)
  with pytest.raises(DataFileError, match="is empty"):
    tfds_source.load_tfds("dsprites", data_dir=str(tmp_path))
  assert calls == [{"data_dir": str(tmp_path), "download": False}]


def test_missing_modules_are_named_with_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ModuleNotFoundError) as err:
    tfds_source.load_tfds("shapes3d")
  assert "'tensorflow_datasets'" in str(err.value) and 'pip install -e ".[tfds]"' in str(err.value)
  monkeypatch.undo()
  # TFDS imports some modules lazily and wraps the error (e.g. importlib_resources).

  def data_source(name, split, **kwargs):
    try:
      raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")
    except ModuleNotFoundError as e:
      raise RuntimeError("In <Image> with name 'image'") from e

  monkeypatch.setattr(tfds, "data_source", data_source)
  monkeypatch.setattr(tfds_source, "_unreachable", lambda url: None)
  with pytest.raises(ModuleNotFoundError) as err:
    tfds_source.load_tfds("shapes3d", data_dir="/nonexistent/tfds")
  assert "'importlib_resources'" in str(err.value) and 'pip install -e ".[tfds]"' in str(err.value)
