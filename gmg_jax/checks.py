"""The whole config checked before a run touches its workdir: names, ranges, combinations.

`check_config(config)` collects every problem and raises one `ConfigError` listing them all,
each naming the field, the bad value and what to pass instead. The train step itself is checked
separately by the trainer (it traces the step on an abstract batch before any write).

`inert_settings(config)` lists the settings the run would never read: a field of an objective
or regularizer group that the chosen objective or regularizer does not take, set away from its
default or varied (`vary`). The command line refuses them; a library caller is warned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

import jax
import ml_collections

from gmg_jax import config as config_lib
from gmg_jax import data as data_lib
from gmg_jax import metrics as metrics_lib
from gmg_jax import models, replicas
from gmg_jax.config import ConfigError
from gmg_jax.losses import fields, maps
from gmg_jax.losses.registry import at_least, non_negative, positive
from gmg_jax.registry import unknown_message

__all__ = ["ConfigError", "check_config", "inert_settings", "problems"]


def _choices(config: ml_collections.ConfigDict) -> dict[str, Collection[Any]]:
  """Field -> the values it may take (every registry the run looks a name up in)."""
  return {
    **fields.choices(config),
    "data.name": data_lib.DATASETS,
    "data.source": ("files", "tfds"),
    "data.on_device": ("auto", "device", "host", True, False),
    "model.arch": models.ARCHITECTURES,
    "regularizer.on": maps.REGULARIZED_MAPS,
    "regularizer.target": maps.DECODER_TARGETS,
    "regularizer.scope": maps.SCOPES,
    "eval.mode": metrics_lib.MODES,
  }


def _unit_interval(v: Any) -> bool:
  return 0 <= v < 1


# Field -> (test, what the value must be); the loss fields' are the specs' (`fields.ranges`).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
  "seed": (at_least(0), "an integer >= 0"),
  "data.image_size": (at_least(1), "an integer >= 1"),
  "model.latent_dim": (at_least(1), "an integer >= 1"),
  "model.disc_hidden": (at_least(1), "an integer >= 1"),
  "model.disc_layers": (at_least(1), "an integer >= 1"),
  "optim.learning_rate": (positive, "a finite number > 0 (e.g. 1e-4)"),
  "optim.b1": (_unit_interval, "in [0, 1)"),
  "optim.b2": (_unit_interval, "in [0, 1)"),
  "optim.eps": (positive, "a finite number > 0"),
  "optim.grad_clip_norm": (non_negative, "a finite number >= 0 (0 disables clipping)"),
  "optim.disc_learning_rate": (positive, "a finite number > 0"),
  "optim.disc_b1": (_unit_interval, "in [0, 1)"),
  "optim.disc_b2": (_unit_interval, "in [0, 1)"),
  "train.batch_size": (at_least(1), "an integer >= 1"),
  "train.num_steps": (at_least(1), "an integer >= 1"),
  "train.log_every": (at_least(1), "an integer >= 1"),
  "train.checkpoint_every": (at_least(1), "an integer >= 1"),
  "train.max_checkpoints": (at_least(1), "an integer >= 1"),
  "eval.every_steps": (at_least(0), "an integer >= 0 (0 disables periodic evaluation)"),
  "eval.num_train": (at_least(2), "an integer >= 2"),
  "eval.num_test": (at_least(2), "an integer >= 2"),
}


def _ranges(config: ml_collections.ConfigDict) -> dict[str, tuple[Callable[[Any], bool], str]]:
  return {**_RANGES, **fields.ranges(config)}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of `config`, one line each; empty when the run can start."""
  found = []
  for field, choices in _choices(config).items():
    value = _get(config, field)
    if value not in choices:
      found.append(unknown_message(field, value, choices))
  for field, (ok, expected) in _ranges(config).items():
    value = _get(config, field)
    if not ok(value):
      found.append(f"{field}={value!r}: must be {expected}.")
  stored = config_lib.STORED_IMAGE_SIZE.get(config.data.name)
  if stored is not None and config.data.image_size != stored:
    found.append(
      f"data.image_size={config.data.image_size!r}: {config.data.name} is stored at "
      f"{stored}x{stored}; use --config.data.image_size={stored}."
    )
  hidden = config.model.mlp_hidden
  if isinstance(hidden, str) or not all(isinstance(w, int) and w >= 1 for w in hidden):
    found.append(
      f"model.mlp_hidden={hidden!r}: must be a tuple of widths >= 1 (e.g. "
      "--config.model.mlp_hidden='(128, 64)')."
    )
  batch_size, devices = config.train.batch_size, jax.device_count()
  if batch_size >= 1 and batch_size % devices:
    found.append(
      f"train.batch_size={batch_size} is not divisible by the device count {devices}; use a "
      f"multiple of {devices}."
    )
  found += fields.problems(config)
  bad_steps = [s for s in config.eval.at_steps if not (isinstance(s, int) and s >= 1)]
  if bad_steps:
    found.append(
      f"eval.at_steps={tuple(config.eval.at_steps)!r}: steps must be integers >= 1 (e.g. "
      "--config.eval.at_steps='(1000, 2000)')."
    )
  if config.train.init_from and not os.path.isdir(config.train.init_from):
    found.append(f"train.init_from={config.train.init_from!r}: no such directory.")
  if config.eval.mode in metrics_lib.MODES:
    try:
      metrics_lib.check_names(config.eval.metrics, config.eval.mode)
    except ValueError as e:
      found.append(f"eval.metrics: {e}")
  return found


def _invalid(
  config: ml_collections.ConfigDict,
  field: str,
  choices: dict[str, Collection[Any]],
  ranges: dict[str, tuple[Callable[[Any], bool], str]],
) -> bool:
  """Whether `field` fails its own check, given `_choices(config)` and `_ranges(config)` (then
  `problems` reports it, not `inert_settings`)."""
  value = _get(config, field)
  allowed = choices.get(field)
  ok, _ = ranges.get(field, (lambda v: True, ""))
  return (allowed is not None and value not in allowed) or not ok(value)


def inert_settings(config: ml_collections.ConfigDict) -> list[str]:
  """The settings of `config` that the run never reads, one line each (empty when none).

  A field of `config.objective` or `config.regularizer` that the chosen objective or
  regularizer does not read counts when it is varied (`vary`: its values would train identical
  replicas) or set away from its default: the base config's, with the objective's own variant
  applied (an objective variant may set its own fields), so a variant's values never count
  on their own.
  """
  try:
    varied = replicas.parse_vary(config.vary)
  except ValueError:
    varied = {}  # `problems` reports it.
  name = config.objective.name
  reference = config_lib.get_config(name if name in config_lib.VARIANTS else None)
  choices, ranges = _choices(config), _ranges(config)
  found = []
  for field, (why, fix) in sorted(fields.unread_fields(config).items()):
    if _invalid(config, field, choices, ranges):
      continue
    if field in varied:
      found.append(
        f"vary: {field} has no effect ({why}): its {len(varied[field])} values would train "
        f"identical replicas; drop it from vary or {fix}."
      )
    elif _get(config, field) != _get(reference, field):
      found.append(f"{field}={_get(config, field)!r} has no effect: {why}; drop it or {fix}.")
  return found


def _replica_problems(config: ml_collections.ConfigDict, shared: list[str]) -> list[str]:
  """Problems of `num_seeds`/`vary`, then of each replica's own config (its varied values)."""
  try:
    runs = replicas.expand(config)
  except ValueError as e:
    return [str(e)]
  found = []
  for replica in runs if len(runs) > 1 else ():
    # The program's own problems (`shared`) are reported once, not per replica.
    found += [f"replica {replica.name}: {p}" for p in problems(replica.config) if p not in shared]
  return found


def check_config(config: ml_collections.ConfigDict, *, refuse_inert: bool = False) -> list[str]:
  """Raises a `ConfigError` listing every problem of `config` (see `problems`), and of each of
  its replicas (`gmg_jax.replicas`).

  Args:
    config: the run's config.
    refuse_inert: count the settings the run never reads (`inert_settings`) as problems.

  Returns:
    The inert settings, when they are not refused (the caller warns).
  """
  found = problems(config)
  found += _replica_problems(config, found)
  inert = inert_settings(config)
  if refuse_inert:
    found += inert
  if found:
    lines = "\n".join(f"  - {p}" for p in found)
    raise ConfigError(
      f"The config has {len(found)} problem(s); nothing was written:\n{lines}\n"
      "Fields and their meaning: gmg_jax/config.py."
    )
  return inert
