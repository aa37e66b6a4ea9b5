"""`data.name = "npz"` or `"hdf5"`: a researcher's own dataset, read from one file.

The file given by `data.path` holds three arrays (datasets in HDF5):
  images:       uint8 [N, H, W, C].
  factors:      integers [N, K], the ground-truth factor values of each image. Any integers:
                each factor's sorted distinct values become the classes 0..k-1 the models and
                metrics see; `dataset.factor_values[k][c]` is the original value of class c.
  factor_names: optional [K] strings. In an .npz a unicode array (`np.array(names)`), never
                `dtype=object`: nothing is ever unpickled. In HDF5 fixed- or variable-length
                strings.

The name picks the reader: "npz" reads `np.savez` files with `np.load(allow_pickle=False)`,
"hdf5" reads HDF5 with h5py; a file in the other format is refused with the name to use. The
images keep the file's size (`data.image_size` does not apply). Images that fit the device
budget go to the device (a jittable `TableDataset`, see `gmg_jax.data.base.wants_device`);
larger ones stay on the host (`HostTableDataset`) without being read: the `images` of an
uncompressed .npz (`np.savez`) and a contiguous HDF5 dataset are memory-mapped, a chunked or
compressed HDF5 dataset is read row by row, and only an `np.savez_compressed` file is read
into memory whole.

Rows are drawn uniformly for training and for the observational metrics (DCI, MIG, SAP,
modularity/explicitness). When the factors form a complete grid (every combination of the
factor classes exactly once), `images_from_factors` renders any factor tuple and the
interventional FactorVAE and BetaVAE scores work as on the built-in sets; otherwise only the
stored tuples can be looked up (`grid_problem` says why, and
`gmg_jax.metrics.check_dataset` refuses the interventional metrics before any work).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gmg_jax.data.base import DataFileError, GroundTruthDataset, grid_index, wants_device
from gmg_jax.data.npz import npz_member_offset, read_npy_header, unreadable_reason

FORMATS = ("npz", "hdf5")
_MAGIC = {"npz": b"PK\x03\x04", "hdf5": b"\x89HDF\r\n\x1a\n"}
_FIX = (
  "Write the file as in docs/data.md (Your own dataset): images uint8 [N, H, W, C], "
  "factors integers [N, K], optional factor_names np.array([...]) of K strings."
)


def _error(path: str, problem: str, fix: str = _FIX) -> DataFileError:
  return DataFileError(f"{path}: {problem}. {fix}")


class FactorValues:
  """The original value of every factor class: `values[k][c]` (numpy, the file's dtype).

  Compared and hashed by identity, so a jitted step that takes the dataset as an argument
  does not compare the value arrays on every call.
  """

  def __init__(self, values: list[np.ndarray]):
    self._values = tuple(values)

  def __getitem__(self, k: int) -> np.ndarray:
    return self._values[k]

  def __len__(self) -> int:
    return len(self._values)

  def __repr__(self) -> str:
    return f"FactorValues({[v.tolist() for v in self._values]})"


def _compare_rows(a: Any, b: Any, xp: Any) -> Any:
  """Lexicographic sign of a - b, row by row ([n, K] int -> [n] in {-1, 0, 1})."""
  first = xp.argmax(a != b, axis=1)[:, None]
  a_first = xp.take_along_axis(a, first, axis=1)[:, 0]
  b_first = xp.take_along_axis(b, first, axis=1)[:, 0]
  return xp.sign(a_first - b_first)


class _TableMethods:
  """Sampling and look-up shared by `TableDataset` (JAX) and `HostTableDataset` (numpy).

  Needs `images` [N, H, W, C], `factors` [N, K] int32 classes, `order` [N] (the rows sorted
  lexicographically by factors, which for a complete grid is the row of each grid index),
  `complete_grid` and `num_distinct` (distinct factor tuples).
  """

  @property
  def num_images(self) -> int:
    """N, the stored rows."""
    return int(self.factors.shape[0])

  @property
  def grid_problem(self) -> str | None:
    """None for a complete grid, else why it is not one (for error messages)."""
    if self.complete_grid:
      return None
    combos = math.prod(self.factor_sizes)
    return (
      f"it has {self.num_images} rows with {self.num_distinct} distinct factor tuples, while a "
      f"complete grid of the factor sizes {self.factor_sizes} has each of its {combos} "
      "combinations exactly once"
    )

  def _take(self, array: Any, index: Any) -> Any:
    if self.jittable:
      return jnp.take(array, index, axis=0)
    return np.asarray(array)[np.asarray(index)]

  def _gather_images(self, rows: Any) -> Any:
    if self.jittable:
      return jnp.take(self.images, rows, axis=0)
    rows = np.asarray(rows)
    # Reading in increasing row order keeps memory-map and HDF5 reads sequential.
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + tuple(self.image_shape), dtype=np.uint8)
    out[order] = self.images[rows[order]]
    return out

  def sample_factors(self, key: jax.Array, n: int) -> jax.Array:
    """Uniform over the grid if complete, else the factors of uniformly drawn rows.

    Returns:
      [n, K] int32 factor classes.
    """
    if self.complete_grid:
      return super().sample_factors(key, n)
    rows = jax.random.randint(key, (n,), 0, self.num_images, dtype=jnp.int32)
    return jnp.asarray(self._take(self.factors, rows))

  def sample_batch(self, key: jax.Array, n: int) -> tuple[Any, Any]:
    """Uniformly drawn rows: their images and factor classes (every stored row is used).

    Returns:
      images: [n, H, W, C] uint8; factors: [n, K] int32 (jax if jittable, else numpy).
    """
    rows = jax.random.randint(key, (n,), 0, self.num_images, dtype=jnp.int32)
    return self._gather_images(rows), self._take(self.factors, rows)

  def _bounds(self, factors: Any) -> tuple[Any, Any]:
    """First and one-past-last sorted position of each factor tuple (binary search)."""
    xp, n = self._xp, self.num_images
    lower, upper = xp.zeros(len(factors), xp.int32), xp.full(len(factors), n, xp.int32)
    bounds = []
    for strict in (False, True):
      lo, hi = lower, upper
      for _ in range(n.bit_length()):
        mid = (lo + hi) // 2
        row = self._take(self.factors, self._take(self.order, xp.minimum(mid, n - 1)))
        sign = _compare_rows(row, factors, xp)
        right = (sign <= 0) if strict else (sign < 0)
        active = lo < hi
        lo = xp.where(active & right, mid + 1, lo)
        hi = xp.where(active & ~right, mid, hi)
      bounds.append(lo)
    return bounds[0], bounds[1]

  def images_from_factors(self, factors: Any, key: jax.Array | None = None) -> Any:
    """Images for factor classes.

    On a complete grid any tuple has exactly one image. Otherwise only stored tuples can be
    looked up (ValueError for others, when called outside `jax.jit`); a tuple stored several
    times gives its first row, or with `key` a uniformly drawn one of them.

    Args:
      factors: [n, K] int factor classes.
      key: optional PRNG key choosing among rows that share a factor tuple.

    Returns:
      [n, H, W, C] uint8 (jax if jittable, else numpy).
    """
    xp = self._xp
    factors = xp.asarray(factors).astype(xp.int32)
    if self.complete_grid:
      return self._gather_images(self._take(self.order, grid_index(factors, self.factor_sizes, xp)))
    lo, hi = self._bounds(factors)
    found = hi > lo
    if not isinstance(found, jax.core.Tracer) and not bool(xp.all(found)):
      missing = np.asarray(factors)[~np.asarray(found)][:3].tolist()
      raise ValueError(
        f"Factor tuples {missing} are not in {self.name!r} ({self.path}): {self.grid_problem}, "
        "so only stored tuples can be looked up."
      )
    position = lo
    if key is not None:
      u = jax.random.uniform(key, (len(factors),))
      offset = xp.floor(xp.asarray(u) * (hi - lo)).astype(xp.int32)
      position = lo + xp.minimum(offset, xp.maximum(hi - lo - 1, 0))
    rows = self._take(self.order, xp.minimum(position, self.num_images - 1))
    return self._gather_images(rows)


@struct.dataclass
class TableDataset(_TableMethods, GroundTruthDataset):
  """A file dataset on the device (jittable pytree; leaves: images, factors, order).

  Attributes:
    images: [N, H, W, C] uint8 device array in file order.
    factors: [N, K] int32 factor classes of each row.
    order: [N] int32 rows sorted lexicographically by factors.
    complete_grid: every factor combination is stored exactly once.
    num_distinct: number of distinct factor tuples.
    factor_values: original value of each class, see `FactorValues`.
    path: the file.
  """

  images: jax.Array
  factors: jax.Array
  order: jax.Array
  name: str = struct.field(pytree_node=False)
  factor_names: tuple[str, ...] = struct.field(pytree_node=False)
  factor_sizes: tuple[int, ...] = struct.field(pytree_node=False)
  image_shape: tuple[int, int, int] = struct.field(pytree_node=False)
  complete_grid: bool = struct.field(pytree_node=False)
  num_distinct: int = struct.field(pytree_node=False)
  factor_values: FactorValues = struct.field(pytree_node=False)
  path: str = struct.field(pytree_node=False)
  jittable: ClassVar[bool] = True


class HostTableDataset(_TableMethods, GroundTruthDataset):
  """A file dataset kept on the host (images memory-mapped or read row by row from HDF5).

  Attributes: as `TableDataset`, with numpy `factors` and `order`.
  """

  jittable: ClassVar[bool] = False

  def __init__(self, images: Any, factors: np.ndarray, order: np.ndarray, **fields: Any):
    self.images, self.factors, self.order = images, factors, order
    for name, value in fields.items():
      setattr(self, name, value)

  def __repr__(self) -> str:
    return (
      f"HostTableDataset(path={self.path!r}, factor_sizes={self.factor_sizes}, "
      f"image_shape={self.image_shape}, complete_grid={self.complete_grid}, "
      f"images={type(self.images).__name__})"
    )


class _H5Rows:
  """Rows of a chunked or compressed HDF5 dataset, read on demand (kept open)."""

  def __init__(self, path: str, key: str):
    import h5py

    self._file = h5py.File(path, "r")
    self._data = self._file[key]
    self.shape, self.dtype = tuple(self._data.shape), self._data.dtype
    self.nbytes = math.prod(self.shape) * self.dtype.itemsize

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    # h5py reads increasing, unique indices only.
    unique, inverse = np.unique(np.asarray(rows), return_inverse=True)
    return self._data[unique][inverse]

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    return np.asarray(self._data[()], dtype=dtype)


def _check_arrays(
  path: str,
  images: tuple[tuple[int, ...], np.dtype],
  factors: tuple[tuple[int, ...], np.dtype],
  names: tuple[tuple[int, ...], np.dtype] | None,
) -> None:
  """Shapes and dtypes (from headers, before anything is read)."""
  (image_shape, image_dtype), (factor_shape, factor_dtype) = images, factors
  if image_dtype.hasobject or factor_dtype.hasobject or (names and names[1].hasobject):
    raise _error(path, "holds a pickled object array (dtype=object), which is never loaded")
  if image_dtype != np.uint8 or len(image_shape) != 4 or 0 in image_shape:
    raise _error(path, f"'images' must be uint8 [N, H, W, C], got {image_dtype} {image_shape}")
  if factor_dtype.kind not in "iu" or len(factor_shape) != 2 or factor_shape[1] == 0:
    raise _error(
      path,
      f"'factors' must be integers [N, K], got {factor_dtype} {factor_shape}",
      "Store integer factor values (bin continuous ones, e.g. with np.digitize).",
    )
  if factor_shape[0] != image_shape[0]:
    raise _error(
      path,
      f"'images' has {image_shape[0]} rows but 'factors' has {factor_shape[0]}",
      "Store one factor row per image.",
    )
  if names is not None and (names[1].kind not in "US" or names[0] != (factor_shape[1],)):
    raise _error(
      path,
      f"'factor_names' must be {factor_shape[1]} strings, got {names[1]} {names[0]}",
      "Store np.array(['name', ...]) (a unicode array, not dtype=object).",
    )


def _npz_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
  with zf.open(member) as f:
    shape, _, dtype = read_npy_header(f)
  return shape, dtype


def _read_npz(path: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
  """images (memory map if stored uncompressed), factors, factor_names of an .npz."""
  with zipfile.ZipFile(path) as zf:
    members = {m[: -len(".npy")]: m for m in zf.namelist() if m.endswith(".npy")}
    missing = [k for k in ("images", "factors") if k not in members]
    if missing:
      raise _error(path, f"missing key(s) {missing}; keys present: {sorted(members)}")
    headers = {
      k: _npz_header(zf, members[k]) for k in ("images", "factors", "factor_names") if k in members
    }
    stored = zf.getinfo(members["images"]).compress_type == zipfile.ZIP_STORED
  _check_arrays(path, headers["images"], headers["factors"], headers.get("factor_names"))
  with np.load(path, allow_pickle=False) as npz:
    factors = npz["factors"]
    names = npz["factor_names"] if "factor_names" in headers else None
    if not stored:
      return npz["images"], factors, names
  offset, shape, dtype, fortran = npz_member_offset(path, members["images"])
  if os.path.getsize(path) < offset + math.prod(shape) * dtype.itemsize:
    raise _error(path, "'images' is truncated", "Write the file again.")
  images = np.memmap(
    path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
  )
  return images, factors, names


def _read_hdf5(path: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
  """images (memory map if contiguous, else read on demand), factors, factor_names."""
  import h5py

  with h5py.File(path, "r") as f:
    missing = [k for k in ("images", "factors") if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
      raise _error(path, f"missing dataset(s) {missing}; present: {sorted(f.keys())}")
    images = f["images"]
    names = f.get("factor_names")
    names_header = None
    if names is not None:
      # Variable-length strings are h5py's own string type, not pickles; report them as "U".
      is_vlen = h5py.check_string_dtype(names.dtype) is not None
      names_header = (tuple(names.shape), np.dtype("U1") if is_vlen else names.dtype)
    _check_arrays(
      path,
      (tuple(images.shape), images.dtype),
      (tuple(f["factors"].shape), f["factors"].dtype),
      names_header,
    )
    factors = f["factors"][()]
    names = None if names is None else names[()]
    offset = images.id.get_offset()
    contiguous = images.chunks is None and images.compression is None and offset is not None
    shape = tuple(images.shape)
  if contiguous:
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape), factors, names
  return _H5Rows(path, "images"), factors, names


def _classes(factors: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
  """Each column's sorted distinct values -> classes 0..k-1 ([N, K] int32, values)."""
  values, columns = [], []
  for column in factors.T:
    unique, inverse = np.unique(column, return_inverse=True)
    values.append(unique)
    columns.append(inverse.reshape(-1).astype(np.int32))
  return np.stack(columns, axis=1), values


def load_table(
  path: str,
  fmt: str,
  on_device: Any = "auto",
  device_budget_gb: float | None = None,
) -> GroundTruthDataset:
  """Loads a researcher's dataset file (see the module docstring).

  Args:
    path: `data.path`, the .npz or HDF5 file.
    fmt: "npz" or "hdf5" (`data.name`).
    on_device: see `gmg_jax.data.base.wants_device`.
    device_budget_gb: see `gmg_jax.data.base.wants_device`.

  Returns:
    A jittable `TableDataset` or a `HostTableDataset`.

  Raises:
    DataFileError: no path, a missing or unreadable file, missing keys, wrong shapes or
      dtypes, object (pickled) arrays; the message names the file and the fix.
  """
  if fmt not in FORMATS:
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}.")
  if not path:
    raise DataFileError(
      f"data.name={fmt!r} reads the file given by --config.data.path=FILE; none was given."
    )
  path = os.path.abspath(os.path.expanduser(path))
  try:
    with open(path, "rb") as f:
      magic = f.read(8)
  except OSError as e:
    raise DataFileError(f"{path}: cannot be read ({e.strerror}). Check data.path.") from e
  other = next((k for k, m in _MAGIC.items() if k != fmt and magic.startswith(m)), None)
  if other:
    raise DataFileError(f"{path}: is an {other} file, not {fmt}. Pass --config.data.name={other}.")
  try:
    images, factors, names = (_read_npz if fmt == "npz" else _read_hdf5)(path)
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
    if isinstance(e, DataFileError):
      raise
    raise _error(path, f"is not a readable {fmt} file ({unreadable_reason(e)})") from e
  classes, values = _classes(factors)
  sizes = tuple(len(v) for v in values)
  order = np.lexsort(classes.T[::-1]).astype(np.int32)
  ordered = classes[order]
  num_distinct = 1 + int(np.count_nonzero(np.any(ordered[1:] != ordered[:-1], axis=1)))
  n = classes.shape[0]
  complete = n == math.prod(sizes) and num_distinct == n
  if names is None:
    names = tuple(f"factor_{k}" for k in range(len(sizes)))
  else:
    names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in names.tolist())
  fields = dict(
    name=fmt,
    factor_names=names,
    factor_sizes=sizes,
    image_shape=tuple(int(d) for d in images.shape[1:]),
    complete_grid=complete,
    num_distinct=num_distinct,
    factor_values=FactorValues(values),
    path=path,
  )
  if wants_device(images.nbytes, on_device, device_budget_gb):
    arrays = jax.device_put((np.asarray(images), classes, order))
    return TableDataset(*arrays, **fields)
  return HostTableDataset(images, classes, order, **fields)
