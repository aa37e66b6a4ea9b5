"""Tests of the image grids and the atomic PNG writers."""

from __future__ import annotations

import os

import matplotlib.image
import numpy as np
import pytest

from gmg_jax import viz


def decode(codes):
  """A 3x2 RGB image whose channel c is code[c] mapped from [-2, 2] to [0, 1]."""
  codes = np.asarray(codes)
  base = (codes[:, :3] + 2.0) / 4.0  # values in [-2, 2] -> [0, 1]
  return np.broadcast_to(base[:, None, None, :], (len(codes), 3, 2, 3)).copy()


def test_traversal_grid_cells_are_decoded_codes():
  codes = np.array([[0.1, -0.5, 1.0], [0.0, 0.3, -1.0]], dtype=np.float32)
  values = (-2.0, 0.0, 2.0, 1.0)
  grid = viz.latent_traversal_grid(decode, codes, values=values, dims=[0, 2], padding=1)
  rows, cols, height, width = 4, 4, 3, 2
  assert grid.dtype == np.uint8
  assert grid.shape == (rows * (height + 1) + 1, cols * (width + 1) + 1, 3)
  for r in range(rows):
    code, dim = codes[r // 2], [0, 2][r % 2]
    for c, value in enumerate(values):
      expected_code = code.copy()
      expected_code[dim] = value
      expected = viz.to_uint8(decode(expected_code[None]))[0]
      top, left = 1 + r * (height + 1), 1 + c * (width + 1)
      np.testing.assert_array_equal(grid[top : top + height, left : left + width], expected)
  assert np.all(grid[0] == 255) and np.all(grid[:, 0] == 255)  # border


def test_traversal_codes_layout():
  sweep = viz.traversal_codes(np.zeros((2, 3)), [5.0, 6.0])
  assert sweep.shape == (6, 2, 3)
  np.testing.assert_array_equal(sweep[4, 1], [0.0, 6.0, 0.0])  # code 1, dim 1, value 6


def test_reconstruction_grid_rows():
  images = np.arange(2 * 2 * 2 * 1, dtype=np.uint8).reshape(2, 2, 2, 1)
  recon = np.ones((2, 2, 2, 1)) * 0.5
  grid = viz.reconstruction_grid(images, recon, padding=0)
  assert grid.shape == (4, 4, 1)
  np.testing.assert_array_equal(grid[:2, 2:], images[1])
  assert np.all(grid[2:] == 128)


def test_to_uint8_clips_floats():
  np.testing.assert_array_equal(viz.to_uint8(np.array([-1.0, 0.0, 0.5, 2.0])), [0, 0, 128, 255])


def test_save_png_round_trip_is_atomic(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  path = viz.save_png(tmp_path / "sub" / "grid.png", image)
  read = matplotlib.image.imread(path)
  np.testing.assert_array_equal(np.round(read[..., :3] * 255).astype(np.uint8), image)
  assert os.listdir(tmp_path / "sub") == ["grid.png"]  # no temp file left behind


def test_failed_write_leaves_no_file(tmp_path):
  with pytest.raises(ValueError):
    viz.save_png(tmp_path / "bad.png", np.zeros((2, 2, 2)))  # 2 channels: not an image
  assert os.listdir(tmp_path) == []


def test_metric_series_and_curves(tmp_path):
  history = [
    {"step": 0, "dci": {"disentanglement": 0.1}, "mig": {"discrete_mig": 0.0}, "ok": True},
    {"step": 10, "dci": {"disentanglement": 0.4}},
    {"note": "no step"},
  ]
  series = viz.metric_series(history)
  assert series == {
    "dci/disentanglement": ([0.0, 10.0], [0.1, 0.4]),
    "mig/discrete_mig": ([0.0], [0.0]),
  }
  path = viz.plot_metric_curves(history, tmp_path / "curves.png")
  picture = matplotlib.image.imread(path)
  assert picture.shape[0] > 100 and picture.shape[1] > 300  # two panels side by side
  assert os.listdir(tmp_path) == ["curves.png"]


def column_decode(codes):
  """A 14x4 RGB image whose column j is code[j] mapped from [-2, 2] to [0, 1] (4 dims)."""
  codes = np.asarray(codes)
  base = (codes[:, :4] + 2.0) / 4.0
  return np.broadcast_to(base[:, None, :, None], (len(codes), 14, 4, 3)).copy()


def test_traversal_range_is_the_2nd_and_98th_percentile_of_the_codes():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(51, 3)) * np.array([1.0, 0.01, 5.0])
  low, high = viz.traversal_range(codes)
  ranked = np.sort(codes, axis=0)
  # With 51 points the 2nd / 98th percentiles fall exactly on ranks 1 and 49.
  np.testing.assert_allclose(low, ranked[1], rtol=1e-6)
  np.testing.assert_allclose(high, ranked[49], rtol=1e-6)
  values = viz.traversal_values(low, high, 5)
  assert values.shape == (3, 5)
  np.testing.assert_allclose(values[:, 0], low)
  np.testing.assert_allclose(values[:, -1], high)
  steps = np.diff(values, axis=1)
  np.testing.assert_allclose(steps, steps[:, :1].repeat(4, axis=1), rtol=1e-5)


def test_labelled_traversal_rows_follow_the_kl_order():
  code = np.array([0.5, -0.5, 0.0, 1.0], dtype=np.float32)
  values = viz.traversal_values([-1, -2, -0.5, 0], [1, 2, 0.5, 1.5], 3)
  kl = np.array([0.5, 0.001, 2.0, 0.3])
  picture, order = viz.labelled_traversal(column_decode, code, values, kl, padding=1)
  np.testing.assert_array_equal(order, [2, 0, 3, 1])
  height, width = 14, 4  # >= min_row_height: cells are not enlarged
  grid_width = 3 * (width + 1) + 1
  assert picture.shape == (4 * (height + 1) + 1, picture.shape[1], 3)
  left0 = picture.shape[1] - grid_width
  assert left0 > 40  # a label column
  for r, dim in enumerate(order):
    for s in range(3):
      expected_code = code.copy()
      expected_code[dim] = values[dim, s]
      expected = viz.to_uint8(column_decode(expected_code[None]))[0]
      top, left = 1 + r * (height + 1), left0 + 1 + s * (width + 1)
      np.testing.assert_array_equal(picture[top : top + height, left : left + width], expected)
  labels = picture[:, :left0]
  assert labels.min() < 128  # text was drawn


def test_traversal_labels_mark_collapsed_dims():
  assert viz.traversal_label(3, 0.004) == "z3 KL 0.004 collapsed"
  assert viz.traversal_label(0, 1.234) == "z0 KL 1.23"
  assert viz.traversal_label(1, 0.05, collapsed_kl=0.1).endswith("collapsed")
  np.testing.assert_array_equal(viz.kl_order([0.1, 0.3, 0.1, 0.2]), [1, 3, 0, 2])


def test_labelled_grid_enlarges_small_cells_pixel_exactly():
  cells = np.random.default_rng(1).integers(0, 256, (2, 3, 4, 5, 1), dtype=np.uint8)
  picture = viz.labelled_grid(cells, ["a", "b"], padding=0, min_row_height=12)
  assert picture.shape[0] == 2 * 12 and picture.shape[2] == 1
  left0 = picture.shape[1] - 3 * 15
  cell = picture[12:24, left0 + 15 : left0 + 30, 0]  # row 1, column 1, enlarged 3x
  np.testing.assert_array_equal(cell, np.kron(cells[1, 1, :, :, 0], np.ones((3, 3), np.uint8)))
  with pytest.raises(ValueError, match="labels"):
    viz.labelled_grid(cells, ["a"])


def test_traversal_gif_has_a_ping_pong_of_frames(tmp_path):
  from PIL import Image

  codes = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0]], dtype=np.float32)
  values = viz.traversal_values([-2, -2, -1, -1], [2, 2, 1, 1], 5)
  frames = viz.traversal_frames(column_decode, codes, values, [1, 0], padding=1)
  assert frames.shape == (8, 2 * 15 + 1, 2 * 5 + 1, 3)  # 2 * 5 - 2 frames, 2 codes x 2 dims
  np.testing.assert_array_equal(frames[1], frames[7])  # value 1 on the way back
  # Frame 4 is the last value: column 0 sweeps dim 1 of code 1 to values[1, 4].
  expected_code = codes[1].copy()
  expected_code[1] = values[1, 4]
  np.testing.assert_array_equal(
    frames[4][16:30, 1:5], viz.to_uint8(column_decode(expected_code[None]))[0]
  )
  path = viz.save_gif(tmp_path / "t.gif", frames, frame_ms=80)
  assert os.listdir(tmp_path) == ["t.gif"]
  with Image.open(path) as gif:
    assert gif.n_frames == 8
    assert gif.size == (frames.shape[2], frames.shape[1])
    assert gif.info["loop"] == 0
    for t in (0, 4):
      gif.seek(t)
      np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frames[t])


def test_matching_order_puts_a_permutation_plan_on_the_diagonal():
  rng = np.random.default_rng(2)
  n = 12
  perm = rng.permutation(n)
  plan = np.zeros((n, n))
  plan[np.arange(n), perm] = 1.0 / n
  order = viz.matching_order(plan)
  assert sorted(order) == list(range(n))
  np.testing.assert_array_equal(np.diag(plan[:, order]), np.full(n, 1.0 / n))
  # A blurred plan: still a permutation, each row's largest entry on the diagonal.
  blurred = 0.8 * plan + 0.2 / n**2 + 0.01 * rng.uniform(size=(n, n)) / n**2
  order = viz.matching_order(blurred)
  assert sorted(order) == list(range(n))
  np.testing.assert_array_equal(np.diag(blurred[:, order]), blurred.max(axis=1))


def test_plan_entropy_ratio_of_a_matching_and_of_the_product():
  n = 8
  assert viz.plan_entropy_ratio(np.eye(n) / n) == pytest.approx(1.0)
  assert viz.plan_entropy_ratio(np.full((n, n), 1.0 / n**2)) == pytest.approx(2.0)


def test_gw_plan_picture_uses_the_gmg_entropy_ratio():
  import jax
  import ml_collections

  from gmg_jax import gmg, losses

  x = jax.random.normal(jax.random.key(0), (16, 3))
  y = x[::-1] ** 3
  solver = {"init": "product", "max_iterations": 20}  # one start: half the compilation
  _, info = gmg.gromov_monge_gap(x, y, cost="cosine", epsilon_0=0.01, **solver)
  group = ml_collections.ConfigDict(dict(cost="cosine", epsilon_0=0.01, epsilon_stat="mean"))
  group.update(solver)
  name, plan, title = losses.regularizer_spec("gmg").picture(x, y, group)
  assert name == "gw_plan" and title == "GW plan, cosine, n=16, epsilon_0=0.01"
  assert viz.plan_entropy_ratio(plan) == pytest.approx(float(info.plan_entropy_ratio), abs=1e-4)
  assert viz.plan_entropy_ratio(plan) < 1.9  # a matching, not the product coupling
  picture = viz.gw_plan_picture(plan, title="test")
  assert picture.dtype == np.uint8 and picture.shape[2] == 3 and picture.shape[0] > 200
  # The picture shows the plan: a matching and the product coupling draw different pictures.
  n = plan.shape[0]
  identity = viz.gw_plan_picture(np.eye(n) / n, title="test").astype(float)
  product = viz.gw_plan_picture(np.full((n, n), 1.0 / n**2), title="test").astype(float)
  assert identity.shape == product.shape
  assert np.abs(identity - product).mean() > 5.0
