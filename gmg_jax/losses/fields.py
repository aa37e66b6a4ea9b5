"""The loss fields of a config (`config.objective`, `config.regularizer`) as the registered specs
define them: the values they may take, their ranges, what a run does not read.

`gmg_jax.checks` asks these functions and so never names an objective or a regularizer. No JAX.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

import ml_collections

from gmg_jax.losses import registry
from gmg_jax.losses.registry import AT_LEAST_1, NON_NEGATIVE, Range

# Fields of the objective group every objective reads: the HFS term, and the training-set size
# the trainer fills in (`train.with_dataset_facts`).
_COMMON_OBJECTIVE_FIELDS = ("name", "hfs_weight", "dataset_size")


def _groups(config: ml_collections.ConfigDict) -> list[tuple[str, Any, Any]]:
  """(prefix, group, spec) of every registered hyperparameter group `config` has."""
  found = []
  for name, spec in registry.regularizer_specs().items():
    if name in config.regularizer:
      found.append((f"regularizer.{name}", config.regularizer[name], spec))
  for name, spec in registry.objective_specs().items():
    if spec.defaults and name in config.objective:
      found.append((f"objective.{name}", config.objective[name], spec))
  return found


def _declared(config: ml_collections.ConfigDict, attribute: str) -> dict[str, Any]:
  """{dotted field: entry} of every spec's `attribute` ("choices" or "ranges"): the objectives'
  (keyed below config.objective) and those of the regularizer groups `config` has."""
  found = {}
  for spec in registry.objective_specs().values():
    found.update({f"objective.{k}": v for k, v in getattr(spec, attribute).items()})
  for prefix, _, spec in _groups(config):
    if prefix.startswith("regularizer."):
      found.update({f"{prefix}.{k}": v for k, v in getattr(spec, attribute).items()})
  return found


def choices(config: ml_collections.ConfigDict) -> dict[str, Collection[Any]]:
  """{dotted field: the values it may take} of the loss fields of `config`."""
  return _declared(config, "choices")


def ranges(config: ml_collections.ConfigDict) -> dict[str, Range]:
  """{dotted field: (test, what the value must be)} of the loss fields of `config`."""
  common = {
    "objective.hfs_weight": NON_NEGATIVE,
    "objective.hfs_pairs": AT_LEAST_1,
    "regularizer.weight": NON_NEGATIVE,
  }
  return {**common, **_declared(config, "ranges")}


def _unknown_hyperparameters(prefix: str, defaults: dict[str, Any], group: Any) -> list[str]:
  found = []
  for key in sorted(set(group.keys()) - set(defaults)):
    close = difflib.get_close_matches(key, defaults, n=1)
    hint = f"did you mean {prefix}.{close[0]}? " if close else ""
    found.append(
      f"{prefix}.{key}: {prefix.split('.')[-1]!r} has no hyperparameter {key!r}; {hint}its "
      f"hyperparameters: {', '.join(sorted(defaults)) or 'none'}."
    )
  return found


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """The problems of the loss fields of `config` that a single field's check cannot see: names
  not registered, hyperparameters a regularizer or objective does not take, a batch too small
  for them, a decoder regularizer without a decoder, each spec's own cross-field checks."""
  found = []
  objective = registry.objective_specs().get(config.objective.name)
  if objective is None:
    found.append(
      f"objective.name={config.objective.name!r}: "
      + registry.unregistered_message("objective", config.objective.name)
    )
  name = config.regularizer.name
  regularizer = registry.regularizer_specs().get(name)
  if name != "none" and regularizer is None:
    found.append(
      f"regularizer.name={name!r}: " + registry.unregistered_message("regularizer", name)
    )
  if name != "none" and regularizer is not None and name not in config.regularizer:
    found.append(
      f"regularizer.{name}: the config has no group of {name!r}'s hyperparameters; import the "
      "module that registers it before the config is built (at the top of your config file), "
      "so that get_config adds the group with its defaults."
    )
  for prefix, group, spec in _groups(config):
    found += _unknown_hyperparameters(prefix, spec.defaults, group)
    if isinstance(spec, registry.RegularizerSpec) and spec.problems is not None:
      found += spec.problems(group)
  batch_size = config.train.batch_size
  chosen = [spec for spec in (objective, regularizer) if spec is not None]
  needed = max((spec.min_batch_size for spec in chosen), default=1)
  if 1 <= batch_size < needed:
    found.append(f"train.batch_size={batch_size}: this objective/regularizer needs >= {needed}.")
  if (
    objective is not None
    and not objective.uses_decoder
    and name != "none"
    and config.regularizer.on == "decoder"
  ):
    found.append(
      f"regularizer.on='decoder' with objective.name={config.objective.name!r}: that model has "
      "no decoder; use --config.regularizer.on=encoder."
    )
  return found


def _objective_readers(cfg: ml_collections.ConfigDict, key: str) -> str:
  """What would read objective field `key`: the other objectives, or another form of this one."""
  specs = registry.objective_specs()
  readers = [name for name, spec in specs.items() if key in spec.reads(cfg)]
  if readers:
    return f"pick an objective that reads it ({', '.join(readers)})"
  return specs[cfg.name].read_hint(cfg, key) or "pick an objective that reads it"


def unread_fields(config: ml_collections.ConfigDict) -> dict[str, tuple[str, str]]:
  """{dotted field of the objective and regularizer groups that the run does not read: (why,
  what would make it read)}."""
  unread = {}
  cfg = config.objective
  objective = registry.objective_specs().get(cfg.name)
  if objective is not None:
    reads = {*_COMMON_OBJECTIVE_FIELDS, *objective.reads(cfg)}
    if cfg.hfs_weight > 0:
      reads.add("hfs_pairs")
    form = f" {objective.form(cfg)}" if objective.form(cfg) else ""
    for key in set(cfg.keys()) - reads:
      value = cfg[key]
      why = (
        ("objective.hfs_weight=0 (no HFS term)", "set objective.hfs_weight > 0")
        if key == "hfs_pairs"
        else (f"objective.name={cfg.name!r}{form} does not read it", _objective_readers(cfg, key))
      )
      if isinstance(value, ml_collections.ConfigDict):
        unread.update({f"objective.{key}.{sub}": why for sub in value.keys()})
      else:
        unread[f"objective.{key}"] = why
  reg = config.regularizer
  specs = registry.regularizer_specs()
  if reg.name != "none" and reg.name not in specs:
    return unread
  for key, value in reg.items():
    group = isinstance(value, ml_collections.ConfigDict)
    if key == "name" or (group and key == reg.name):
      continue
    if reg.name == "none":
      why = (
        "regularizer.name='none' trains no regularizer",
        f"pick a regularizer (regularizer.name: {', '.join(specs)}; or a variant, e.g. "
        ":gmg_cos_decoder)",
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
