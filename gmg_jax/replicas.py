"""Many runs in one program: K replicas (seeds x hyperparameter values) trained as one vmapped step.

Two config fields name the replicas (gmg_jax/config.py):

  --config.num_seeds=3                    seeds seed, seed + 1, seed + 2
  --config.vary="regularizer.weight=100,300,1000;optim.learning_rate=1e-3,3e-4"

The replicas are every combination of the varied values crossed with the seeds (seeds vary
fastest), in the order written. Only scalars that change no shape and no Python branch can
vary (`variable_fields()`: the learning rate, the regularizer weight and what each registered
loss declares); inside the step they are traced arrays, so one compilation serves every
replica. Replica (seed s, values v) is exactly the single run whose config is its
`Replica.config` (`--config.seed=s` and those values): same initialization, same data stream,
same random draws.

Layout of a K-run workdir:
  config.json, checkpoints/   the K-run's config and one Orbax checkpoint of the stacked state.
  replicas.json               every replica's name, seed, values and status.
  <replica name>/             what a single run writes: config.json (the replica's own config,
                              runnable alone), metrics.jsonl, metrics.json, pictures/, ...
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gmg_jax.losses import registry


def variable_fields() -> tuple[str, ...]:
  """Scalars a K-run may vary: each is used only arithmetically by the step (no shape, no
  branch); the losses' own are declared by their specs (`gmg_jax.losses.registry`)."""
  return registry.variable_fields()


class Replica(NamedTuple):
  """One run of a K-run program.

  Attributes:
    index: position along the stacked state's leading axis.
    name: its directory under the K-run's workdir, e.g. "weight=300,seed=1".
    seed: its `config.seed`.
    values: the varied fields' values, {dotted field: value}.
    config: the config of the single run it is (num_seeds=1, vary="").
  """

  index: int
  name: str
  seed: int
  values: dict[str, float]
  config: ml_collections.ConfigDict


def is_multi(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` asks for more than the one run of `config.seed`."""
  return config.num_seeds != 1 or bool(config.vary.strip())


def parse_vary(spec: str) -> dict[str, tuple[float, ...]]:
  """`"a.b=1,2;c.d=3e-4,1e-3"` -> {"a.b": (1.0, 2.0), "c.d": (3e-4, 1e-3)}.

  Raises:
    ValueError: naming the part of `spec` that is wrong and what to write instead.
  """
  varied: dict[str, tuple[float, ...]] = {}
  variable = variable_fields()
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    field, sep, listed = part.partition("=")
    field = field.strip()
    if not sep or not listed.strip():
      raise ValueError(f"vary: {part!r} is not FIELD=V1,V2,... (e.g. 'regularizer.weight=1,10').")
    if field == "seed":
      raise ValueError("vary: seeds are set by --config.num_seeds=K (seeds seed..seed+K-1).")
    if field not in variable:
      raise ValueError(
        f"vary: {field!r} cannot vary inside one program; fields that can: "
        f"{', '.join(variable)}. Fields that change shapes or branches need separate runs "
        "(experiments/sweep.py)."
      )
    if field in varied:
      raise ValueError(f"vary: {field!r} is listed twice; give all its values once.")
    try:
      values = tuple(float(v) for v in listed.split(","))
    except ValueError:
      raise ValueError(f"vary: {part!r}: the values must be numbers, comma separated.") from None
    if not all(math.isfinite(v) for v in values):
      raise ValueError(f"vary: {part!r}: the values must be finite.")
    if len(set(values)) != len(values):
      raise ValueError(f"vary: {part!r}: a value is listed twice.")
    varied[field] = values
  return varied


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def value_token(field: str, value: float | str) -> str:
  """ "LEAF=VALUE" of a field's value in names: its last component (the whole dotted field when
  another variable field ends the same) and a number formatted with "g" (e.g. "weight=300")."""
  leaf = field.rsplit(".", 1)[-1]
  if sum(f.rsplit(".", 1)[-1] == leaf for f in variable_fields()) > 1:
    leaf = field
  return f"{leaf}={value if isinstance(value, str) else format(value, 'g')}"


def replica_name(seed: int, values: dict[str, float]) -> str:
  """The directory name of a replica, e.g. "weight=300,seed=1" (`value_token`s, then the seed)."""
  return ",".join([*(value_token(f, v) for f, v in values.items()), f"seed={seed}"])


def expand(config: ml_collections.ConfigDict) -> list[Replica]:
  """The replicas of `config` in stacking order (a config without replicas gives one).

  Raises:
    ValueError: a bad `vary` spec or `num_seeds` (see `parse_vary`).
  """
  if not (isinstance(config.num_seeds, int) and config.num_seeds >= 1):
    raise ValueError(f"num_seeds={config.num_seeds!r}: must be an integer >= 1.")
  varied = parse_vary(config.vary)
  replicas = []
  for combo in itertools.product(*varied.values()):
    values = dict(zip(varied, combo, strict=True))
    for seed in range(config.seed, config.seed + config.num_seeds):
      single = copy.deepcopy(config)
      with single.unlocked():
        single.seed, single.num_seeds, single.vary = seed, 1, ""
        for field, value in values.items():
          _set(single, field, value)
      replicas.append(Replica(len(replicas), replica_name(seed, values), seed, values, single))
  return replicas


class Program(NamedTuple):
  """The runs one compiled step trains: one run, or K replicas.

  A single run is the program of one replica whose state is not stacked (so its files, its
  checkpoint and its numbers are those of a run without replicas); a K-run's state is stacked
  along a leading replica axis and each replica writes under `<workdir>/<replica name>`. Every
  place that depends on the difference asks the program (`stack`, `view`, `workdir`, `vmap`).

  Attributes:
    replicas: the runs, in stacking order (a single run: one, named "", its config the run's).
    stacked: whether the state has a leading replica axis.
  """

  replicas: tuple[Replica, ...]
  stacked: bool

  def stack(self, trees: list[Any]) -> Any:
    """One tree per replica -> the program's tree (stacked, or the single run's own)."""
    if not self.stacked:
      return trees[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)

  def view(self, tree: Any, index: int) -> Any:
    """Replica `index`'s part of the program's (stacked) state or metrics."""
    return take(tree, index) if self.stacked else tree

  def workdir(self, root: str, replica: Replica) -> str:
    """Where `replica` writes: the program's workdir for a single run, else its subdirectory."""
    return os.path.join(root, replica.name) if self.stacked else root

  def vmap(self, fn: Any, in_axes: tuple[Any, ...]) -> Any:
    """`fn` over the replicas (`jax.vmap` with `in_axes`; a single run's is `fn` itself)."""
    return jax.vmap(fn, in_axes=in_axes) if self.stacked else fn


def as_program(config: ml_collections.ConfigDict, replicas: Any = None) -> Program:
  """The program of `replicas` (a list from `expand`, stacked), or of the single run of
  `config` when None; a `Program` is returned as it is."""
  if isinstance(replicas, Program):
    return replicas
  if replicas is None:
    return Program((Replica(0, "", config.seed, {}, config),), stacked=False)
  return Program(tuple(replicas), stacked=True)


def program(config: ml_collections.ConfigDict) -> Program:
  """The program `config` asks for: its K replicas (`num_seeds`, `vary`), or its single run."""
  return as_program(config, expand(config) if is_multi(config) else None)


def stacked_values(replicas: list[Replica] | tuple[Replica, ...]) -> dict[str, np.ndarray]:
  """{field: float32 [K]} of the varied fields, in stacking order (empty for seeds only)."""
  fields = replicas[0].values
  return {f: np.asarray([r.values[f] for r in replicas], np.float32) for f in fields}


def with_values(
  config: ml_collections.ConfigDict, values: dict[str, Any]
) -> ml_collections.ConfigDict:
  """A copy of `config` whose varied fields hold `values` (traced arrays inside the step)."""
  config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for field, value in values.items():
    _set(config, field, value)
  return config


def take(tree: Any, index: int) -> Any:
  """Replica `index` of a stacked pytree (leading axis)."""
  return jax.tree.map(lambda a: a[index], tree)
