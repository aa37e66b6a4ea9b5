"""Tests of the real-file loaders on small files written in the original formats."""

import dataclasses
import math
import os
import pickle
import struct
import tracemalloc

import h5py
import jax
import numpy as np
import pytest
import scipy.io

from gmg_jax import data
from gmg_jax.data import files
from gmg_jax.data.base import DataFileError, grid_factors


def _code_images(n, shape, binary=False):
  """Images whose pixels encode their grid index, so any misplacement is visible."""
  index = np.arange(n)
  if binary:  # 16 bits of the index in the first row, values {0, 1} as in dSprites
    bits = (index[:, None] >> np.arange(16)) & 1
    images = np.zeros((n,) + shape, np.uint8)
    images[:, 0, :16] = bits.reshape((n, 16) + (1,) * (len(shape) - 2)) if len(shape) > 2 else bits
    return images
  flat = np.empty((n, math.prod(shape)), np.uint8)
  flat[:] = np.random.default_rng(0).integers(0, 256, flat.shape[1], dtype=np.uint8)
  flat[:, 0], flat[:, 1] = index % 256, index // 256 % 256
  return flat.reshape((n,) + shape)


def _spec(name, sizes):
  return dataclasses.replace(files.SPECS[name], full_sizes=sizes)


def _write_dsprites_npz(root, sizes, shuffle):
  n = math.prod(sizes)
  images = _code_images(n, (64, 64), binary=True)
  classes = np.column_stack([np.zeros(n, int), grid_factors(np.arange(n), sizes)])
  order = np.random.default_rng(0).permutation(n) if shuffle else np.arange(n)
  path = root / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
  path.parent.mkdir(parents=True)
  np.savez(
    path,
    imgs=images[order],
    latents_classes=classes[order],
    latents_values=classes[order].astype(float),
    metadata=np.array({"latents_sizes": (1,) + sizes}, dtype=object),
  )
  return path, images


@pytest.mark.parametrize("shuffle", [False, True])
def test_dsprites_npz_right_image_for_factors(tmp_path, shuffle):
  sizes = (3, 2, 2, 2, 2)
  _, images = _write_dsprites_npz(tmp_path, sizes, shuffle)
  ds = files.load_files("dsprites", str(tmp_path), spec=_spec("dsprites", sizes), on_device=True)
  assert ds.jittable and ds.image_shape == (64, 64, 1)
  factors = np.asarray([[2, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]])
  got = np.asarray(ds.images_from_factors(factors))
  index = files.grid_index(factors, sizes)
  np.testing.assert_array_equal(got[..., 0], images[index] * 255)  # scaled to {0, 255}


def test_dsprites_hdf5_as_tfds_uses(tmp_path):
  sizes = (3, 1, 2, 1, 2)
  n = math.prod(sizes)
  images = _code_images(n, (64, 64), binary=True)
  (tmp_path / "dsprites").mkdir()
  with h5py.File(
    tmp_path / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5", "w"
  ) as f:
    f["imgs"] = images
    f["latents/classes"] = np.column_stack([np.zeros(n, int), grid_factors(np.arange(n), sizes)])
    f["latents/values"] = np.zeros((n, 6))
  ds = files.load_files("dsprites", str(tmp_path), spec=_spec("dsprites", sizes))
  np.testing.assert_array_equal(
    np.asarray(ds.images_from_factors([[2, 0, 1, 0, 1]]))[0, ..., 0], images[n - 1] * 255
  )


def test_shapes3d_h5_from_float_labels(tmp_path):
  sizes = (2, 2, 1, 2, 1, 3)
  n = math.prod(sizes)
  images = _code_images(n, (64, 64, 3))
  classes = grid_factors(np.arange(n), sizes)
  values = np.column_stack(
    [
      np.linspace(0.75, 1.25, s)[classes[:, k]] if s > 1 else np.zeros(n)
      for k, s in enumerate(sizes)
    ]
  )
  (tmp_path / "shapes3d").mkdir()
  order = np.random.default_rng(1).permutation(n)
  with h5py.File(tmp_path / "shapes3d" / "3dshapes.h5", "w") as f:
    f["images"], f["labels"] = images[order], values[order]
  # Through the registry the real grid is expected: a clear shape error, not a crash.
  with pytest.raises(DataFileError, match=r"3dshapes.h5.*\(480000, 64, 64, 3\)"):
    data.get_dataset(_cfg("shapes3d", tmp_path))
  ds = files.load_files("shapes3d", str(tmp_path), spec=_spec("shapes3d", sizes))
  f = np.asarray([[1, 0, 0, 1, 0, 2]])
  np.testing.assert_array_equal(
    np.asarray(ds.images_from_factors(f)), images[files.grid_index(f, sizes)]
  )


def _cfg(name, root, **kw):
  import types

  return types.SimpleNamespace(name=name, source="files", data_dir=str(root), image_size=64, **kw)


def _write_mpi3d(root, sizes, compressed=False):
  n = math.prod(sizes)
  images = _code_images(n, (64, 64, 3))
  (root / "mpi3d_toy").mkdir()
  path = root / "mpi3d_toy" / "mpi3d_toy.npz"
  (np.savez_compressed if compressed else np.savez)(path, images=images)
  return path, images


def test_mpi3d_is_memory_mapped_uint8_without_copy(tmp_path):
  sizes = (2, 2, 2, 3, 3, 10, 10)  # 7200 images, 88 MB
  path, images = _write_mpi3d(tmp_path, sizes)
  del images
  tracemalloc.start()
  ds = files.load_files(
    "mpi3d_toy", str(tmp_path), spec=_spec("mpi3d_toy", sizes), on_device="host"
  )
  batches = [ds.sample_batch(jax.random.key(i), 64)[0] for i in range(5)]
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert isinstance(ds.images, np.memmap) and ds.images.dtype == np.uint8
  assert batches[0].dtype == np.uint8 and batches[0].shape == (64, 64, 64, 3)
  # Numpy allocations (5 kept batches of 0.8 MB) stay far below the 88 MB file; a uint8
  # copy would be 1x it and a float32 copy 4x.
  assert peak < 0.15 * os.path.getsize(path), peak
  factors = np.asarray([[1, 0, 1, 2, 0, 9, 3]])
  expected = _code_images(math.prod(sizes), (64, 64, 3))[files.grid_index(factors, sizes)]
  np.testing.assert_array_equal(ds.images_from_factors(factors), expected)


def test_mpi3d_compressed_npz_converts_once_to_npy(tmp_path):
  sizes = (2, 1, 1, 1, 1, 2, 3)
  path, images = _write_mpi3d(tmp_path, sizes, compressed=True)
  spec = _spec("mpi3d_toy", sizes)
  ds = files.load_files("mpi3d_toy", str(tmp_path), spec=spec, on_device=False)
  assert os.path.exists(str(path)[:-4] + ".npy")
  np.testing.assert_array_equal(ds.images_from_factors(grid_factors(np.arange(12), sizes)), images)
  ds_device = files.load_files("mpi3d_toy", str(tmp_path), spec=spec, on_device=True)
  assert ds_device.images.dtype == np.uint8


def _write_norb(path, array, magic):
  with open(path, "wb") as f:
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    f.write(struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims))
    f.write(np.ascontiguousarray(array).tobytes())


def test_smallnorb_grid_resize_and_instance_resampling(tmp_path):
  sizes = (2, 2, 1, 2, 1)  # category, instance, elevation, azimuth, lighting
  spec = _spec("smallnorb", sizes)
  classes = grid_factors(np.arange(8), sizes)
  (tmp_path / "small_norb").mkdir()
  for (ids, split), instance in zip(files._NORB_CHUNKS, (1, 0), strict=True):
    rows = classes[classes[:, 1] == instance][::-1]
    dat = np.zeros((4, 2, 96, 96), np.uint8)
    dat[:, 0] = (10 + 20 * files.grid_index(rows, sizes))[:, None, None]  # camera 0
    dat[:, 1] = 255  # camera 1 must be ignored
    info = np.column_stack([rows[:, 1], rows[:, 2], rows[:, 3] * 2, rows[:, 4]])
    stem = str(tmp_path / "small_norb" / f"smallnorb-5x{ids}x9x18x6x2x96x96-{split}-")
    _write_norb(stem + "dat.mat", dat, 507333717)
    _write_norb(stem + "cat.mat", rows[:, 0].astype("<i4"), 507333716)
    _write_norb(stem + "info.mat", info.astype("<i4"), 507333716)
  ds = files.load_files("smallnorb", str(tmp_path), spec=spec, on_device=True)
  assert ds.image_shape == (64, 64, 1) and ds.factor_sizes == (2, 1, 2, 1)
  latent = np.asarray([[1, 0, 1, 0]] * 32)
  values = {
    int(v) for v in np.asarray(ds.images_from_factors(latent, jax.random.key(0)))[:, 5, 5, 0]
  }
  # Category 1, azimuth 1, either instance: grid index 5 (instance 0) or 7 (instance 1).
  assert values == {10 + 20 * 5, 10 + 20 * 7}
  fixed = np.asarray(ds.images_from_factors(latent[:1]))
  np.testing.assert_array_equal(fixed, np.asarray(ds.images_from_factors(latent[:1])))
  # Truncated file: the error names the file and the expected size.
  dat_path = stem + "dat.mat"
  with open(dat_path, "r+b") as f:
    f.truncate(1000)
  with pytest.raises(DataFileError, match="testing-dat.mat.*bytes"):
    files.load_files("smallnorb", str(tmp_path), spec=spec)


def test_cars3d_mat_layout(tmp_path):
  sizes = (2, 3, 3)  # elevation, azimuth, car
  (tmp_path / "cars").mkdir()
  for car in range(3):
    im = np.zeros((16, 16, 3, 3, 2), np.uint8)
    for az in range(3):
      for el in range(2):
        im[:, :, :, az, el] = files.grid_index([[el, az, car]], sizes)[0] * 10
    scipy.io.savemat(tmp_path / "cars" / f"car_{car:03d}_mesh.mat", {"im": im})
  ds = files.load_files("cars3d", str(tmp_path), spec=_spec("cars3d", sizes))
  factors = grid_factors(np.arange(18), sizes)
  got = np.asarray(ds.images_from_factors(factors))
  assert got.shape == (18, 64, 64, 3)
  np.testing.assert_array_equal(got[:, 10, 10, 1], np.arange(18) * 10)


def test_missing_file_names_file_places_and_command(tmp_path, monkeypatch):
  monkeypatch.setenv("GMG_DATA_DIR", str(tmp_path / "env"))
  with pytest.raises(DataFileError) as err:
    data.get_dataset(_cfg("shapes3d", tmp_path / "cfg"))
  msg = str(err.value)
  assert "3dshapes.h5" in msg and str(tmp_path / "cfg") in msg and str(tmp_path / "env") in msg
  assert "gmg_data" in msg
  assert f"python -m gmg_jax.data.download shapes3d --data_dir={tmp_path / 'cfg'}" in msg


def test_corrupt_and_wrong_files_say_what_was_expected(tmp_path):
  sizes = (3, 2, 2, 2, 2)
  path, _ = _write_dsprites_npz(tmp_path, sizes, shuffle=False)
  spec = _spec("dsprites", sizes)
  with pytest.raises(DataFileError, match="48"):  # wrong grid for this file
    files.load_files("dsprites", str(tmp_path), spec=_spec("dsprites", (3, 2, 2, 2, 1)))
  np.savez(path, images=np.zeros((48, 64, 64), np.uint8))
  with pytest.raises(DataFileError, match="keys 'imgs'"):
    files.load_files("dsprites", str(tmp_path), spec=spec)
  path.write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(DataFileError, match=str(path)):
    files.load_files("dsprites", str(tmp_path), spec=spec)
  (tmp_path / "mpi3d_toy").mkdir()
  np.savez(tmp_path / "mpi3d_toy" / "mpi3d_toy.npz", images=np.zeros((5, 64, 64, 3), np.float32))
  with pytest.raises(DataFileError, match="uint8 images of shape"):
    files.load_files("mpi3d_toy", str(tmp_path), spec=_spec("mpi3d_toy", (5, 1, 1, 1, 1, 1, 1)))
  with pytest.raises(ValueError, match="64x64"):
    files.load_files("shapes3d", str(tmp_path), image_size=32)


class _Payload:
  """Unpickling this runs code: it creates the file `marker`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_planted_pickles_and_garbage_never_run_and_name_the_fix(tmp_path):
  marker = tmp_path / "payload_ran"
  blob = pickle.dumps(_Payload(marker))
  pickle.loads(blob)  # the payload is live
  assert marker.exists()
  marker.unlink()
  root = tmp_path / "data"
  dsprites = root / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
  mpi3d = root / "mpi3d_toy" / "mpi3d_toy.npz"
  shapes3d = root / "shapes3d" / "3dshapes.h5"
  cases = [
    ("dsprites", dsprites, "dsprites"),
    ("mpi3d_toy", mpi3d, "mpi3d_toy"),
    ("mpi3d_toy", mpi3d.with_suffix(".npy"), "mpi3d_toy"),  # the converted memory map
    ("shapes3d", shapes3d, "shapes3d"),
  ]
  for name, path, command in cases:
    for content in (blob, b"\x93NUMPY garbage" * 50):
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(content)
      with pytest.raises(DataFileError) as err:
        data.get_dataset(_cfg(name, root))
      msg = str(err.value)
      assert str(path) in msg and "delete it and download it again" in msg
      assert f"python -m gmg_jax.data.download {command} --data_dir={root}" in msg
    path.unlink()
  # A pickle inside the dSprites archive (an object `imgs`) is refused too.
  np.savez(dsprites, imgs=np.array([_Payload(marker)]), latents_classes=np.zeros((1, 6), int))
  with pytest.raises(DataFileError, match="not a readable dSprites .npz"):
    data.get_dataset(_cfg("dsprites", root))
  assert not marker.exists()


def test_every_np_load_in_the_package_refuses_pickles():
  import ast
  import pathlib

  import gmg_jax

  calls = []
  for path in pathlib.Path(gmg_jax.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Call) and ast.unparse(node.func) in ("np.load", "numpy.load"):
        kwargs = {k.arg: k.value for k in node.keywords}
        safe = isinstance(kwargs.get("allow_pickle"), ast.Constant)
        calls.append((str(path), node.lineno, safe and kwargs["allow_pickle"].value is False))
  assert len(calls) >= 3  # files.py (dSprites, MPI3D .npy) and custom.py
  assert all(ok for *_, ok in calls), [c for c in calls if not c[2]]
