"""Latent traversals, reconstructions, GW plans and metric curves as PNG and GIF files.

Grids are built as uint8 arrays [H, W, C] first (so tests can check every pixel), then
written with `save_png` / `save_gif`. Every file is written to a temporary file in the target
directory and moved into place with `os.replace`, so a reader (or a preempted trainer) never
sees a half-written picture.

Traversals sweep each latent dim over the range the encoder actually uses: per dim, the
`TRAVERSAL_PERCENTILES` (2nd and 98th) of the encoder means over the evaluation images
(`traversal_range`), not a fixed [-2, 2]. Percentiles rather than mean +- 2 std: a dim whose
means are bimodal or heavy-tailed is swept over where its codes lie. Rows are sorted by the
dim's KL to the prior (descending), and a dim with KL below `COLLAPSED_KL` nats is labelled
"collapsed": the posterior equals the prior there, so the dim carries (almost) no information.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import matplotlib.image
import numpy as np
import scipy.optimize
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from gmg_jax.atomic import atomic_write

DecodeFn = Callable[[np.ndarray], Any]

# Batch-mean KL(q(z_d|x) || N(0, 1)) below which a dim is labelled collapsed (nats). The KL
# bounds the dim's mutual information with the image: below 0.01 nats it is < 0.015 bits.
COLLAPSED_KL = 0.01
# Percentiles of the encoder means that bound each dim's traversal.
TRAVERSAL_PERCENTILES = (2.0, 98.0)


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


def traversal_range(
  codes: Any, percentiles: tuple[float, float] = TRAVERSAL_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
  """Per-dim traversal bounds from the aggregate posterior.

  Args:
      codes: [n, D] encoder means of the evaluation images.
      percentiles: (low, high) percentiles of each dim's codes.

  Returns:
      (low [D], high [D]) float32.
  """
  low, high = np.percentile(np.asarray(codes, dtype=np.float64), percentiles, axis=0)
  return low.astype(np.float32), high.astype(np.float32)


def traversal_values(low: Any, high: Any, num_values: int) -> np.ndarray:
  """[D, num_values] evenly spaced values from `low[d]` to `high[d]` (both included)."""
  low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
  return np.linspace(low, high, num_values, axis=1, dtype=np.float32)


def kl_order(kl_per_dim: Any) -> np.ndarray:
  """Dims sorted by KL, largest first (ties keep index order)."""
  return np.argsort(-np.asarray(kl_per_dim, dtype=np.float64), kind="stable")


def traversal_label(dim: int, kl: float, collapsed_kl: float = COLLAPSED_KL) -> str:
  """Row label of a traversal: latent index and KL, "collapsed" below `collapsed_kl` nats."""
  return f"z{dim} KL {kl:.3g}" + (" collapsed" if kl < collapsed_kl else "")


def traversal_cells(
  decode_fn: DecodeFn, codes: Any, values: Any, dims: Sequence[int]
) -> np.ndarray:
  """Decoded traversal images: each base code with one dim set to each of its values.

  Args:
      decode_fn: codes [m, D] -> images [m, H, W, C] (uint8, or floats in [0, 1]).
      codes: [n, D] base codes.
      values: [D, S] values of each dim (`traversal_values`), left to right.
      dims: the dims to sweep, in output order.

  Returns:
      uint8 [n, len(dims), S, H, W, C]; cell [i, j, s] decodes code i with dim dims[j] set to
      values[dims[j], s].
  """
  codes = np.asarray(codes, dtype=np.float32)
  values = np.asarray(values, dtype=np.float32)
  dims = list(dims)
  sweep = np.repeat(codes[:, None, None, :], len(dims), axis=1)
  sweep = np.repeat(sweep, values.shape[1], axis=2)  # [n, len(dims), S, D]
  for j, dim in enumerate(dims):
    sweep[:, j, :, dim] = values[dim]
  images = to_uint8(decode_fn(sweep.reshape(-1, codes.shape[1])))
  return images.reshape(*sweep.shape[:3], *images.shape[1:])


def labelled_grid(
  cells: Any, labels: Sequence[str], *, padding: int = 1, min_row_height: int = 14
) -> np.ndarray:
  """A grid of images with a text label left of each row.

  Cells smaller than `min_row_height` are enlarged by an integer factor (nearest neighbour) so
  that a label fits its row; the cells are otherwise copied pixel for pixel.

  Args:
      cells: [rows, cols, H, W, C] images (uint8 or floats in [0, 1]).
      labels: one string per row.
      padding: pixels between cells.
      min_row_height: smallest cell height after enlarging.

  Returns:
      uint8 [rows * (k H + padding) + padding, label_width + cols * (k W + padding) + padding,
      C] with k = ceil(min_row_height / H); the grid of `image_grid` (on the enlarged cells)
      starts at column `label_width`, white label column on the left.
  """
  cells = to_uint8(cells)
  if len(labels) != cells.shape[0]:
    raise ValueError(f"{cells.shape[0]} rows but {len(labels)} labels.")
  scale = max(1, -(-min_row_height // cells.shape[2]))
  cells = np.repeat(np.repeat(cells, scale, axis=2), scale, axis=3)
  grid = image_grid(cells, padding=padding)
  font = ImageFont.load_default()
  label_width = 4 + max(int(np.ceil(font.getlength(label))) for label in labels)
  canvas = Image.new("RGB", (label_width + grid.shape[1], grid.shape[0]), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  row_height = cells.shape[2] + padding
  for r, label in enumerate(labels):
    middle = padding + r * row_height + cells.shape[2] // 2
    # Centred by the text's own box: text anchors need FreeType, the bitmap fallback has none.
    box = font.getbbox(label)
    draw.text((2, middle - (box[1] + box[3]) // 2), label, fill=(0, 0, 0), font=font)
  picture = np.asarray(canvas)
  if grid.shape[-1] == 1:
    picture = picture[..., :1]
  picture = picture.copy()
  picture[:, label_width:] = grid
  return picture


def labelled_traversal(
  decode_fn: DecodeFn,
  code: Any,
  values: Any,
  kl_per_dim: Any,
  *,
  collapsed_kl: float = COLLAPSED_KL,
  padding: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
  """Traversal of one code: a row per dim, sorted by KL (largest first) and labelled.

  Args:
      decode_fn: codes [m, D] -> images [m, H, W, C].
      code: [D] base code (e.g. the encoder mean of one image).
      values: [D, S] values of each dim (`traversal_values` of `traversal_range`).
      kl_per_dim: [D] batch-mean KL(q(z_d|x) || N(0, 1)) of each dim (nats).
      collapsed_kl: KL below which a row is labelled collapsed.
      padding: pixels between cells.

  Returns:
      (picture, order): the labelled grid (`labelled_grid`) and the dims in row order.
  """
  kl_per_dim = np.asarray(kl_per_dim, dtype=np.float64)
  order = kl_order(kl_per_dim)
  cells = traversal_cells(decode_fn, np.asarray(code)[None], values, order)[0]
  labels = [traversal_label(int(d), float(kl_per_dim[d]), collapsed_kl) for d in order]
  return labelled_grid(cells, labels, padding=padding), order


def traversal_frames(
  decode_fn: DecodeFn, codes: Any, values: Any, dims: Sequence[int], *, padding: int = 1
) -> np.ndarray:
  """Frames of an animated traversal: frame t shows every dim at its t-th value, ping-pong.

  Args:
      decode_fn: codes [m, D] -> images [m, H, W, C].
      codes: [n, D] base codes (one grid row each).
      values: [D, S] values of each dim, S >= 2.
      dims: dims to show, one grid column each (e.g. `kl_order(kl)`).
      padding: pixels between cells.

  Returns:
      uint8 [2 S - 2, n (H + padding) + padding, len(dims) (W + padding) + padding, C]: values
      0..S-1 then back S-2..1, so that the loop has no jump.
  """
  cells = traversal_cells(decode_fn, codes, values, dims)  # [n, dims, S, H, W, C]
  num_values = cells.shape[2]
  steps = [*range(num_values), *range(num_values - 2, 0, -1)]
  return np.stack([image_grid(cells[:, :, s], padding=padding) for s in steps])


def matching_order(plan: Any) -> np.ndarray:
  """Column order that puts a plan's matching on the diagonal.

  The permutation maximizing the mass on the diagonal (Hungarian algorithm on the plan), so
  row i is drawn next to the column it sends the most mass to, without repeating a column:
  a permutation plan becomes diagonal, a blurred plan a band around the diagonal.

  Args:
      plan: [n, n] coupling.

  Returns:
      [n] column indices; `plan[:, order]` is the reordered plan.
  """
  plan = np.asarray(plan, dtype=np.float64)
  rows, cols = scipy.optimize.linear_sum_assignment(plan, maximize=True)
  order = np.empty(plan.shape[0], dtype=np.int64)
  order[rows] = cols
  return order


def plan_entropy_ratio(plan: Any) -> float:
  """H(P) / log n of an [n, n] coupling: 1 for a one-to-one matching, 2 for the product one."""
  plan = np.asarray(plan, dtype=np.float64)
  positive = plan[plan > 0]
  return float(-np.sum(positive * np.log(positive)) / np.log(plan.shape[0]))


def figure_to_array(figure: Figure) -> np.ndarray:
  """Renders a matplotlib figure to uint8 RGB [H, W, 3]."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def gw_plan_picture(
  plan: Any, *, entropy_ratio: float | None = None, title: str = "GW plan"
) -> np.ndarray:
  """The GW plan as a heat map, columns in `matching_order`, entropy ratio in the title.

  Entries are drawn as n * P_ij: a row of a one-to-one matching holds one 1, the product
  coupling is 1/n everywhere.

  Args:
      plan: [n, n] coupling (rows: the batch, columns: its image).
      entropy_ratio: H(P) / log n for the title (default: `plan_entropy_ratio(plan)`).
      title: title before the entropy ratio.

  Returns:
      uint8 RGB picture [H, W, 3].
  """
  plan = np.asarray(plan, dtype=np.float64)
  n = plan.shape[0]
  ratio = plan_entropy_ratio(plan) if entropy_ratio is None else float(entropy_ratio)
  order = matching_order(plan)
  figure = Figure(figsize=(4.6, 4.0), layout="constrained")
  ax = figure.subplots()
  shown = ax.imshow(n * plan[:, order], cmap="viridis", vmin=0.0, interpolation="nearest")
  figure.colorbar(shown, ax=ax, label="n x plan")
  on_diagonal = float(np.trace(plan[:, order]))  # mass of the matching, 1 for a permutation
  ax.set_title(
    f"{title}\nH(P) / log n = {ratio:.2f} (1 matching, 2 product), matched mass {on_diagonal:.2f}",
    fontsize=8,
  )
  ax.set_xlabel("image point (matching order)")
  ax.set_ylabel("batch point")
  return figure_to_array(figure)


def save_png(path: str | os.PathLike, image: Any) -> str:
  """Writes an image [H, W, C] (C = 1 or 3; uint8 or floats in [0, 1]) to `path` atomically."""
  image = to_uint8(image)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)  # grey PNG without a colormap
  return atomic_write(path, lambda f: matplotlib.image.imsave(f, image, format="png"), text=False)


def read_png(path: str | os.PathLike) -> np.ndarray:
  """The uint8 [H, W, 3] image of a PNG written by `save_png`."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def save_gif(path: str | os.PathLike, frames: Any, *, frame_ms: int = 150) -> str:
  """Writes frames [T, H, W, C] (C = 1 or 3) as a looping animated GIF to `path` atomically.

  Pillow merges consecutive identical frames (their durations add up), so a traversal of a
  decoder that ignores every dim has fewer frames.
  """
  frames = to_uint8(frames)
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  images = [Image.fromarray(frame) for frame in frames]
  return atomic_write(
    path,
    lambda f: images[0].save(
      f, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0
    ),
    text=False,
  )


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
  return atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100), text=False)
