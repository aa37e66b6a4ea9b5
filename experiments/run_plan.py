"""A sweep's runs and how they group into K-run programs (`experiments/sweep.py` runs them).

A `Run` is one (config-string variant, seed, overrides); a `Program` is runs trained together as
one K-run (`gmg_jax/replicas.py`): contiguous seeds of one configuration crossed with the values
of the scalar fields a K-run may vary. `programs` groups a study's runs into such programs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Collection, Sequence
from typing import Any

import aggregate

from gmg_jax import replicas


def override(field: str, value: Any) -> str:
  """ "FIELD=VALUE" as `--config.FIELD=VALUE` takes it (a string as is, anything else its repr)."""
  return f"{field}={value}" if isinstance(value, str) else f"{field}={value!r}"


def _field(item: str) -> str:
  return item.split("=", 1)[0]


def _number(text: str) -> float | None:
  try:
    return float(text)
  except ValueError:
    return None


def _token(item: str) -> str:
  """The name token of a "FIELD=VALUE" override, as a replica's directory names it
  (`replicas.value_token`, e.g. "weight=500")."""
  field, value = item.split("=", 1)
  number = _number(value)
  return replicas.value_token(field, value if number is None else number)


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    variant: config-string variant, e.g. "beta_tcvae,hfs,gmg_cos_decoder".
    seed: value of `config.seed`.
    overrides: "KEY=VALUE" config overrides (without the `--config.` prefix), in order.
  """

  variant: str
  seed: int
  overrides: tuple[str, ...] = ()
  axes: tuple[str, ...] = ()

  def tagged(self, exclude: Collection[str] = ()) -> str:
    """The variant, then a token per override on an axis (not in `exclude`), sorted."""
    axes = [o for o in self.overrides if _field(o) in self.axes and _field(o) not in exclude]
    return aggregate.config_name(self.variant, *map(_token, axes))

  @property
  def name(self) -> str:
    """Name of the configuration (seed excluded): the variant with "+", plus one token per
    override on an axis of its study (e.g. "beta_vae+gmg_cos_decoder+weight=100")."""
    return self.tagged()

  def workdir(self, root: str) -> str:
    """The run's workdir under a study directory `root` when it is a program of its own."""
    return os.path.join(root, self.name, f"seed_{self.seed}")


@dataclasses.dataclass(frozen=True)
class Program:
  """Runs trained as one K-run program: contiguous seeds crossed with the values of the fields it
  varies (`--config.vary`), in the replicas' stacking order (`gmg_jax.replicas.expand`)."""

  runs: tuple[Run, ...]

  @property
  def first(self) -> Run:
    return self.runs[0]

  @property
  def seeds(self) -> list[int]:
    return sorted({run.seed for run in self.runs})

  @property
  def vary(self) -> dict[str, list[str]]:
    """{field: values in order} of the overrides that differ between the runs."""
    values: dict[str, list[str]] = {}
    for run in self.runs:
      for item in run.overrides:
        field, value = item.split("=", 1)
        if value not in values.setdefault(field, []):
          values[field].append(value)
    return {field: listed for field, listed in values.items() if len(listed) > 1}

  def workdir(self, root: str) -> str:
    """`<name>/seed_<S>` for one run; `<name>/seeds_<lo>-<hi>` for several, where <name> leaves
    out the varied fields (each replica's directory inside names them)."""
    if len(self.runs) == 1:
      return self.first.workdir(root)
    seeds = self.seeds
    return os.path.join(root, self.first.tagged(self.vary), f"seeds_{seeds[0]}-{seeds[-1]}")

  def run_dirs(self, root: str) -> list[str]:
    """Where each run's outputs (metrics.json, ...) go, in the order of `runs`."""
    if len(self.runs) == 1:
      return [self.first.workdir(root)]
    vary = self.vary
    names = []
    for run in self.runs:
      values = {_field(o): float(o.split("=", 1)[1]) for o in run.overrides if _field(o) in vary}
      names.append(replicas.replica_name(run.seed, values))
    return [os.path.join(self.workdir(root), name) for name in names]


def _seed_blocks(seeds: Sequence[int], size: int) -> list[list[int]]:
  """Sorted seeds cut into blocks of <= `size` contiguous seeds."""
  blocks: list[list[int]] = []
  for seed in sorted(seeds):
    if blocks and seed == blocks[-1][-1] + 1 and len(blocks[-1]) < size:
      blocks[-1].append(seed)
    else:
      blocks.append([seed])
  return blocks


def programs(runs: Sequence[Run], max_replicas: int) -> list[Program]:
  """Groups runs into K-run programs of <= `max_replicas` runs (first seed, then configuration
  order).

  Runs that differ only in their seed and in overrides on an axis of fields a K-run may vary
  (`replicas.variable_fields()`) share a program when their values form a full grid crossed with
  one set of seeds; otherwise each configuration's seeds form programs of their own.
  """
  groups: dict[tuple, list[Run]] = {}
  for run in runs:
    varying = {f for f in run.axes if f in replicas.variable_fields()}
    fixed = tuple(o for o in run.overrides if _field(o) not in varying)
    groups.setdefault((run.variant, fixed, tuple(sorted(varying))), []).append(run)
  found = []
  for group in groups.values():
    by_values: dict[tuple[str, ...], dict[int, Run]] = {}
    for run in group:
      by_values.setdefault(run.overrides, {})[run.seed] = run
    combos = list(by_values)
    seed_sets = {frozenset(seeds) for seeds in by_values.values()}
    fields = [_field(o) for o in group[0].overrides]
    distinct = [list(dict.fromkeys(c[i] for c in combos)) for i in range(len(fields))]
    full_grid = len(combos) == math.prod(len(d) for d in distinct)
    if len(seed_sets) == 1 and full_grid and len(combos) <= max_replicas:
      # One grid: the product of the values in replicas.expand's order, seeds fastest.
      ordered = [c for c in itertools.product(*distinct) if c in by_values]
      for block in _seed_blocks(next(iter(seed_sets)), max_replicas // len(combos)):
        found.append(Program(tuple(by_values[c][s] for c in ordered for s in block)))
    else:
      for combo in combos:
        for block in _seed_blocks(by_values[combo], max_replicas):
          found.append(Program(tuple(by_values[combo][s] for s in block)))
  order = {id(run): i for i, run in enumerate(runs)}
  return sorted(found, key=lambda p: (p.seeds[0], min(order[id(r)] for r in p.runs)))
