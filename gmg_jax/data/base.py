"""The ground-truth-factor dataset interface shared by every dataset in gmg_jax.

A ground-truth dataset is a full grid of images indexed by discrete factors of variation
(disentanglement_lib's `GroundTruthData`). Factors are int32 class indices `[n, K]` in the
dataset's own order; the flat image index is the row-major (C order) position in the grid, so
the last factor varies fastest, exactly as the original files are laid out.

Two kinds of datasets share this interface:

* jittable (`jittable = True`): procedural renderers and image arrays held on the accelerator.
  They are JAX pytrees (`flax.struct.dataclass`) whose only leaves are device arrays and whose
  metadata is static, so a jitted train step takes the dataset as an *argument*
  (`jax.jit(step)(state, dataset, key)`) instead of baking a multi-GB constant into the program.
* host (`jittable = False`): sets too big for the device (MPI3D, 12.7 GB) kept as a uint8 numpy
  memory map. `sample_factors` is still JAX; `images_from_factors` gathers on the host and
  returns numpy. These are not pytrees: passing one to `jax.jit` fails loudly.

Images are uint8 in [0, 255] everywhere (dSprites' binary {0, 1} is scaled to {0, 255}), so
`images / 255.` is the float image disentanglement_lib feeds its models.

`place` wraps a real set's grid-ordered images as one or the other (`data_config.on_device`):
  * "auto" (default): on the device if the uint8 images fit the budget. The budget is
    `data_config.device_budget_gb` if set, else half of the accelerator's memory
    (`memory_stats()["bytes_limit"]`), else 8 GiB on CPU, where the "device" is host RAM.
    dSprites (3.0 GB), Shapes3D (5.9 GB), SmallNORB (0.2 GB) and Cars3D (0.2 GB) go to the
    device; MPI3D (12.7 GB) stays on the host.
  * True / "device": always on the device. False / "host": always on the host.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gmg_jax.errors import DataFileError

ENV_DATA_DIR = "GMG_DATA_DIR"
DEFAULT_DATA_DIR = os.path.join("~", "gmg_data")


def expect(ok: bool, where: str, expected: str) -> None:
  """Raises `DataFileError("{where}: expected {expected}.")` unless `ok`."""
  if not ok:
    raise DataFileError(f"{where}: expected {expected}.")


def strides_for(sizes: Sequence[int]) -> tuple[int, ...]:
  """Row-major strides of a factor grid.

  Args:
    sizes: [K] number of values of each factor.

  Returns:
    [K] stride of each factor in the flat index (the last factor has stride 1).
  """
  strides, acc = [], 1
  for size in reversed(sizes):
    strides.append(acc)
    acc *= int(size)
  return tuple(reversed(strides))


def grid_index(factors: Any, sizes: Sequence[int], xp: Any = np) -> Any:
  """Flat row-major index of factor tuples.

  Args:
    factors: [n, K] int class indices.
    sizes: [K] factor sizes.
    xp: `numpy` or `jax.numpy`.

  Returns:
    [n] int32 (jnp) or int64 (np) flat indices.
  """
  dtype = xp.int32 if xp is jnp else xp.int64
  factors = xp.asarray(factors).astype(dtype)
  return factors @ xp.asarray(strides_for(sizes), dtype=dtype)


def grid_factors(index: Any, sizes: Sequence[int], xp: Any = np) -> Any:
  """Inverse of `grid_index`.

  Args:
    index: [n] flat indices.
    sizes: [K] factor sizes.
    xp: `numpy` or `jax.numpy`.

  Returns:
    [n, K] int32 factor class indices.
  """
  index = xp.asarray(index).astype(xp.int32 if xp is jnp else xp.int64)[:, None]
  strides = xp.asarray(strides_for(sizes), dtype=index.dtype)
  return ((index // strides) % xp.asarray(sizes, dtype=index.dtype)).astype(xp.int32)


def search_dirs(data_dir: str | None) -> list[str]:
  """Places searched for dataset files, in priority order.

  Args:
    data_dir: `config.data.data_dir`; "" or None means not given.

  Returns:
    The explicit `data_dir` (if given), then `$GMG_DATA_DIR` (if set), then `~/gmg_data`,
    expanded and without duplicates.
  """
  candidates = [data_dir or "", os.environ.get(ENV_DATA_DIR, ""), DEFAULT_DATA_DIR]
  dirs: list[str] = []
  for d in candidates:
    d = os.path.abspath(os.path.expanduser(d)) if d else ""
    if d and d not in dirs:
      dirs.append(d)
  return dirs


def default_data_dir(data_dir: str | None = None) -> str:
  """The directory where downloads go: the first entry of `search_dirs`."""
  return search_dirs(data_dir)[0]


class GroundTruthDataset(abc.ABC):
  """Interface of a dataset whose images form a full grid over discrete factors.

  Subclasses are dataclasses that define the fields `name`, `factor_names`, `factor_sizes`
  and `image_shape`, the class variable `jittable`, and `images_from_factors`.

  Attributes:
    name: registry name, e.g. "shapes3d".
    factor_names: [K] factor names in the dataset's order.
    factor_sizes: [K] number of values of each factor.
    image_shape: (H, W, C).
    jittable: whether the methods are pure JAX and may run inside `jax.jit`.
  """

  name: str
  factor_names: tuple[str, ...]
  factor_sizes: tuple[int, ...]
  image_shape: tuple[int, int, int]
  jittable: ClassVar[bool] = True

  @property
  def num_factors(self) -> int:
    """K, the number of ground-truth factors."""
    return len(self.factor_sizes)

  @property
  def num_images(self) -> int:
    """Number of images in the (full) grid."""
    return math.prod(self.factor_sizes)

  @property
  def _xp(self) -> Any:
    return jnp if self.jittable else np

  def index_to_factors(self, index: Any) -> Any:
    """Factor classes of flat grid indices.

    Args:
      index: [n] int flat indices in [0, prod(factor_sizes)).

    Returns:
      [n, K] int32 factor classes (jax array if jittable, else numpy).
    """
    return grid_factors(index, self.factor_sizes, self._xp)

  def factors_to_index(self, factors: Any) -> Any:
    """Flat grid index of factor tuples (inverse of `index_to_factors`).

    Args:
      factors: [n, K] int factor classes.

    Returns:
      [n] int flat indices (int32 jax array if jittable, else int64 numpy).
    """
    return grid_index(factors, self.factor_sizes, self._xp)

  def sample_factors(self, key: jax.Array, n: int) -> jax.Array:
    """Factor tuples drawn uniformly over the grid (pure JAX for every dataset).

    Args:
      key: PRNG key.
      n: number of samples (static).

    Returns:
      [n, K] int32 factor classes.
    """
    sizes = jnp.asarray(self.factor_sizes, dtype=jnp.int32)
    return jax.random.randint(key, (n, self.num_factors), 0, sizes, dtype=jnp.int32)

  @abc.abstractmethod
  def images_from_factors(self, factors: Any, key: jax.Array | None = None) -> Any:
    """Images for factor tuples.

    Args:
      factors: [n, K] int factor classes.
      key: optional PRNG key that resamples nuisance factors that are not part of the
        latent grid (SmallNORB's instance, as disentanglement_lib does). Without a key the
        nuisance value is a fixed function of the factors, so the call is deterministic.
        Datasets without nuisance factors ignore it.

    Returns:
      [n, H, W, C] uint8 images (jax array if jittable, else numpy).
    """

  def sample_batch(self, key: jax.Array, n: int) -> tuple[Any, Any]:
    """A uniform batch of images and their factors.

    Args:
      key: PRNG key.
      n: batch size (static).

    Returns:
      images: [n, H, W, C] uint8 (jax if jittable, else numpy).
      factors: [n, K] int32 (jax if jittable, else numpy).
    """
    key_factors, key_nuisance = jax.random.split(key)
    factors = self.sample_factors(key_factors, n)
    if not self.jittable:
      factors = np.asarray(factors)
    return self.images_from_factors(factors, key_nuisance), factors


def _nuisance_full_factors(
  factors: Any,
  full_sizes: tuple[int, ...],
  latent_axes: tuple[int, ...],
  key: jax.Array | None,
  xp: Any,
) -> Any:
  """Insert nuisance factors (axes of `full_sizes` not in `latent_axes`) into `factors`.

  With a key they are uniform draws (disentanglement_lib's `sample_all_factors`); without one
  they are the latent grid index modulo the nuisance size, so each latent tuple maps to a
  fixed image while different tuples still cover all nuisance values.
  """
  factors = xp.asarray(factors).astype(xp.int32)
  n = factors.shape[0]
  latent_sizes = tuple(full_sizes[a] for a in latent_axes)
  columns: list[Any] = []
  latent_iter = iter(range(len(latent_axes)))
  for axis, size in enumerate(full_sizes):
    if axis in latent_axes:
      columns.append(factors[:, next(latent_iter)])
      continue
    if key is not None:
      key, sub = jax.random.split(key)
      draw = jax.random.randint(sub, (n,), 0, size, dtype=jnp.int32)
      columns.append(draw if xp is jnp else np.asarray(draw))
    else:
      columns.append((grid_index(factors, latent_sizes, xp) % size).astype(xp.int32))
  return xp.stack(columns, axis=1)


@struct.dataclass
class ArrayDataset(GroundTruthDataset):
  """A dataset held as a uint8 image array on the device (jittable pytree).

  The image array is the only pytree leaf, so `jax.jit(f)(dataset)` passes it as a device
  buffer argument; re-calling with the same dataset reuses the compiled program.

  Attributes:
    images: [N, H, W, C] uint8 device array in row-major order of `full_sizes`.
    full_sizes: sizes of every axis of the stored grid, latent or nuisance.
    latent_axes: which axes of `full_sizes` are the latent factors (in order).
  """

  images: jax.Array
  name: str = struct.field(pytree_node=False)
  factor_names: tuple[str, ...] = struct.field(pytree_node=False)
  factor_sizes: tuple[int, ...] = struct.field(pytree_node=False)
  image_shape: tuple[int, int, int] = struct.field(pytree_node=False)
  full_sizes: tuple[int, ...] = struct.field(pytree_node=False)
  latent_axes: tuple[int, ...] = struct.field(pytree_node=False)
  jittable: ClassVar[bool] = True

  @property
  def num_images(self) -> int:
    """Number of stored images, nuisance axes included (SmallNORB: 48,600)."""
    return math.prod(self.full_sizes)

  def images_from_factors(self, factors: Any, key: jax.Array | None = None) -> jax.Array:
    """See `GroundTruthDataset.images_from_factors`; a device gather, no copy of the set."""
    full = _nuisance_full_factors(factors, self.full_sizes, self.latent_axes, key, jnp)
    return jnp.take(self.images, grid_index(full, self.full_sizes, jnp), axis=0)


class HostArrayDataset(GroundTruthDataset):
  """A dataset kept on the host as a uint8 numpy array or memory map (not jittable).

  Used for sets that do not fit the device budget (MPI3D). Batches are gathered on the host
  (only the requested rows are read from the memory map) and returned as numpy uint8.

  Attributes:
    images: [N, H, W, C] uint8 numpy array or `np.memmap`.
    full_sizes, latent_axes: as in `ArrayDataset`.
  """

  jittable: ClassVar[bool] = False

  def __init__(
    self,
    images: np.ndarray,
    name: str,
    factor_names: tuple[str, ...],
    factor_sizes: tuple[int, ...],
    image_shape: tuple[int, int, int],
    full_sizes: tuple[int, ...],
    latent_axes: tuple[int, ...],
  ):
    self.images = images
    self.name = name
    self.factor_names = tuple(factor_names)
    self.factor_sizes = tuple(factor_sizes)
    self.image_shape = tuple(image_shape)
    self.full_sizes = tuple(full_sizes)
    self.latent_axes = tuple(latent_axes)

  @property
  def num_images(self) -> int:
    """Number of stored images, nuisance axes included."""
    return math.prod(self.full_sizes)

  def images_from_factors(self, factors: Any, key: jax.Array | None = None) -> np.ndarray:
    """See `GroundTruthDataset.images_from_factors`; a host gather from the memory map."""
    full = _nuisance_full_factors(np.asarray(factors), self.full_sizes, self.latent_axes, key, np)
    index = grid_index(full, self.full_sizes, np)
    # Fancy indexing a memmap reads just these rows; sorting makes the reads sequential.
    order = np.argsort(index, kind="stable")
    out = np.empty((len(index),) + self.image_shape, dtype=np.uint8)
    out[order] = self.images[index[order]]
    return out

  def __repr__(self) -> str:
    return (
      f"HostArrayDataset(name={self.name!r}, factor_sizes={self.factor_sizes}, "
      f"image_shape={self.image_shape}, images={type(self.images).__name__})"
    )


@dataclasses.dataclass(frozen=True)
class Spec:
  """The factor grid of a real dataset as disentanglement_lib defines it.

  Attributes:
    name: registry name.
    factor_names: [K] latent factor names.
    full_sizes: sizes of every axis of the stored grid (latent and nuisance).
    latent_axes: axes of `full_sizes` that are latent factors.
    channels: image channels.
    files: relative paths (alternatives for one file are separated by "|").
  """

  name: str
  factor_names: tuple[str, ...]
  full_sizes: tuple[int, ...]
  latent_axes: tuple[int, ...]
  channels: int
  files: tuple[str, ...]

  @property
  def factor_sizes(self) -> tuple[int, ...]:
    return tuple(self.full_sizes[a] for a in self.latent_axes)

  @property
  def num_images(self) -> int:
    return math.prod(self.full_sizes)


def _device_budget_bytes(budget_gb: float | None) -> int:
  if budget_gb:
    return int(budget_gb * 2**30)
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]) // 2
  return 8 * 2**30


def wants_device(
  nbytes: int, on_device: Any = "auto", device_budget_gb: float | None = None
) -> bool:
  """Whether images of `nbytes` go on the device (see the module docstring).

  Args:
    nbytes: size of the uint8 images.
    on_device: "auto" | True | "device" | False | "host".
    device_budget_gb: budget for "auto"; None = half the accelerator memory (8 GiB on CPU).
  """
  if on_device == "auto":
    return nbytes <= _device_budget_bytes(device_budget_gb)
  if isinstance(on_device, str):
    expect(
      on_device in ("device", "host"),
      "data.on_device",
      f"'auto', 'device', 'host' or a bool, got {on_device!r}",
    )
    return on_device == "device"
  return bool(on_device)


def place(
  images: np.ndarray, spec: Spec, on_device: Any = "auto", device_budget_gb: float | None = None
) -> GroundTruthDataset:
  """Wraps grid-ordered uint8 images as a device (`ArrayDataset`) or host dataset.

  Args:
    images: [N, H, W, C] uint8 in grid order of `spec.full_sizes`.
    spec: the grid.
    on_device: "auto" | True | "device" | False | "host" (see the module docstring).
    device_budget_gb: budget for "auto"; None = half the accelerator memory (8 GiB on CPU).

  Returns:
    The dataset.
  """
  on_device = wants_device(images.nbytes, on_device, device_budget_gb)
  fields = dict(
    name=spec.name,
    factor_names=spec.factor_names,
    factor_sizes=spec.factor_sizes,
    image_shape=tuple(images.shape[1:]),
    full_sizes=spec.full_sizes,
    latent_axes=spec.latent_axes,
  )
  if on_device:
    # uint8 on the device; the gather in images_from_factors never copies the set.
    return ArrayDataset(images=jax.device_put(images), **fields)
  return HostArrayDataset(images=images, **fields)
