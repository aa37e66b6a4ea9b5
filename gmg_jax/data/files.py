"""Loaders for the original files of the five real benchmarks.

Each reader checks the file (keys, dtypes, shapes, factor order) and raises `DataFileError`
naming the file and what was expected, then returns the images as uint8 `[N, H, W, C]` in the
row-major order of the factor grid (disentanglement_lib's index order). `load_files` then puts
them on the device (a jittable `ArrayDataset`) or keeps them on the host (`HostArrayDataset`)
with `gmg_jax.data.base.place`, by `data_config.on_device` and the device budget.

MPI3D is never read into memory: the `images` member of the uncompressed .npz is memory-mapped
in place (uint8, no float copy); a compressed .npz is streamed once into a sibling .npy file,
which is then memory-mapped.

File layout under a data directory (what `python -m gmg_jax.data.download` writes):
  dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz  (or the .hdf5 that TFDS uses)
  shapes3d/3dshapes.h5
  mpi3d_{toy,realistic,real}/mpi3d_{toy,realistic,real}.npz
  small_norb/smallnorb-5x{46789,01235}x9x18x6x2x96x96-{training,testing}-{dat,cat,info}.mat
  cars/*.mat
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# `place` and `Spec` live in base; experiments/bench_data.py still calls `files.place`.
from gmg_jax.data.base import (
  DataFileError,
  GroundTruthDataset,
  Spec,
  default_data_dir,
  expect,
  grid_index,
  place,
  search_dirs,
)
from gmg_jax.data.npz import npz_member_offset, stream_npz_member_to_npy, unreadable_reason

_DSPRITES_STEM = "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64"
_NORB = "small_norb/smallnorb-5x{}x9x18x6x2x96x96-{}-{}.mat"
_NORB_CHUNKS = (("46789", "training"), ("01235", "testing"))
_MPI3D_NAMES = (
  "object_color",
  "object_shape",
  "object_size",
  "camera_height",
  "background_color",
  "horizontal_axis",
  "vertical_axis",
)


def _mpi3d_spec(variant: str) -> Spec:
  name = f"mpi3d_{variant}"
  return Spec(
    name,
    _MPI3D_NAMES,
    (6, 6, 2, 3, 3, 40, 40),
    tuple(range(7)),
    3,
    (f"{name}/{name}.npz|{name}/{name}.npy",),
  )


SPECS: dict[str, Spec] = {
  "dsprites": Spec(
    "dsprites",
    ("shape", "scale", "orientation", "pos_x", "pos_y"),
    (3, 6, 40, 32, 32),
    (0, 1, 2, 3, 4),
    1,
    (f"{_DSPRITES_STEM}.npz|{_DSPRITES_STEM}.hdf5",),
  ),
  "shapes3d": Spec(
    "shapes3d",
    ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    (10, 10, 10, 8, 4, 15),
    (0, 1, 2, 3, 4, 5),
    3,
    ("shapes3d/3dshapes.h5",),
  ),
  "mpi3d_toy": _mpi3d_spec("toy"),
  "mpi3d_realistic": _mpi3d_spec("realistic"),
  "mpi3d_real": _mpi3d_spec("real"),
  # Instance (axis 1) is a nuisance factor, resampled as in disentanglement_lib.
  "smallnorb": Spec(
    "smallnorb",
    ("category", "elevation", "azimuth", "lighting"),
    (5, 10, 9, 18, 6),
    (0, 2, 3, 4),
    1,
    tuple(_NORB.format(i, s, t) for i, s in _NORB_CHUNKS for t in ("dat", "cat", "info")),
  ),
  "cars3d": Spec(
    "cars3d",
    ("elevation", "azimuth", "object_type"),
    (4, 24, 183),
    (0, 1, 2),
    3,
    ("cars/",),
  ),
}


def find_file(name: str, relpath: str, data_dir: str | None) -> str:
  """Locates one dataset file in the searched data directories.

  Args:
    name: dataset name (for the download command in the error).
    relpath: path under a data directory; "a|b" accepts either; a trailing "/" a directory.
    data_dir: `config.data.data_dir` ("" = not given).

  Returns:
    The absolute path of the first match.

  Raises:
    DataFileError: nothing found; lists every path tried and the download command.
  """
  tried = []
  for root in search_dirs(data_dir):
    for alt in relpath.split("|"):
      path = os.path.join(root, alt)
      tried.append(path)
      if os.path.isdir(path) if alt.endswith("/") else os.path.isfile(path):
        return path
  target = search_dirs(data_dir)[0]
  raise DataFileError(
    f"Dataset {name!r}: file {relpath.split('|')[0]!r} not found. Searched (in order: "
    "--config.data.data_dir, $GMG_DATA_DIR, ~/gmg_data):\n  "
    + "\n  ".join(tried)
    + f"\nDownload it with:\n  python -m gmg_jax.data.download {name} --data_dir={target}"
  )


def to_grid_order(images: np.ndarray, classes: np.ndarray, spec: Spec, path: str) -> np.ndarray:
  """Reorders images so that row i has the factor classes `index_to_factors(i)`.

  Args:
    images: [N, ...] images in file order.
    classes: [N, len(full_sizes)] int factor classes of each row.
    spec: the grid.
    path: file named in errors.

  Returns:
    [N, ...] images in grid order (the input itself when already ordered).
  """
  sizes = np.asarray(spec.full_sizes)
  expect(
    classes.shape == (spec.num_images, len(sizes)),
    path,
    f"factor classes of shape {(spec.num_images, len(sizes))}, got {classes.shape}",
  )
  expect(
    bool(np.all((classes >= 0) & (classes < sizes))),
    path,
    f"factor classes within the grid {spec.full_sizes}",
  )
  index = grid_index(classes, spec.full_sizes)
  if np.array_equal(index, np.arange(spec.num_images)):
    return images
  counts = np.bincount(index, minlength=spec.num_images)
  expect(
    bool(np.all(counts == 1)),
    path,
    f"every factor combination of {spec.full_sizes} exactly once "
    f"({int(np.sum(counts == 0))} missing)",
  )
  ordered = np.empty_like(images)
  ordered[index] = images
  return ordered


def _check_images(images: Any, spec: Spec, path: str, channel_axis: bool = True) -> None:
  shape = (spec.num_images, 64, 64) + ((spec.channels,) if channel_axis else ())
  expect(
    images.dtype == np.uint8 and tuple(images.shape) == shape,
    path,
    f"uint8 images of shape {shape}, got {images.dtype} {tuple(images.shape)}",
  )


def read_dsprites_npz(path: str, spec: Spec) -> np.ndarray:
  """dSprites .npz (keys imgs [N, 64, 64] uint8 {0, 1}, latents_classes [N, 6]).

  Returns:
    [N, 64, 64, 1] uint8 images in {0, 255}, grid order.
  """
  # Never unpickle: the `metadata` member is a pickled dict and is not read, and a pickle
  # planted at this path fails in np.load instead of running.
  try:
    with np.load(path, allow_pickle=False) as npz:
      expect(
        {"imgs", "latents_classes"} <= set(npz.files),
        path,
        f"keys 'imgs' and 'latents_classes', got {sorted(npz.files)}",
      )
      images, classes = npz["imgs"], npz["latents_classes"]
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
    if isinstance(e, DataFileError):
      raise
    raise DataFileError(f"{path}: not a readable dSprites .npz ({unreadable_reason(e)}).") from e
  return _finish_dsprites(images, classes, spec, path)


def read_dsprites_hdf5(path: str, spec: Spec) -> np.ndarray:
  """dSprites .hdf5 as used by TFDS (keys imgs, latents/classes). See `read_dsprites_npz`."""
  images, classes = _read_hdf5(path, ("imgs", "latents/classes"), spec, channel_axis=False)
  return _finish_dsprites(images, classes, spec, path)


def _read_hdf5(
  path: str, keys: tuple[str, str], spec: Spec, channel_axis: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """Reads the images (checked against `spec` first) and labels datasets `keys` of an HDF5 file."""
  import h5py

  images_key, labels_key = keys
  try:
    with h5py.File(path, "r") as f:
      expect(
        images_key in f and labels_key in f,
        path,
        f"datasets {images_key!r} and {labels_key!r}, got {list(f.keys())}",
      )
      _check_images(f[images_key], spec, path, channel_axis)
      return f[images_key][()], f[labels_key][()]
  except OSError as e:
    raise DataFileError(f"{path}: not a readable HDF5 file ({e}).") from e


def _finish_dsprites(images: np.ndarray, classes: np.ndarray, spec: Spec, path: str) -> np.ndarray:
  _check_images(images, spec, path, channel_axis=False)
  expect(
    classes.ndim == 2 and classes.shape[1] == 6,
    path,
    f"latents_classes of shape (N, 6) (color, shape, ...), got {classes.shape}",
  )
  images = to_grid_order(images, classes[:, 1:], spec, path)
  expect(int(images.max(initial=0)) <= 1, path, "binary images with values in {0, 1}")
  # In place: the 3 GB array is never duplicated.
  images *= np.uint8(255)
  return images.reshape(images.shape[:3] + (1,))


def read_shapes3d(path: str, spec: Spec) -> np.ndarray:
  """3dshapes.h5 (images [N, 64, 64, 3] uint8, labels [N, 6] float64 factor values).

  Returns:
    [N, 64, 64, 3] uint8 images in grid order.
  """
  images, labels = _read_hdf5(path, ("images", "labels"), spec)
  expect(
    labels.shape == (spec.num_images, 6),
    path,
    f"labels of shape {(spec.num_images, 6)}, got {labels.shape}",
  )
  # The file stores factor values; their rank among the distinct values is the class.
  classes = np.stack([np.unique(col, return_inverse=True)[1] for col in labels.T], axis=1)
  return to_grid_order(images, classes.reshape(labels.shape), spec, path)


def open_mpi3d(path: str, spec: Spec) -> np.ndarray:
  """Memory-maps MPI3D's `images` ([N, 64, 64, 3] uint8) without reading it.

  Args:
    path: the .npz (or an already converted .npy).
    spec: the grid (N = prod(full_sizes)).

  Returns:
    A read-only uint8 `np.memmap` over the file.
  """
  try:
    if path.endswith(".npy"):
      images = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
      with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        expect("images.npy" in names, path, f"key 'images', got {names}")
        stored = zf.getinfo("images.npy").compress_type == zipfile.ZIP_STORED
      if stored:
        offset, shape, dtype, fortran = npz_member_offset(path, "images.npy")
        expect(
          os.path.getsize(path) >= offset + math.prod(shape) * dtype.itemsize,
          path,
          f"{math.prod(shape)} bytes of images (file truncated)",
        )
        images = np.memmap(
          path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )
      else:
        npy = os.path.splitext(path)[0] + ".npy"
        if not os.path.exists(npy):
          stream_npz_member_to_npy(path, "images.npy", npy)
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
    if isinstance(e, DataFileError):
      raise
    raise DataFileError(f"{path}: not a readable MPI3D file ({unreadable_reason(e)}).") from e
  _check_images(images, spec, path)
  return images


def read_norb_matrix(path: str) -> np.ndarray:
  """Reads a SmallNORB binary matrix (.mat) as a read-only memory map.

  Format (cs.nyu.edu/~ylclab/data/norb-v1.0-small): int32 magic (dtype), int32 ndim,
  max(3, ndim) int32 dims, then the little-endian data.
  """
  dtypes = {
    507333717: np.uint8,
    507333716: np.dtype("<i4"),
    507333713: np.dtype("<f4"),
    507333715: np.dtype("<f8"),
  }
  try:
    with open(path, "rb") as f:
      head = f.read(40)  # magic, ndim and at most 8 dims
  except OSError as e:
    raise DataFileError(f"{path}: cannot read ({e}).") from e
  expect(len(head) >= 20, path, "a SmallNORB binary matrix header (file too short)")
  magic, ndim = struct.unpack("<ii", head[:8])
  expect(
    magic in dtypes and 1 <= ndim <= 8,
    path,
    f"a SmallNORB magic number in {sorted(dtypes)}, got {magic}",
  )
  offset = 8 + 4 * max(3, ndim)
  expect(len(head) >= offset, path, "a complete SmallNORB header (file too short)")
  dims = struct.unpack(f"<{ndim}i", head[8 : 8 + 4 * ndim])
  dtype = np.dtype(dtypes[magic])
  expected = offset + math.prod(dims) * dtype.itemsize
  expect(
    os.path.getsize(path) == expected,
    path,
    f"{expected} bytes for a {dtype} matrix of shape {dims}, got {os.path.getsize(path)}",
  )
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(dims))


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
  """Resizes uint8 images with PIL's Lanczos filter (disentanglement_lib's ANTIALIAS).

  Args:
    images: [N, h, w] or [N, h, w, C] uint8.
    side: output side.

  Returns:
    [N, side, side(, C)] uint8.
  """
  from PIL import Image

  if images.shape[1:3] == (side, side):
    return np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    return resize_images(images[..., 0], side)[..., None]
  out = np.empty((images.shape[0], side, side) + images.shape[3:], dtype=np.uint8)
  for i, image in enumerate(images):
    out[i] = np.asarray(Image.fromarray(np.asarray(image)).resize((side, side), Image.LANCZOS))
  return out


def read_smallnorb(paths: Sequence[str], spec: Spec, side: int = 64) -> np.ndarray:
  """SmallNORB training + testing chunks (camera 0), resized to side x side.

  Args:
    paths: [dat, cat, info] paths of each chunk, concatenated (training first).
    spec: the grid (category, instance, elevation, azimuth, lighting).
    side: output image side.

  Returns:
    [N, side, side, 1] uint8 images in grid order.
  """
  images, classes = [], []
  for dat_path, cat_path, info_path in zip(paths[0::3], paths[1::3], paths[2::3], strict=True):
    dat, cat, info = (read_norb_matrix(p) for p in (dat_path, cat_path, info_path))
    n = dat.shape[0]
    expect(
      dat.dtype == np.uint8 and dat.ndim == 4 and dat.shape[1] == 2,
      dat_path,
      f"uint8 images of shape (N, 2, H, W), got {dat.dtype} {dat.shape}",
    )
    expect(cat.shape == (n,), cat_path, f"{n} category labels, got shape {cat.shape}")
    expect(info.shape == (n, 4), info_path, f"info of shape ({n}, 4), got {info.shape}")
    expect(bool(np.all(info[:, 2] % 2 == 0)), info_path, "even azimuths 0, 2, ..., 34")
    images.append(resize_images(dat[:, 0], side))
    # dlib: (category, instance, elevation, azimuth / 2, lighting).
    classes.append(np.column_stack([cat, info[:, 0], info[:, 1], info[:, 2] // 2, info[:, 3]]))
  all_images = np.concatenate(images)[..., None]
  expect(
    all_images.shape[0] == spec.num_images,
    paths[0],
    f"{spec.num_images} images over all chunks, got {all_images.shape[0]}",
  )
  return to_grid_order(all_images, np.concatenate(classes).astype(np.int64), spec, paths[0])


def read_cars3d(directory: str, spec: Spec, side: int = 64) -> np.ndarray:
  """Cars3D: one .mat per car (sorted by name), key `im` [128, 128, 3, azimuth, elevation].

  Returns:
    [N, side, side, 3] uint8 images in (elevation, azimuth, car) grid order.
  """
  from scipy.io import loadmat

  n_elev, n_azim, n_cars = spec.full_sizes
  names = sorted(f for f in os.listdir(directory) if f.endswith(".mat"))
  expect(len(names) == n_cars, directory, f"{n_cars} car .mat files, found {len(names)}")
  grid = np.empty((n_elev, n_azim, n_cars, side, side, 3), dtype=np.uint8)
  for car, name in enumerate(names):
    path = os.path.join(directory, name)
    try:
      mesh = loadmat(path)
    except Exception as e:  # scipy raises several unrelated types on corrupt files
      raise DataFileError(f"{path}: not a readable .mat file ({e}).") from e
    im = mesh.get("im")
    expect(
      im is not None
      and im.ndim == 5
      and im.shape[2:] == (3, n_azim, n_elev)
      and im.dtype == np.uint8,
      path,
      f"key 'im' with uint8 shape (H, W, 3, {n_azim}, {n_elev}), got "
      f"{None if im is None else (im.dtype, im.shape)}",
    )
    views = np.transpose(im, (4, 3, 0, 1, 2)).reshape((-1,) + im.shape[:3])
    grid[:, :, car] = resize_images(views, side).reshape(n_elev, n_azim, side, side, 3)
  return grid.reshape(-1, side, side, 3)


def _read_dsprites(paths: list[str], spec: Spec, side: int) -> np.ndarray:
  if paths[0].endswith(".hdf5"):
    return read_dsprites_hdf5(paths[0], spec)
  return read_dsprites_npz(paths[0], spec)


_READERS: dict[str, Callable[[list[str], Spec, int], np.ndarray]] = {
  "dsprites": _read_dsprites,
  "shapes3d": lambda paths, spec, side: read_shapes3d(paths[0], spec),
  "mpi3d_toy": lambda paths, spec, side: open_mpi3d(paths[0], spec),
  "mpi3d_realistic": lambda paths, spec, side: open_mpi3d(paths[0], spec),
  "mpi3d_real": lambda paths, spec, side: open_mpi3d(paths[0], spec),
  "smallnorb": lambda paths, spec, side: read_smallnorb(paths, spec, side),
  "cars3d": lambda paths, spec, side: read_cars3d(paths[0], spec, side),
}
# The sets stored at 64x64 cannot be rendered at other sizes; the others are resized anyway.
_RESIZABLE = ("smallnorb", "cars3d")


def load_files(
  name: str,
  data_dir: str = "",
  image_size: int = 64,
  on_device: Any = "auto",
  device_budget_gb: float | None = None,
  spec: Spec | None = None,
) -> GroundTruthDataset:
  """Loads a real dataset from its original files.

  Args:
    name: a key of `SPECS`.
    data_dir: `config.data.data_dir` ("" = `$GMG_DATA_DIR`, then ~/gmg_data).
    image_size: image side; must be 64 except for SmallNORB and Cars3D (resized).
    on_device: see `place`.
    device_budget_gb: see `place`.
    spec: override of the grid (tests use small grids in the real format).

  Returns:
    An `ArrayDataset` (jittable) or `HostArrayDataset`.
  """
  spec = spec or SPECS[name]
  if image_size != 64 and name not in _RESIZABLE:
    raise ValueError(f"{name} is stored at 64x64; got data.image_size={image_size}.")
  paths = [find_file(name, rel, data_dir) for rel in spec.files]
  try:
    images = _READERS[name](paths, spec, image_size)
  except DataFileError as e:
    raise DataFileError(f"{e}\n{_redownload_hint(name, paths[0], data_dir)}") from e
  return place(images, spec, on_device, device_budget_gb)


def _redownload_hint(name: str, path: str, data_dir: str | None) -> str:
  """How to replace a damaged file: delete it, then the download command for its directory."""
  root = next(
    (d for d in search_dirs(data_dir) if path.startswith(d + os.sep)), default_data_dir(data_dir)
  )
  download_name = "dsprites_hdf5" if path.endswith(".hdf5") else name
  return (
    "If the file named above is damaged or not the original, delete it and download it again:\n"
    f"  python -m gmg_jax.data.download {download_name} --data_dir={root}"
  )
