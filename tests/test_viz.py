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
