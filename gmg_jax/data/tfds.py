"""`data.source = "tfds"`: dSprites, Shapes3D and SmallNORB through tensorflow-datasets.

Reads with `tfds.data_source` (array_record random access), which needs neither TensorFlow nor
`tfds.load`; preparing the data the first time (TFDS encodes every image as PNG) needs
TensorFlow. All of it is the optional extra `pip install -e ".[tfds]"`; a missing module is
named with that command.

Where the data comes from, checked in this order before TFDS touches the network:
  1. a prepared TFDS directory (array_record) under `data_dir` (TFDS's default when "");
  2. `manual_dir` holding the original files under their TFDS names (`TfdsSource.manual_files`);
     TFDS checks them against its pinned checksums and prepares from them;
  3. TFDS downloads them, if the first original URL answers within a few seconds.
Otherwise a `DataFileError` says what was looked for and how to place it, at once instead of
after TFDS's network retries. Examples are decoded once, placed in the same grid order as the
file loaders and put on the device or host like them.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from gmg_jax.data.base import DataFileError, GroundTruthDataset, Spec, place
from gmg_jax.data.files import SPECS, resize_images, to_grid_order

_PROBE_TIMEOUT_S = 5.0
_DSPRITES_HDF5 = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
_NORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
_NORB_FILES = tuple(
  f"smallnorb-5x{ids}x9x18x6x2x96x96-{split}-{kind}.mat.gz"
  for ids, split in (("46789", "training"), ("01235", "testing"))
  for kind in ("dat", "cat", "info")
)


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """How a TFDS dataset maps onto our grid.

  Attributes:
    tfds_name: TFDS builder name.
    splits: splits concatenated in order.
    label_keys: feature keys of the `full_sizes` axes, in grid order.
    urls: the original files TFDS downloads (its checksums.tsv).
    manual_files: their names in a `manual_dir` (the checksums.tsv file names).
    binary: images are {0, 1} and get scaled to {0, 255}.
  """

  tfds_name: str
  splits: tuple[str, ...]
  label_keys: tuple[str, ...]
  urls: tuple[str, ...]
  manual_files: tuple[str, ...]
  binary: bool = False


SOURCES: dict[str, TfdsSource] = {
  "dsprites": TfdsSource(
    "dsprites",
    ("train",),
    ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position"),
    (f"https://github.com/deepmind/dsprites-dataset/blob/master/{_DSPRITES_HDF5}?raw=true",),
    (_DSPRITES_HDF5,),
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
    ("https://storage.googleapis.com/3d-shapes/3dshapes.h5",),
    ("3dshapes.h5",),
  ),
  # TFDS already halves the azimuth (0..17); `image` is camera 0 as in disentanglement_lib.
  "smallnorb": TfdsSource(
    "smallnorb",
    ("train", "test"),
    ("label_category", "instance", "label_elevation", "label_azimuth", "label_lighting"),
    tuple(_NORB_URL + f for f in _NORB_FILES),
    _NORB_FILES,
  ),
}


def _missing_module(error: BaseException) -> ModuleNotFoundError | None:
  """A ModuleNotFoundError naming the module and the install command, if `error` is one.

  TFDS imports lazily and re-raises with its own context, so the cause chain is searched.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, ModuleNotFoundError) and error.name:
      return ModuleNotFoundError(
        f"data.source='tfds' needs the Python module {error.name!r}, which is not installed. "
        'Install the tfds extra: pip install -e ".[tfds]" (in the gmg_jax checkout).',
        name=error.name,
      )
    error = error.__cause__ or error.__context__
  return None


def _unreachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
  """Why `url`'s server cannot be reached (None when it answers, with any HTTP status)."""
  try:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
      return None
  except urllib.error.HTTPError:
    return None
  except (OSError, ValueError) as e:
    return str(getattr(e, "reason", e))


def _where_from(
  tfds: Any, source: TfdsSource, data_dir: str | None, manual_dir: str | None, download: bool
) -> dict[str, Any]:
  """The `tfds.data_source` arguments that read prepared data, a manual_dir or the network.

  Raises:
    DataFileError: none of them is available; says what was looked for and how to place it.
  """
  try:
    builder = tfds.builder(source.tfds_name, data_dir=data_dir, file_format="array_record")
    prepared = builder.is_prepared()
  except Exception as e:  # TFDS raises many types
    raise _missing_module(e) or DataFileError(
      f"tfds.builder({source.tfds_name!r}, data_dir={data_dir!r}) failed: {e}"
    ) from e
  if prepared:
    return dict(download=False)
  if manual_dir:
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    missing = [f for f in source.manual_files if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing:
      raise DataFileError(
        f"tfds:{source.tfds_name}: data.manual_dir={manual_dir} lacks {missing}. Place the "
        f"original files there under these names (from {list(source.urls)}), or use "
        "data.source='files'."
      )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    return dict(download=True, download_and_prepare_kwargs={"download_config": config})
  reason = _unreachable(source.urls[0]) if download else "downloads disabled"
  if reason is None:
    return dict(download=True)
  raise DataFileError(
    f"tfds:{source.tfds_name}: no prepared TFDS data at {builder.data_dir}, no "
    f"data.manual_dir, and {source.urls[0]} cannot be reached ({reason}). Either:\n"
    f"  * pass --config.data.manual_dir=DIR where DIR holds {list(source.manual_files)} "
    f"(fetched from {list(source.urls)});\n"
    f"  * copy a directory prepared by TFDS (array_record) to {builder.data_dir} "
    "(data_dir: --config.data.data_dir, else $TFDS_DATA_DIR or ~/tensorflow_datasets);\n"
    "  * or read the original files without TFDS: --config.data.source=files "
    f"(python -m gmg_jax.data.download {source.tfds_name} fetches them)."
  )


def _read_split(
  tfds: Any, source: TfdsSource, split: str, data_dir: str | None, where: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
  """All examples of one split: images [n, h, w, c] uint8 and labels [n, K_full] int64."""
  try:
    ds = tfds.data_source(source.tfds_name, split=split, data_dir=data_dir, **where)
  except Exception as e:  # TFDS raises many types (missing files, bad checksums, ...)
    raise _missing_module(e) or DataFileError(
      f"tfds.data_source({source.tfds_name!r}, split={split!r}, data_dir={data_dir!r}) "
      f"failed: {e}\nPass data.manual_dir with the original files "
      f"{list(source.manual_files)}, or use data.source='files'."
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
    on_device: see `gmg_jax.data.base.place`.
    device_budget_gb: see `gmg_jax.data.base.place`.
    manual_dir: directory holding the original files under their TFDS names.
    download: let TFDS download and prepare the data when missing and the network answers.
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
    missing = _missing_module(e)
    if missing is None:
      raise
    raise missing from e
  source, spec = SOURCES[name], spec or SPECS[name]
  where = _where_from(tfds, source, data_dir or None, manual_dir, download)
  parts = [_read_split(tfds, source, split, data_dir or None, where) for split in source.splits]
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
