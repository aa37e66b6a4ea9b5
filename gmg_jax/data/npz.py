""".npy headers and uncompressed .npz members, read without unpickling anything.

Shared by the benchmark loaders (`gmg_jax.data.files`, MPI3D's memory-mapped images) and a
researcher's own file (`gmg_jax.data.custom`): both check an array's shape and dtype from its
header before reading it, and memory-map the `images` member of an `np.savez` archive in place.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import IO

import numpy as np

from gmg_jax.data.base import expect


def unreadable_reason(error: BaseException) -> str:
  """An exception's text for "not a readable file (...)", without numpy's advice to unpickle."""
  if "pickle" in str(error).lower():
    return "it holds pickled data, which gmg_jax never loads: loading it could run code"
  return str(error)


def read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
  """Reads the .npy header at `f`'s position, leaving `f` at the start of the data.

  Args:
    f: a binary file (or zip member) positioned at the .npy magic string.

  Returns:
    The array's shape, whether it is stored in Fortran order, and its dtype (object dtypes are
    returned, not refused: callers name the problem in their own terms).
  """
  version = np.lib.format.read_magic(f)
  read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
    version, np.lib.format.read_array_header_2_0
  )
  shape, fortran, dtype = read_header(f)
  return tuple(shape), fortran, dtype


def _numeric_header(f: IO[bytes], path: str, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:
  shape, fortran, dtype = read_npy_header(f)
  expect(not dtype.hasobject, path, f"a numeric {member!r}, got a pickled object array")
  return shape, fortran, dtype


def npz_member_offset(path: str, member: str) -> tuple[int, tuple[int, ...], np.dtype, bool]:
  """Byte offset, shape, dtype and Fortran order of an uncompressed .npz member's data."""
  with open(path, "rb") as f:
    with zipfile.ZipFile(f) as zf:
      info = zf.getinfo(member)
    f.seek(info.header_offset)
    signature, name_len, extra_len = struct.unpack("<4s22xHH", f.read(30))
    expect(signature == b"PK\x03\x04", path, f"a zip local header for {member!r}")
    f.seek(info.header_offset + 30 + name_len + extra_len)
    shape, fortran, dtype = _numeric_header(f, path, member)
    return f.tell(), shape, dtype, fortran


def stream_npz_member_to_npy(path: str, member: str, out_path: str) -> None:
  """One-time conversion of a compressed .npz member to .npy, in chunks (no full copy)."""
  tmp = out_path + ".tmp"
  with zipfile.ZipFile(path) as zf, zf.open(member) as src:
    shape, fortran, dtype = _numeric_header(src, path, member)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
    flat = out.reshape(-1, order="F" if fortran else "C")
    chunk = 1 << 24
    for start in range(0, flat.size, chunk):
      view = flat[start : start + chunk]
      got = src.readinto(memoryview(view).cast("B"))
      expect(got == view.nbytes, path, f"{flat.size} values in {member!r} (truncated)")
    out.flush()
    del out, flat
  os.replace(tmp, out_path)
