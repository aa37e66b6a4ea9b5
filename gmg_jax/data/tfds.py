"""`data.source = "tfds"`: dSprites, Shapes3D and SmallNORB through tensorflow-datasets.

Reads with `tfds.data_source` (array_record random access), which needs neither TensorFlow nor
`tfds.load`; tensorflow-datasets and array-record are the optional extra `gmg_jax[tfds]`.
TFDS prepares the data on first use (downloading into `data_dir`); files already on disk are
picked up through `DownloadConfig(manual_dir=...)`. Examples are decoded once, placed in the
same grid order as the file loaders and put on the device or host like them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gmg_jax.data.base import DataFileError, GroundTruthDataset
from gmg_jax.data.files import SPECS, Spec, place, resize_images, to_grid_order


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """How a TFDS dataset maps onto our grid.

  Attributes:
    tfds_name: TFDS builder name.
    splits: splits concatenated in order.
    label_keys: feature keys of the `full_sizes` axes, in grid order.
    binary: images are {0, 1} and get scaled to {0, 255}.
  """

  tfds_name: str
  splits: tuple[str, ...]
  label_keys: tuple[str, ...]
  binary: bool = False


SOURCES: dict[str, TfdsSource] = {
  "dsprites": TfdsSource(
    "dsprites",
    ("train",),
    ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position"),
    binary=True,
  ),
  "shapes3d": TfdsSource(
    "shapes3d",
    ("train",),
    (
      "label_floor_hue",
      "label_wall_hue",
      "label_object_hue",
      "label_scale",
      "label_shape",
      "label_orientation",
    ),
  ),
  # TFDS already halves the azimuth (0..17); `image` is camera 0 as in disentanglement_lib.
  "smallnorb": TfdsSource(
    "smallnorb",
    ("train", "test"),
    ("label_category", "instance", "label_elevation", "label_azimuth", "label_lighting"),
  ),
}


def _read_split(
  tfds: Any,
  source: TfdsSource,
  split: str,
  data_dir: str | None,
  manual_dir: str | None,
  download: bool,
) -> tuple[np.ndarray, np.ndarray]:
  """All examples of one split: images [n, h, w, c] uint8 and labels [n, K_full] int64."""
  kwargs = {}
  if manual_dir:
    kwargs["download_and_prepare_kwargs"] = {
      "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
    }
  try:
    ds = tfds.data_source(
      source.tfds_name, split=split, data_dir=data_dir, download=download, **kwargs
    )
  except Exception as e:  # TFDS raises many types (missing files, no network, not prepared)
    raise DataFileError(
      f"tfds.data_source({source.tfds_name!r}, split={split!r}, data_dir={data_dir!r}) "
      f"failed: {e}\nPrepare it with network access, pass data.manual_dir with the "
      f"original files, or use data.source='files'."
    ) from e
  n = len(ds)
  if n == 0:
    raise DataFileError(f"tfds:{source.tfds_name}/{split} is empty.")
  # Item by item: the mocked `__getitems__` of tfds.testing is broken, and each read is a
  # cheap array_record lookup.
  first = ds[0]
  images = np.empty((n,) + np.shape(first["image"]), dtype=np.uint8)
  labels = np.empty((n, len(source.label_keys)), dtype=np.int64)
  for i in range(n):
    example = first if i == 0 else ds[i]
    images[i] = example["image"]
    labels[i] = [int(example[k]) for k in source.label_keys]
  return images, labels


def load_tfds(
  name: str,
  data_dir: str = "",
  image_size: int = 64,
  on_device: Any = "auto",
  device_budget_gb: float | None = None,
  manual_dir: str | None = None,
  download: bool = True,
  spec: Spec | None = None,
) -> GroundTruthDataset:
  """Loads dSprites, Shapes3D or SmallNORB through `tfds.data_source`.

  Args:
    name: "dsprites", "shapes3d" or "smallnorb".
    data_dir: TFDS data directory ("" = TFDS's default).
    image_size: image side (SmallNORB is resized from 96; the others must be 64).
    on_device: see `gmg_jax.data.files.place`.
    device_budget_gb: see `gmg_jax.data.files.place`.
    manual_dir: directory holding already downloaded original files.
    download: let TFDS download and prepare the data when missing.
    spec: override of the grid (tests).

  Returns:
    The dataset, identical in layout to the file loaders'.
  """
  if name not in SOURCES:
    raise ValueError(
      f"data.source='tfds' supports {sorted(SOURCES)}, not {name!r}; use data.source='files'."
    )
  if image_size != 64 and name != "smallnorb":
    raise ValueError(f"{name} is stored at 64x64; got data.image_size={image_size}.")
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError("data.source='tfds' needs `pip install 'gmg_jax[tfds]'`.") from e
  source, spec = SOURCES[name], spec or SPECS[name]
  parts = [
    _read_split(tfds, source, split, data_dir or None, manual_dir, download)
    for split in source.splits
  ]
  images = np.concatenate([resize_images(p[0], image_size) for p in parts])
  labels = np.concatenate([p[1] for p in parts])
  where = f"tfds:{source.tfds_name}/{'+'.join(source.splits)}"
  if labels.shape[0] != spec.num_images:
    raise DataFileError(
      f"{where}: expected {spec.num_images} examples (the full grid "
      f"{spec.full_sizes}), got {labels.shape[0]}."
    )
  images = to_grid_order(images, labels, spec, where)
  if source.binary:
    if int(images.max(initial=0)) > 1:
      raise DataFileError(f"{where}: expected binary images with values in {{0, 1}}.")
    images *= np.uint8(255)
  return place(images, spec, on_device, device_budget_gb)
