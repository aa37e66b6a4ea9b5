"""The whole config checked before a run touches its workdir: names, ranges, combinations.

`check_config(config)` collects every problem and raises one `ConfigError` listing them all,
each naming the field, the bad value and what to pass instead. The train step itself is checked
separately by the trainer (it traces the step on an abstract batch before any write).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection
from typing import Any

import jax
import ml_collections

from gmg_jax import data as data_lib
from gmg_jax import gmg, loss_terms, models, objectives, regularizers, replicas, sharding
from gmg_jax import metrics as metrics_lib
from gmg_jax.config import ConfigError
from gmg_jax.registry import unknown_message

__all__ = ["ConfigError", "check_config", "problems"]


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
  if any(w < 1 for w in config.model.mlp_hidden):
    found.append(f"model.mlp_hidden={tuple(config.model.mlp_hidden)}: widths must be >= 1.")
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


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a `ConfigError` listing every problem of `config` (see `problems`), and of each of
  its replicas (`gmg_jax.replicas`)."""
  found = problems(config)
  found += _replica_problems(config, found)
  if found:
    lines = "\n".join(f"  - {p}" for p in found)
    raise ConfigError(
      f"The config has {len(found)} problem(s); nothing was written:\n{lines}\n"
      "Fields and their meaning: gmg_jax/config.py."
    )
