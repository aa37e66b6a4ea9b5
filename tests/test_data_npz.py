"""Tests of the .npy header and .npz member readers (gmg_jax/data/npz.py)."""

import io
import zipfile

import numpy as np
import pytest

from gmg_jax.data import npz
from gmg_jax.data.base import DataFileError


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
@pytest.mark.parametrize("fortran", [False, True])
def test_read_npy_header_matches_the_array_and_stops_at_its_data(version, fortran):
  array = np.arange(24, dtype="<i4").reshape(2, 3, 4)
  array = np.asfortranarray(array) if fortran else array
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, array, version=version)
  buffer.seek(0)
  shape, got_fortran, dtype = npz.read_npy_header(buffer)
  assert (shape, got_fortran, dtype) == ((2, 3, 4), fortran, np.dtype("<i4"))
  data = np.frombuffer(buffer.read(), dtype).reshape(shape, order="F" if fortran else "C")
  np.testing.assert_array_equal(data, array)


def test_npz_member_offset_points_at_the_stored_data(tmp_path):
  path = tmp_path / "a.npz"
  images = np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3)
  np.savez(path, factors=np.zeros((2, 1), int), images=images)
  offset, shape, dtype, fortran = npz.npz_member_offset(str(path), "images.npy")
  assert (shape, dtype, fortran) == (images.shape, np.uint8, False)
  mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
  np.testing.assert_array_equal(mapped, images)


def test_object_members_are_refused_unread(tmp_path):
  path = tmp_path / "o.npz"
  np.savez(path, images=np.array([{"a": 1}], dtype=object))
  with pytest.raises(DataFileError, match="pickled object array"):
    npz.npz_member_offset(str(path), "images.npy")
  np.savez_compressed(path, images=np.array([{"a": 1}], dtype=object))
  with pytest.raises(DataFileError, match="pickled object array"):
    npz.stream_npz_member_to_npy(str(path), "images.npy", str(tmp_path / "o.npy"))
  assert not (tmp_path / "o.npy").exists()


def test_stream_npz_member_to_npy_round_trips_and_checks_length(tmp_path):
  path, out = tmp_path / "c.npz", tmp_path / "c.npy"
  array = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
  np.savez_compressed(path, images=array)
  npz.stream_npz_member_to_npy(str(path), "images.npy", str(out))
  np.testing.assert_array_equal(np.load(out, allow_pickle=False), array)
  # A header that promises more values than the member holds is a truncated file.
  buffer = io.BytesIO()
  np.lib.format.write_array_header_1_0(
    buffer, {"descr": "|u1", "fortran_order": False, "shape": (9,)}
  )
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("images.npy", buffer.getvalue() + b"\x00" * 4)
  with pytest.raises(DataFileError, match="9 values in 'images.npy' .truncated"):
    npz.stream_npz_member_to_npy(str(path), "images.npy", str(tmp_path / "t.npy"))
