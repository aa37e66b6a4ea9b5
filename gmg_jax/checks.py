"""The whole config checked before a run touches its workdir: names, ranges, combinations.

`check_config(config)` collects every problem and raises one `ConfigError` listing them all,
each naming the field, the bad value and what to pass instead. The train step itself is checked
separately by the trainer (it traces the step on an abstract batch before any write).

`inert_settings(config)` lists the settings the run would never read: a field of an objective
or regularizer group that the chosen objective or regularizer does not take, set away from its
default or varied (`vary`). The command line refuses them; a library caller is warned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection
from typing import Any

import jax
import ml_collections

from gmg_jax import config as config_lib
from gmg_jax import data as data_lib
from gmg_jax import gmg, loss_terms, models, objectives, regularizers, replicas, sharding
from gmg_jax import metrics as metrics_lib
from gmg_jax.config import ConfigError
from gmg_jax.registry import unknown_message

__all__ = ["ConfigError", "check_config", "inert_settings", "problems"]


def _choices() -> dict[str, Collection[Any]]:
  """Field -> the values it may take (every registry the run looks a name up in)."""
  return {
    "data.name": data_lib.DATASETS,
    "data.source": ("files", "tfds"),
    "data.on_device": ("auto", "device", "host", True, False),
    "model.arch": models.ARCHITECTURES,
    "objective.name": objectives.OBJECTIVES,
    "objective.dip_type": loss_terms.DIP_TYPES,
    "objective.tcvae_estimator": ("auto", *objectives.TCVAE_ESTIMATORS),
    "objective.prior_matching": objectives.PRIOR_MATCHING,
    "regularizer.name": regularizers.NAMES,
    "regularizer.on": objectives.REGULARIZED_MAPS,
    "regularizer.target": objectives.DECODER_TARGETS,
    "regularizer.scope": sharding.SCOPES,
    "regularizer.gmg.cost": gmg.COSTS,
    "regularizer.dst.cost": gmg.COSTS,
    "regularizer.gmg.estimator": regularizers.ESTIMATORS,
    "regularizer.gmg.epsilon_stat": gmg.EPSILON_STATS,
    "regularizer.gmg.init": gmg.INITS,
    "regularizer.gmg.solver": gmg.SOLVERS,
    "eval.mode": metrics_lib.MODES,
  }


def _positive(v: Any) -> bool:
  return math.isfinite(v) and v > 0


def _non_negative(v: Any) -> bool:
  return math.isfinite(v) and v >= 0


def _at_least(n: int) -> Callable[[Any], bool]:
  return lambda v: v >= n


def _unit_interval(v: Any) -> bool:
  return 0 <= v < 1


# Field -> (test, what the value must be).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
  "seed": (_at_least(0), "an integer >= 0"),
  "data.image_size": (_at_least(1), "an integer >= 1"),
  "model.latent_dim": (_at_least(1), "an integer >= 1"),
  "model.disc_hidden": (_at_least(1), "an integer >= 1"),
  "model.disc_layers": (_at_least(1), "an integer >= 1"),
  "objective.beta": (_non_negative, "a finite number >= 0"),
  "objective.gamma": (_non_negative, "a finite number >= 0"),
  "objective.c_max": (_non_negative, "a finite number >= 0"),
  "objective.iteration_threshold": (_at_least(1), "an integer >= 1"),
  "objective.gamma_annealed": (_non_negative, "a finite number >= 0"),
  "objective.lambda_od": (_non_negative, "a finite number >= 0"),
  "objective.lambda_d_factor": (_non_negative, "a finite number >= 0"),
  "objective.hfs_weight": (_non_negative, "a finite number >= 0"),
  "objective.hfs_pairs": (_at_least(1), "an integer >= 1"),
  "objective.tcvae_alpha": (_non_negative, "a finite number >= 0"),
  "objective.tcvae_beta": (_non_negative, "a finite number >= 0"),
  "objective.tcvae_gamma": (_non_negative, "a finite number >= 0"),
  "objective.dataset_size": (
    lambda v: v == 0 or v >= 2,
    "0 (the dataset's number of images) or an integer >= 2",
  ),
  "regularizer.weight": (_non_negative, "a finite number >= 0"),
  "regularizer.gmg.epsilon_0": (_positive, "a finite number > 0"),
  "regularizer.gmg.max_iterations": (_at_least(1), "an integer >= 1"),
  "regularizer.gmg.sinkhorn_max_iterations": (_at_least(1), "an integer >= 1"),
  "regularizer.gmg.threshold": (_positive, "a finite number > 0"),
  "regularizer.gmg.sinkhorn_threshold": (_positive, "a finite number > 0"),
  "regularizer.gmg.inner_iterations": (_at_least(1), "an integer >= 1"),
  "regularizer.jacobian.num_projections": (_at_least(1), "an integer >= 1"),
  "optim.learning_rate": (_positive, "a finite number > 0 (e.g. 1e-4)"),
  "optim.b1": (_unit_interval, "in [0, 1)"),
  "optim.b2": (_unit_interval, "in [0, 1)"),
  "optim.eps": (_positive, "a finite number > 0"),
  "optim.grad_clip_norm": (_non_negative, "a finite number >= 0 (0 disables clipping)"),
  "optim.disc_learning_rate": (_positive, "a finite number > 0"),
  "optim.disc_b1": (_unit_interval, "in [0, 1)"),
  "optim.disc_b2": (_unit_interval, "in [0, 1)"),
  "train.batch_size": (_at_least(1), "an integer >= 1"),
  "train.num_steps": (_at_least(1), "an integer >= 1"),
  "train.log_every": (_at_least(1), "an integer >= 1"),
  "train.checkpoint_every": (_at_least(1), "an integer >= 1"),
  "train.max_checkpoints": (_at_least(1), "an integer >= 1"),
  "eval.every_steps": (_at_least(0), "an integer >= 0 (0 disables periodic evaluation)"),
  "eval.num_train": (_at_least(2), "an integer >= 2"),
  "eval.num_test": (_at_least(2), "an integer >= 2"),
}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of `config`, one line each; empty when the run can start."""
  found = []
  for field, choices in _choices().items():
    value = _get(config, field)
    if value not in choices:
      found.append(unknown_message(field, value, choices))
  for field, (ok, expected) in _RANGES.items():
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
  pairwise = config.regularizer.name in ("gmg", "dst") or config.objective.name in (
    "beta_tcvae",
    "factor_vae",
  )
  if pairwise and 1 <= batch_size < 2:
    found.append(f"train.batch_size={batch_size}: this objective/regularizer needs >= 2.")
  objective = objectives.OBJECTIVES.get(config.objective.name)
  if (
    objective is not None
    and not objective.uses_decoder
    and config.regularizer.name != "none"
    and config.regularizer.on == "decoder"
  ):
    found.append(
      f"regularizer.on='decoder' with objective.name={config.objective.name!r}: that model has "
      "no decoder; use --config.regularizer.on=encoder."
    )
  floor = gmg.min_normalized_epsilon()
  gmg_config = config.regularizer.gmg
  if gmg_config.epsilon_stat == "mean" and 0 < gmg_config.epsilon_0 < floor:
    found.append(
      f"regularizer.gmg.epsilon_0={gmg_config.epsilon_0!r}: below {floor:.3g}, the smallest "
      "epsilon the float32 solver uses (smaller values would all give the same run)."
    )
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


def _invalid(config: ml_collections.ConfigDict, field: str) -> bool:
  """Whether `field` fails its own check (then `problems` reports it, not `inert_settings`)."""
  value = _get(config, field)
  choices = _choices().get(field)
  ok, _ = _RANGES.get(field, (lambda v: True, ""))
  return (choices is not None and value not in choices) or not ok(value)


def _objective_readers(cfg: ml_collections.ConfigDict, key: str) -> str:
  """What would read objective field `key`: the other objectives, or beta-TCVAE's other form."""
  readers = [name for name, o in objectives.OBJECTIVES.items() if key in o.reads(cfg)]
  if readers:
    return f"pick an objective that reads it ({', '.join(readers)})"
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.tcvae_estimator = (
    "dlib" if objectives.tcvae_estimator(cfg) == "decomposed" else "decomposed"
  )
  if key in objectives.OBJECTIVES["beta_tcvae"].reads(other):
    return f"set objective.tcvae_estimator={other.tcvae_estimator!r}"
  return "pick an objective that reads it"


def _unread_fields(config: ml_collections.ConfigDict) -> dict[str, tuple[str, str]]:
  """{dotted field of the objective and regularizer groups that the run does not read: (why,
  what would make it read)}."""
  unread = {}
  cfg = config.objective
  objective = objectives.OBJECTIVES.get(cfg.name)
  if objective is not None:
    # The trainer fills in dataset_size for every objective (`train.with_dataset_facts`).
    reads = {"name", "hfs_weight", "dataset_size", *objective.reads(cfg)}
    if cfg.hfs_weight > 0:
      reads.add("hfs_pairs")
    form = f" in its {objectives.tcvae_estimator(cfg)!r} form" if cfg.name == "beta_tcvae" else ""
    for key in set(cfg.keys()) - reads:
      unread[f"objective.{key}"] = (
        ("objective.hfs_weight=0 (no HFS term)", "set objective.hfs_weight > 0")
        if key == "hfs_pairs"
        else (f"objective.name={cfg.name!r}{form} does not read it", _objective_readers(cfg, key))
      )
  reg = config.regularizer
  if reg.name not in regularizers.NAMES:
    return unread
  for key, value in reg.items():
    group = isinstance(value, ml_collections.ConfigDict)
    if key == "name" or (group and key == reg.name):
      continue
    if reg.name == "none":
      why = (
        "regularizer.name='none' trains no regularizer",
        "pick a regularizer (a gmg_*, dst_* or jacobian_* variant, e.g. :gmg_cos_decoder)",
      )
    elif group:
      why = (
        f"regularizer.name={reg.name!r} reads regularizer.{reg.name}.*",
        f"use regularizer.name={key!r}",
      )
    elif key == "target" and reg.on == "encoder":
      why = (
        "regularizer.on='encoder' and the target is the decoder's output space",
        "regularize the decoder (regularizer.on='decoder')",
      )
    else:
      continue
    unread.update(
      {f"regularizer.{key}.{sub}": why for sub in value.keys()}
      if group
      else {f"regularizer.{key}": why}
    )
  return unread


def inert_settings(config: ml_collections.ConfigDict) -> list[str]:
  """The settings of `config` that the run never reads, one line each (empty when none).

  A field of `config.objective` or `config.regularizer` that the chosen objective or
  regularizer does not read counts when it is varied (`vary`: its values would train identical
  replicas) or set away from its default: the base config's, with the objective's own variant
  applied (`beta_tcvae` sets beta 6, `factor_vae` gamma 30), so a variant's values never count
  on their own.
  """
  try:
    varied = replicas.parse_vary(config.vary)
  except ValueError:
    varied = {}  # `problems` reports it.
  name = config.objective.name
  reference = config_lib.get_config(name if name in config_lib.VARIANTS else None)
  found = []
  for field, (why, fix) in sorted(_unread_fields(config).items()):
    if _invalid(config, field):
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
