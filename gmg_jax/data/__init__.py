"""Ground-truth-factor datasets: procedural stand-ins and the real benchmarks.

`get_dataset(config.data)` is the entry point. `data_config` fields:
  name: a key of `DATASETS` ("dsprites_procedural", "shapes3d_procedural", "dsprites",
    "shapes3d", "mpi3d_toy", "mpi3d_realistic", "mpi3d_real", "smallnorb", "cars3d"), or
    "npz" / "hdf5" for a researcher's own file (see `gmg_jax.data.custom`).
  path: the file read by "npz" and "hdf5".
  source: "files" (default) or "tfds" (dsprites, shapes3d, smallnorb); ignored for procedural.
  data_dir: "" = `$GMG_DATA_DIR`, then ~/gmg_data.
  image_size: image side (any for procedural sets; 64 for the real ones, SmallNORB and Cars3D
    may be resized to other sizes).
  on_device (optional, default "auto"): see `gmg_jax.data.base.place`.
  device_budget_gb (optional): the "auto" budget; default half the accelerator memory.
  manual_dir (optional, tfds only): directory with already downloaded original files.

The returned dataset is jittable (`dataset.jittable`: a pytree to pass into `jax.jit`) or a
host dataset (numpy images from a memory map; draw batches outside the jitted step).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from gmg_jax import config as config_lib
from gmg_jax.data import custom, files, procedural
from gmg_jax.data.base import (
  ArrayDataset,
  DataFileError,
  GroundTruthDataset,
  HostArrayDataset,
)
from gmg_jax.data.custom import HostTableDataset, TableDataset
from gmg_jax.data.procedural import ProceduralDataset

__all__ = [
  "DATASETS",
  "ArrayDataset",
  "DataFileError",
  "GroundTruthDataset",
  "HostArrayDataset",
  "HostTableDataset",
  "ProceduralDataset",
  "TableDataset",
  "get_dataset",
]


def _tfds_loader(*args: Any, **kwargs: Any) -> GroundTruthDataset:
  # Imported lazily: tensorflow-datasets is an optional extra.
  from gmg_jax.data import tfds as tfds_source

  return tfds_source.load_tfds(*args, **kwargs)


_SOURCES: dict[str, Callable[..., GroundTruthDataset]] = {
  "files": files.load_files,
  "tfds": _tfds_loader,
}


def _real(name: str, data_config: Any) -> GroundTruthDataset:
  source = data_config.source or "files"
  if source not in _SOURCES:
    raise ValueError(f"data.source must be one of {sorted(_SOURCES)}, got {source!r}.")
  kwargs = dict(
    data_dir=data_config.data_dir or "",
    image_size=int(data_config.image_size),
    on_device=data_config.on_device,
    device_budget_gb=data_config.device_budget_gb,
  )
  if source == "tfds":
    kwargs["manual_dir"] = data_config.manual_dir or None
  return _SOURCES[source](name, **kwargs)


def _procedural(make: Callable[[int], ProceduralDataset], data_config: Any) -> ProceduralDataset:
  return make(int(data_config.image_size))


def _table(fmt: str, data_config: Any) -> GroundTruthDataset:
  return custom.load_table(
    data_config.path or "",
    fmt,
    on_device=data_config.on_device,
    device_budget_gb=data_config.device_budget_gb,
  )


DATASETS: dict[str, Callable[[Any], GroundTruthDataset]] = {
  "dsprites_procedural": functools.partial(_procedural, procedural.dsprites_procedural),
  "shapes3d_procedural": functools.partial(_procedural, procedural.shapes3d_procedural),
  **{name: functools.partial(_real, name) for name in files.SPECS},
  **{fmt: functools.partial(_table, fmt) for fmt in custom.FORMATS},
}


def get_dataset(data_config: Any) -> GroundTruthDataset:
  """Builds the dataset named by `data_config.name`.

  Args:
    data_config: `config.data` (an ml_collections ConfigDict or any attribute object).

  Returns:
    A `GroundTruthDataset` (jittable or host, see `dataset.jittable`).

  Raises:
    ValueError: unknown name or source.
    DataFileError: missing or corrupt files (the message names the file, every searched
      directory and the download command).
  """
  name = data_config.name
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {sorted(DATASETS)}.")
  return DATASETS[name](_complete(data_config))


def _complete(data_config: Any) -> types.SimpleNamespace:
  """`data_config`'s fields over the base config's `data` group (the one place defaults live),
  so a partial config object (a library caller's, a test's) gets the same defaults as a run."""
  fields = config_lib.get_config().data.to_dict()
  given = data_config.to_dict() if hasattr(data_config, "to_dict") else vars(data_config)
  fields.update(given)
  return types.SimpleNamespace(**fields)
