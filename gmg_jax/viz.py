"""Latent traversals, reconstructions and metric curves as PNG files.

Grids are built as uint8 arrays [H, W, C] first (so tests can check every pixel), then
written with `save_png`. Every file is written to a temporary file in the target directory
and moved into place with `os.replace`, so a reader (or a preempted trainer) never sees a
half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import matplotlib.image
import numpy as np
from matplotlib.figure import Figure

DecodeFn = Callable[[np.ndarray], Any]


def to_uint8(images: Any) -> np.ndarray:
  """Images as uint8: uint8 stays, floats are taken in [0, 1], clipped and rounded.

  Args:
      images: [..., H, W, C] uint8 or float array (numpy or JAX).

  Returns:
      uint8 array of the same shape.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images: Any, *, padding: int = 1, pad_value: int = 255) -> np.ndarray:
  """Tiles images into one image.

  Args:
      images: [rows, cols, H, W, C] images (uint8 or floats in [0, 1]).
      padding: pixels of `pad_value` between cells and around the grid.
      pad_value: border intensity.

  Returns:
      uint8 [rows * (H + padding) + padding, cols * (W + padding) + padding, C]; cell (r, c)
      starts at (padding + r * (H + padding), padding + c * (W + padding)).
  """
  images = to_uint8(images)
  rows, cols, height, width, channels = images.shape
  grid = np.full(
    (rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
    pad_value,
    dtype=np.uint8,
  )
  for r in range(rows):
    for c in range(cols):
      top, left = padding + r * (height + padding), padding + c * (width + padding)
      grid[top : top + height, left : left + width] = images[r, c]
  return grid


def traversal_codes(
  codes: np.ndarray, values: Sequence[float], dims: Sequence[int] | None = None
) -> np.ndarray:
  """Codes of a traversal: each base code with one dim swept over `values`.

  Args:
      codes: [n, D] base codes.
      values: [S] values the traversed dim takes.
      dims: dims to traverse (all by default).

  Returns:
      [n * len(dims), S, D]; row i * len(dims) + j sweeps dim dims[j] of code i.
  """
  codes = np.asarray(codes, dtype=np.float32)
  dims = list(range(codes.shape[1])) if dims is None else list(dims)
  grid = np.repeat(codes[:, None, None, :], len(dims), axis=1)
  grid = np.repeat(grid, len(values), axis=2)  # [n, len(dims), S, D]
  for j, dim in enumerate(dims):
    grid[:, j, :, dim] = np.asarray(values, dtype=np.float32)
  return grid.reshape(-1, len(values), codes.shape[1])


def latent_traversal_grid(
  decode_fn: DecodeFn,
  codes: np.ndarray,
  *,
  values: Sequence[float] = tuple(np.linspace(-2.0, 2.0, 7)),
  dims: Sequence[int] | None = None,
  padding: int = 1,
) -> np.ndarray:
  """Latent traversal image: rows are (base code, dim), columns the swept values.

  Args:
      decode_fn: codes [m, D] -> images [m, H, W, C] (uint8, or floats in [0, 1], e.g.
          sigmoid of the decoder's logits).
      codes: [n, D] base codes (e.g. encoder means of a few images).
      values: values each traversed dim takes, left to right.
      dims: dims to traverse (all by default).
      padding: pixels between cells.

  Returns:
      uint8 grid image (see `image_grid`); cell (r, c) is decode_fn of
      `traversal_codes(codes, values, dims)[r, c]`.
  """
  sweep = traversal_codes(codes, values, dims)
  images = to_uint8(decode_fn(sweep.reshape(-1, sweep.shape[-1])))
  return image_grid(images.reshape(*sweep.shape[:2], *images.shape[1:]), padding=padding)


def reconstruction_grid(images: Any, reconstructions: Any, *, padding: int = 1) -> np.ndarray:
  """Originals (top row) over their reconstructions (bottom row).

  Args:
      images: [n, H, W, C] inputs.
      reconstructions: [n, H, W, C] decoded images (uint8 or floats in [0, 1]).
      padding: pixels between cells.

  Returns:
      uint8 grid of 2 rows and n columns.
  """
  pair = np.stack([to_uint8(images), to_uint8(reconstructions)], axis=0)
  return image_grid(pair, padding=padding)


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> str:
  """Calls `write(file)` on a temporary file next to `path`, then renames it to `path`."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
  try:
    with os.fdopen(fd, "wb") as file:
      write(file)
    os.replace(tmp_path, path)
  except BaseException:
    os.unlink(tmp_path)
    raise
  return path


def save_png(path: str | os.PathLike, image: Any) -> str:
  """Writes an image [H, W, C] (C = 1 or 3; uint8 or floats in [0, 1]) to `path` atomically."""
  image = to_uint8(image)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)  # grey PNG without a colormap
  return _atomic_write(path, lambda f: matplotlib.image.imsave(f, image, format="png"))


def metric_series(
  history: Iterable[Mapping[str, Any]], *, x_key: str = "step"
) -> dict[str, tuple[list[float], list[float]]]:
  """Numeric series from a list of records, nested dicts flattened with "/".

  Args:
      history: records such as {"step": 1000, "dci": {"disentanglement": 0.4}}.
      x_key: key of the x coordinate; records without it are skipped.

  Returns:
      {"dci/disentanglement": ([1000, ...], [0.4, ...]), ...} in record order.
  """
  series: dict[str, tuple[list[float], list[float]]] = {}

  def add(x, prefix, record):
    for key, value in record.items():
      name = f"{prefix}{key}"
      if isinstance(value, Mapping):
        add(x, f"{name}/", value)
      elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        xs, ys = series.setdefault(name, ([], []))
        xs.append(float(x))
        ys.append(float(value))

  for record in history:
    if x_key in record:
      add(record[x_key], "", {k: v for k, v in record.items() if k != x_key})
  return series


def plot_metric_curves(
  history: Iterable[Mapping[str, Any]],
  path: str | os.PathLike,
  *,
  keys: Sequence[str] | None = None,
  x_key: str = "step",
) -> str:
  """Plots metric curves (one panel per metric) to a PNG file, atomically.

  Args:
      history: records as in `metric_series` (e.g. the evaluator's metrics.json entries).
      path: output PNG path.
      keys: flattened names to plot (all numeric ones by default).
      x_key: key of the x coordinate.

  Returns:
      `path`.
  """
  series = metric_series(history, x_key=x_key)
  names = list(series) if keys is None else [k for k in keys if k in series]
  cols = min(3, max(1, len(names)))
  rows = max(1, -(-len(names) // cols))
  figure = Figure(figsize=(4 * cols, 3 * rows), layout="constrained")
  axes = figure.subplots(rows, cols, squeeze=False).ravel()
  for ax, name in zip(axes, names, strict=False):
    ax.plot(*series[name], marker="o", markersize=3)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(x_key)
  for ax in axes[len(names) :]:
    ax.set_axis_off()
  return _atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))
