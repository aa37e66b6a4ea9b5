"""Tests of a researcher's own dataset file (`data.name = "npz"` / `"hdf5"`)."""

import itertools
import pickle
import types

import h5py
import jax
import numpy as np
import pytest

from gmg_jax import data
from gmg_jax.data import custom
from gmg_jax.data.base import DataFileError
from gmg_jax.metrics import suite

# Factor values that are not 0..k-1 (negative, gaps, unsorted in the file).
VALUES = (np.array([-3, 5, 100]), np.array([7, 9]), np.array([0, 2, 4, 6]))


def _grid(values=VALUES, seed=0):
  """All combinations, shuffled; image i encodes i in pixel (0, 0) and (0, 1)."""
  factors = np.array(list(itertools.product(*values)), dtype=np.int64)
  factors = factors[np.random.default_rng(seed).permutation(len(factors))]
  return _images(len(factors)), factors


def _images(n, side=8):
  images = np.random.default_rng(1).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
  images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) % 256, np.arange(n) // 256
  return images


def _rows(images):
  images = np.asarray(images).astype(np.int64)
  return images[:, 0, 0, 0] + 256 * images[:, 0, 1, 0]


def _classes(factors, values=VALUES):
  return np.stack([np.searchsorted(v, factors[:, k]) for k, v in enumerate(values)], axis=1)


def _cfg(name, path, **kw):
  return types.SimpleNamespace(name=name, path=str(path), **kw)


def _write(path, fmt, images, factors, names=None, chunked=False):
  if fmt == "npz":
    extra = {} if names is None else {"factor_names": np.array(names)}
    np.savez(path, images=images, factors=factors, **extra)
    return
  with h5py.File(path, "w") as f:
    f.create_dataset(
      "images",
      data=images,
      chunks=(1,) + images.shape[1:] if chunked else None,
      compression="gzip" if chunked else None,
    )
    f["factors"] = factors
    if names is not None:
      f["factor_names"] = np.array(names, dtype=h5py.string_dtype())


@pytest.mark.parametrize(
  "fmt,on_device,chunked",
  [("npz", True, False), ("npz", "host", False), ("hdf5", "host", False), ("hdf5", "host", True)],
)
def test_round_trip_complete_grid(tmp_path, fmt, on_device, chunked):
  images, factors = _grid()
  path = tmp_path / f"set.{'npz' if fmt == 'npz' else 'h5'}"
  _write(path, fmt, images, factors, names=["a", "b", "c"], chunked=chunked)
  ds = data.get_dataset(_cfg(fmt, path, on_device=on_device))
  assert ds.jittable == (on_device is True)
  if not ds.jittable:  # read lazily, not loaded
    expected = custom._H5Rows if chunked else np.memmap
    assert isinstance(ds.images, expected)
  assert ds.factor_names == ("a", "b", "c") and ds.factor_sizes == (3, 2, 4)
  assert ds.image_shape == (8, 8, 3) and ds.complete_grid and ds.grid_problem is None
  for k in range(3):
    np.testing.assert_array_equal(ds.factor_values[k], VALUES[k])
  # sample_batch: each image comes with the remapped factors stored for it.
  batch, classes = ds.sample_batch(jax.random.key(0), 64)
  rows = _rows(batch)
  np.testing.assert_array_equal(np.asarray(classes), _classes(factors[rows]))
  np.testing.assert_array_equal(np.asarray(batch), images[rows])
  assert len(set(rows.tolist())) > 12  # many rows drawn, not one
  # Any factor tuple of the grid renders the image stored with it (interventions work).
  grid = np.array(list(itertools.product(range(3), range(2), range(4))))
  rows = _rows(ds.images_from_factors(grid))
  np.testing.assert_array_equal(_classes(factors[rows]), grid)
  drawn = np.asarray(ds.sample_factors(jax.random.key(1), 200))
  assert drawn.shape == (200, 3) and (drawn.max(0) == [2, 1, 3]).all()


def test_incomplete_grid_with_duplicates_hdf5(tmp_path):
  images, factors = _grid()
  # Drop 5 combinations and store one of the kept ones a second time (with its own image).
  factors = np.concatenate([factors[5:], factors[5:6]])
  images = _images(len(factors))
  path = tmp_path / "set.h5"
  with h5py.File(path, "w") as f:
    f["images"], f["factors"] = images, factors
    f["factor_names"] = np.array([b"a", b"b", b"c"])  # fixed-length bytes work too
  ds = data.get_dataset(_cfg("hdf5", path, on_device="host"))
  assert not ds.complete_grid and ds.factor_names == ("a", "b", "c")
  assert "20 rows with 19 distinct" in ds.grid_problem and "24 combinations" in ds.grid_problem
  batch, classes = ds.sample_batch(jax.random.key(0), 256)
  rows = _rows(batch)
  np.testing.assert_array_equal(classes, _classes(factors[rows]))
  # Observational sampling draws stored tuples only; looking them up gives matching images.
  drawn = np.asarray(ds.sample_factors(jax.random.key(1), 100))
  stored = {tuple(r) for r in _classes(factors)}
  assert {tuple(r) for r in drawn} <= stored
  np.testing.assert_array_equal(_classes(factors[_rows(ds.images_from_factors(drawn))]), drawn)
  # The duplicated tuple: without a key its first row, with a key either row.
  twice = _classes(factors[:1]).repeat(64, axis=0)  # rows 0 and 19
  assert set(_rows(ds.images_from_factors(twice)).tolist()) == {0}
  assert set(_rows(ds.images_from_factors(twice, jax.random.key(2))).tolist()) == {0, 19}
  missing = _classes(_grid()[1][:1])
  with pytest.raises(ValueError, match="not in 'hdf5'"):
    ds.images_from_factors(missing)


def test_device_dataset_is_jittable_and_matches_eager(tmp_path):
  images, factors = _grid()
  np.savez(tmp_path / "full.npz", images=images, factors=factors)
  np.savez(tmp_path / "part.npz", images=images[:-3], factors=factors[:-3])
  for name in ("full.npz", "part.npz"):
    ds = data.get_dataset(_cfg("npz", tmp_path / name, on_device=True))
    key = jax.random.key(3)
    batch, classes = jax.jit(lambda d, k: d.sample_batch(k, 16))(ds, key)
    eager_batch, eager_classes = ds.sample_batch(key, 16)
    np.testing.assert_array_equal(batch, eager_batch)
    np.testing.assert_array_equal(classes, eager_classes)
    f = ds.sample_factors(jax.random.key(4), 16)
    np.testing.assert_array_equal(
      jax.jit(lambda d, f: d.images_from_factors(f))(ds, f), ds.images_from_factors(f)
    )


@pytest.mark.parametrize(
  "factors,complete",
  [
    (_grid()[1], True),
    (_grid()[1][1:], False),  # one combination missing
    (np.concatenate([_grid()[1], _grid()[1][:1]]), False),  # one stored twice
    (np.concatenate([_grid()[1][1:], _grid()[1][1:2]]), False),  # N = 24, but 23 distinct
  ],
)
def test_complete_grid_detection(tmp_path, factors, complete):
  np.savez(tmp_path / "s.npz", images=_images(len(factors)), factors=factors)
  ds = custom.load_table(str(tmp_path / "s.npz"), "npz", on_device="host")
  assert ds.complete_grid == complete
  assert (ds.grid_problem is None) == complete


def _bad_npz(path, **arrays):
  np.savez(path, **arrays)


_IM, _F = _images(6), np.arange(12).reshape(6, 2)


@pytest.mark.parametrize(
  "arrays,match",
  [
    (dict(images=_IM), r"missing key\(s\) \['factors'\]"),
    (dict(pictures=_IM, factors=_F), r"missing key\(s\) \['images'\]"),
    (dict(images=_IM.astype(np.float32), factors=_F), "'images' must be uint8"),
    (dict(images=_IM[..., 0], factors=_F), r"'images' must be uint8 \[N, H, W, C\]"),
    (dict(images=_IM, factors=_F.astype(float)), "'factors' must be integers.*np.digitize"),
    (dict(images=_IM, factors=_F[:, 0]), r"'factors' must be integers \[N, K\]"),
    (dict(images=_IM, factors=_F[:5]), "'images' has 6 rows but 'factors' has 5"),
    (dict(images=_IM, factors=_F.astype(object)), "pickled object array"),
    (dict(images=_IM, factors=_F, factor_names=np.array(["a", "b"], dtype=object)), "pickled"),
    (dict(images=_IM, factors=_F, factor_names=np.array(["a"])), "'factor_names' must be 2"),
  ],
)
def test_bad_npz_names_file_problem_and_fix(tmp_path, arrays, match):
  path = tmp_path / "bad.npz"
  _bad_npz(path, **arrays)
  with pytest.raises(DataFileError, match=match) as err:
    data.get_dataset(_cfg("npz", path))
  assert str(path) in str(err.value)


def test_bad_hdf5_names_file_problem_and_fix(tmp_path):
  path = tmp_path / "bad.h5"
  with h5py.File(path, "w") as f:
    f["images"], f["labels"] = _IM, _F
  with pytest.raises(DataFileError, match=r"missing dataset\(s\) \['factors'\].*labels"):
    data.get_dataset(_cfg("hdf5", path))
  with h5py.File(path, "w") as f:
    f["images"], f["factors"] = _IM, _F[:4]
  with pytest.raises(DataFileError, match="6 rows but 'factors' has 4"):
    data.get_dataset(_cfg("hdf5", path))
  with h5py.File(path, "w") as f:
    f["images"], f["factors"] = _IM, _F.astype(np.float64)
  with pytest.raises(DataFileError, match="'factors' must be integers"):
    data.get_dataset(_cfg("hdf5", path))


def test_unreadable_files_never_unpickle(tmp_path):
  marker = tmp_path / "payload_ran"

  class Payload:
    def __reduce__(self):
      return (exec, (f"open({str(marker)!r}, 'w').close()",))

  blob = pickle.dumps(Payload())
  pickle.loads(blob)  # the payload is live: loading it runs code
  assert marker.exists()
  marker.unlink()
  for name, suffix in (("npz", "npz"), ("hdf5", "h5")):
    path = tmp_path / f"planted.{suffix}"
    path.write_bytes(blob)
    with pytest.raises(DataFileError, match=f"{path}: is not a readable {name} file"):
      data.get_dataset(_cfg(name, path))
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataFileError, match=str(path)):
      data.get_dataset(_cfg(name, path))
  # A pickle inside an .npz member is refused from its header, before anything is loaded.
  np.savez(tmp_path / "member.npz", images=_IM, factors=np.array([Payload()] * 6))
  with pytest.raises(DataFileError, match="pickled object array"):
    data.get_dataset(_cfg("npz", tmp_path / "member.npz"))
  assert not marker.exists()


def test_path_errors_and_wrong_format(tmp_path):
  with pytest.raises(DataFileError, match="--config.data.path=FILE; none was given"):
    data.get_dataset(_cfg("npz", ""))
  with pytest.raises(DataFileError, match="nothing.npz: cannot be read.*data.path"):
    data.get_dataset(_cfg("npz", tmp_path / "nothing.npz"))
  with h5py.File(tmp_path / "s.h5", "w") as f:
    f["images"], f["factors"] = _IM, _F
  with pytest.raises(DataFileError, match="is an hdf5 file, not npz.*data.name=hdf5"):
    data.get_dataset(_cfg("npz", tmp_path / "s.h5"))


def test_interventional_metrics_refused_on_incomplete_grid(tmp_path):
  images, factors = _grid()
  np.savez(tmp_path / "part.npz", images=images[:20], factors=factors[:20])
  ds = data.get_dataset(_cfg("npz", tmp_path / "part.npz"))
  suite.check_dataset(("dci", "mig", "sap", "modularity_explicitness"), ds)  # observational: ok
  with pytest.raises(ValueError) as err:
    suite.check_dataset(("dci", "factor_vae", "beta_vae"), ds)
  msg = str(err.value)
  assert "['factor_vae', 'beta_vae']" in msg and "not a complete grid" in msg
  assert "20 rows" in msg and "24 combinations" in msg and "'dci'" in msg and "'mig'" in msg
  # compute_metrics refuses before encoding a single image.
  calls = []
  with pytest.raises(ValueError, match="not a complete grid"):
    suite.compute_metrics(
      ("beta_vae",), ds, lambda x: calls.append(1) or x, jax.random.key(0), num_train=8
    )
  assert calls == []


def test_factor_vae_score_on_complete_grid(tmp_path):
  """A representation that reads the factors off the images scores 1 (interventions right)."""
  images, factors = _grid()
  np.savez(tmp_path / "full.npz", images=images, factors=factors)
  ds = data.get_dataset(_cfg("npz", tmp_path / "full.npz"))
  suite.check_dataset(("factor_vae", "beta_vae"), ds)
  table = _classes(factors).astype(np.float32)
  noise = np.random.default_rng(0).normal(size=table.shape) * 1e-3

  def representation_fn(batch):
    rows = _rows(batch)
    return table[rows] + noise[rows]

  scores = suite.compute_metrics(
    ("factor_vae",),
    ds,
    representation_fn,
    jax.random.key(0),
    num_train=60,
    num_test=30,
    batch_size=16,
  )
  assert scores["factor_vae"]["eval_accuracy"] == 1.0
