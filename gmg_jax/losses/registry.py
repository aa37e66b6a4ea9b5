"""What a loss is to the rest of the code: the registered objectives and regularizers, each with
a spec of what the trainer, the checks, the K-run and the evaluation need to know.

This module imports no JAX (the config and the command line read it before JAX loads). The
built-in losses register when `gmg_jax.losses.objectives` and `gmg_jax.losses.regularizers` are
imported; `regularizer_specs()` and `objective_specs()` import them first.

A regularizer is `fn(map_fn, x, y, key, **hyperparameters) -> (value, aux)`; its keyword
defaults are its hyperparameters, read from `config.regularizer.<name>` (`add_groups` creates
that group with the defaults). An objective is `fn(inputs, **hyperparameters) -> (value, aux)`
with its hyperparameters in `config.objective.<name>`; `inputs` is the batch's
`gmg_jax.losses.objectives.Inputs` (images, mu, logvar, z, logits, step, key, critic).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

# The regularizer group's own fields (gmg_jax/config.py); no regularizer may take these names.
REGULARIZER_FIELDS = ("name", "on", "weight", "target", "scope")
# The value types a hyperparameter may have (they live in a config and in config.json).
_VALUE_TYPES = (bool, int, float, str, tuple)

Range = tuple[Callable[[Any], bool], str]  # (test, what the value must be)


def positive(v: Any) -> bool:
  return math.isfinite(v) and v > 0


def non_negative(v: Any) -> bool:
  return math.isfinite(v) and v >= 0


def at_least(n: int) -> Callable[[Any], bool]:
  return lambda v: v >= n


POSITIVE: Range = (positive, "a finite number > 0")
NON_NEGATIVE: Range = (non_negative, "a finite number >= 0")
AT_LEAST_1: Range = (at_least(1), "an integer >= 1")


class Critic(NamedTuple):
  """A second network an objective trains beside the VAE (FactorVAE's discriminator).

  Attributes:
    build: `(model_config, rngs) -> module`.
    optimizer: `optim_config -> optax.GradientTransformation`.
    loss: `(critic, z, key) -> (loss, aux)`, differentiated w.r.t. the critic on the codes the
      VAE loss used (`objectives.sample_codes`), in the same step, before the VAE's update.
  """

  build: Callable[..., Any]
  optimizer: Callable[[Any], Any]
  loss: Callable[..., tuple[Any, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class RegularizerSpec:
  """A registered regularizer.

  Attributes:
    name: `config.regularizer.name`; its hyperparameters are `config.regularizer.<name>`.
    fn: `fn(map_fn, x, y, key, **hyperparameters) -> (value, aux)`.
    defaults: {hyperparameter: default}.
    variable: the hyperparameters a K-run may vary (used only arithmetically by `fn`).
    reads_outputs: the value depends on the map only through its inputs and outputs (x, y), so
      the step can measure its share of the gradient w.r.t. the outputs
      (`grad/regularizer_share`); False for one that calls `map_fn` (the Jacobian penalty).
    distortion: `(value, aux) -> DST` of the batch as the regularizer computed it, to compare
      gradients with (`grad/regularizer_to_distortion`); None when it has none.
    min_batch_size: the smallest batch it is defined on.
    choices: {hyperparameter: the values it may take}.
    ranges: {hyperparameter: (test, what the value must be)}.
    problems: `group -> [problem lines]` for checks across hyperparameters.
    picture: `(x, y, group) -> (name, matrix, title)`, a picture of what it sees on one batch
      (written as pictures/<name>_<step>.png; GMG: its GW plan, "gw_plan").
  """

  name: str
  fn: Callable[..., Any]
  defaults: Mapping[str, Any]
  variable: tuple[str, ...]
  reads_outputs: bool = False
  distortion: Callable[[Any, dict[str, Any]], Any] | None = None
  min_batch_size: int = 1
  choices: Mapping[str, Collection[Any]] = dataclasses.field(default_factory=dict)
  ranges: Mapping[str, Range] = dataclasses.field(default_factory=dict)
  problems: Callable[[Any], list[str]] | None = None
  picture: Callable[..., tuple[str, Any, str]] | None = None


def _no_fields(cfg: Any) -> tuple[str, ...]:
  return ()


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """A registered objective.

  Attributes:
    name: `config.objective.name`.
    fn: `(inputs, objective_config) -> (prior term, aux)`; the reconstruction, HFS and the
      regularizer are added by the loss.
    uses_decoder: whether it reconstructs through a decoder (the model then has one).
    reads: `objective_config -> fields of config.objective it reads` (besides `name` and the
      HFS fields); the checks refuse a setting of the others.
    defaults: {hyperparameter: default} of `config.objective.<name>` (registered objectives).
    variable: fields of `config.objective` (dotted below it) a K-run may vary.
    min_batch_size: the smallest batch it is defined on.
    critic: the second network it trains, or None.
    choices: {field of config.objective: the values it may take}.
    ranges: {field of config.objective: (test, what the value must be)}.
    form: `objective_config -> a few words naming the form it trains in` ("" when it has one).
    read_hint: `(objective_config, field) -> how to make it read field`, or None.
    source: the function `register_objective` was given (`fn` reads its group and calls it).
  """

  name: str
  fn: Callable[..., Any]
  uses_decoder: bool = True
  reads: Callable[[Any], tuple[str, ...]] = _no_fields
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  variable: tuple[str, ...] = ()
  min_batch_size: int = 1
  critic: Critic | None = None
  choices: Mapping[str, Collection[Any]] = dataclasses.field(default_factory=dict)
  ranges: Mapping[str, Range] = dataclasses.field(default_factory=dict)
  form: Callable[[Any], str] = lambda cfg: ""
  read_hint: Callable[[Any, str], str | None] = lambda cfg, field: None
  source: Callable[..., Any] | None = None  # The registered function (when `fn` wraps it).


_REGULARIZERS: dict[str, RegularizerSpec] = {}
_OBJECTIVES: dict[str, ObjectiveSpec] = {}
_BUILTINS = ("gmg_jax.losses.objectives", "gmg_jax.losses.regularizers")


def _load_builtins() -> None:
  for module in _BUILTINS:
    importlib.import_module(module)  # Registers on import (once).


def regularizer_specs() -> dict[str, RegularizerSpec]:
  """{name: spec} of every registered regularizer, the built-in ones included."""
  _load_builtins()
  return dict(_REGULARIZERS)


def objective_specs() -> dict[str, ObjectiveSpec]:
  """{name: spec} of every registered objective, the built-in ones included."""
  _load_builtins()
  return dict(_OBJECTIVES)


def unregistered_message(kind: str, name: str, known: Collection[str] | None = None) -> str:
  """Why `name` is not a registered `kind` ("objective" or "regularizer"), and the fix."""
  if known is None:
    known = (regularizer_specs if kind == "regularizer" else objective_specs)()
  close = difflib.get_close_matches(str(name), known, n=1)
  hint = f"did you mean {close[0]!r}? " if close else ""
  none = " (or 'none')" if kind == "regularizer" else ""
  return (
    f"{kind} {name!r} is not registered; {hint}registered: {', '.join(sorted(known))}{none}. A "
    f"{kind} of your own registers when its module is imported (register_{kind}); import it "
    "in your config file."
  )


def regularizer_spec(name: str) -> RegularizerSpec:
  """The spec of regularizer `name`; a ValueError naming the registered ones otherwise."""
  specs = regularizer_specs()
  if name not in specs:
    raise ValueError(unregistered_message("regularizer", name, specs))
  return specs[name]


def objective_spec(name: str) -> ObjectiveSpec:
  """The spec of objective `name`; a ValueError naming the registered ones otherwise."""
  specs = objective_specs()
  if name not in specs:
    raise ValueError(unregistered_message("objective", name, specs))
  return specs[name]


def _hyperparameters(kind: str, name: str, fn: Callable[..., Any], skip: int) -> dict[str, Any]:
  """{keyword: default} of `fn` after its first `skip` positional parameters."""
  params = list(inspect.signature(fn).parameters.values())
  positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if len(positional) < skip:
    raise TypeError(
      f"{kind} {name!r}: {fn.__name__} must take {skip} positional arguments first; see "
      f"register_{kind}."
    )
  defaults = {}
  for p in params[skip:]:
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
      continue
    if p.default is p.empty:
      raise TypeError(
        f"{kind} {name!r}: hyperparameter {p.name!r} has no default; give it one (the default "
        "is what the config starts from)."
      )
    if not isinstance(p.default, _VALUE_TYPES):
      raise TypeError(
        f"{kind} {name!r}: hyperparameter {p.name!r} defaults to {p.default!r}; a config holds "
        "only bool, int, float, str or tuple values."
      )
    defaults[p.name] = p.default
  return defaults


def _check_name(kind: str, name: str, fn: Callable[..., Any], table: Mapping[str, Any]) -> None:
  if not (isinstance(name, str) and name.isidentifier()) or name == "none":
    raise ValueError(f"{kind} name {name!r}: use a Python identifier other than 'none'.")
  old = table.get(name)
  old_fn = old and (getattr(old, "source", None) or old.fn)
  if old is not None and (old_fn.__module__, old_fn.__qualname__) != (
    fn.__module__,
    fn.__qualname__,
  ):
    raise ValueError(
      f"{kind} {name!r} is already registered by {old_fn.__module__}.{old_fn.__qualname__}; "
      "pick another name."
    )


def _variable(
  kind: str, name: str, defaults: Mapping[str, Any], variable: Collection[str] | None
) -> tuple[str, ...]:
  """The hyperparameters a K-run may vary: `variable`, by default those defaulting to a float."""
  if variable is None:
    return tuple(k for k, v in defaults.items() if type(v) is float)
  unknown = sorted(set(variable) - set(defaults))
  if unknown:
    raise ValueError(f"{kind} {name!r}: variable names no hyperparameter: {unknown}.")
  return tuple(variable)


def register_regularizer(
  name: str,
  *,
  reads_outputs: bool = False,
  distortion: Callable[[Any, dict[str, Any]], Any] | None = None,
  variable: Collection[str] | None = None,
  min_batch_size: int = 1,
  choices: Mapping[str, Collection[Any]] | None = None,
  ranges: Mapping[str, Range] | None = None,
  problems: Callable[[Any], list[str]] | None = None,
  picture: Callable[..., tuple[str, Any, str]] | None = None,
  defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Registers `fn(map_fn, x, y, key, **hyperparameters) -> (value, aux)` as `name`.

  Then `config.regularizer.name = name` trains `config.regularizer.weight * value`, with the
  hyperparameters from `config.regularizer.<name>` (its keyword defaults are the defaults; a
  field it does not take is refused before the run writes anything), logs `value` as
  "regularizer" and each aux entry as "regularizer/<key>", and lets a K-run vary its float
  hyperparameters (`variable`, by default every hyperparameter whose default is a float).

  Args:
    name: its name in configs (a Python identifier).
    reads_outputs, distortion, min_batch_size, choices, ranges, problems, picture: see
      `RegularizerSpec`.
    variable: the hyperparameters a K-run may vary (default: those defaulting to a float).
    defaults: hyperparameters `fn` takes through `**kwargs`, with their defaults.

  Returns:
    A decorator that registers `fn` and returns it unchanged.
  """

  def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    _check_name("regularizer", name, fn, _REGULARIZERS)
    if name in REGULARIZER_FIELDS:
      raise ValueError(f"regularizer name {name!r} is a field of config.regularizer; rename it.")
    found = {**_hyperparameters("regularizer", name, fn, 4), **(defaults or {})}
    varied = _variable("regularizer", name, found, variable)
    _REGULARIZERS[name] = RegularizerSpec(
      name=name,
      fn=fn,
      defaults=found,
      variable=varied,
      reads_outputs=reads_outputs,
      distortion=distortion,
      min_batch_size=min_batch_size,
      choices=dict(choices or {}),
      ranges=dict(ranges or {}),
      problems=problems,
      picture=picture,
    )
    return fn

  return register


def register_objective(
  name: str,
  *,
  uses_decoder: bool = True,
  variable: Collection[str] | None = None,
  min_batch_size: int = 1,
  choices: Mapping[str, Collection[Any]] | None = None,
  ranges: Mapping[str, Range] | None = None,
  critic: Critic | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Registers `fn(inputs, **hyperparameters) -> (value, aux)` as objective `name`.

  `value` is the objective's prior term: the loss adds the Bernoulli reconstruction (when
  `uses_decoder`), HFS and the regularizer. Its hyperparameters are `config.objective.<name>`
  (keyword defaults; unknown fields refused before the run writes anything); `choices` and
  `ranges` are keyed by hyperparameter; `variable` defaults to the float ones. With a `critic`
  (a second network trained beside the VAE, as FactorVAE's discriminator), `inputs.critic` is
  that network; `fn`'s gradient reaches the VAE only, and the trainer updates the critic on its
  own loss in the same step.

  Returns:
    A decorator that registers `fn` and returns it unchanged.
  """

  def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    _check_name("objective", name, fn, _OBJECTIVES)
    found = _hyperparameters("objective", name, fn, 1)
    varied = _variable("objective", name, found, variable)
    _OBJECTIVES[name] = ObjectiveSpec(
      name=name,
      fn=lambda inputs, cfg: fn(inputs, **cfg[name].to_dict()),
      uses_decoder=uses_decoder,
      reads=lambda cfg: (name,),
      defaults=found,
      variable=tuple(f"{name}.{k}" for k in varied),
      min_batch_size=min_batch_size,
      choices={f"{name}.{k}": v for k, v in (choices or {}).items()},
      ranges={f"{name}.{k}": v for k, v in (ranges or {}).items()},
      critic=critic,
      source=fn,
    )
    return fn

  return register


def add_objective(spec: ObjectiveSpec) -> None:
  """Registers a built-in objective's spec (one that reads flat fields of config.objective)."""
  _check_name("objective", spec.name, spec.fn, _OBJECTIVES)
  _OBJECTIVES[spec.name] = spec


def add_groups(config: Any) -> None:
  """Adds to `config` the hyperparameter group of every registered objective and regularizer
  that does not have one yet, with the registered defaults (what `gmg_jax.config` does for
  regularizers registered before the config is built: a user's config file)."""
  import ml_collections  # noqa: PLC0415 (JAX-free; kept local so the specs need no config)

  for group, table in (("regularizer", _REGULARIZERS), ("objective", _OBJECTIVES)):
    for name, spec in table.items():
      if spec.defaults and name not in config[group]:
        config[group][name] = ml_collections.ConfigDict(dict(spec.defaults))


def variable_fields() -> tuple[str, ...]:
  """The dotted config fields a K-run may vary: the learning rate, the regularizer weight, and
  each registered objective's and regularizer's `variable` hyperparameters."""
  objective = [f"objective.{f}" for spec in objective_specs().values() for f in spec.variable]
  regularizer = [
    f"regularizer.{name}.{f}" for name, spec in regularizer_specs().items() for f in spec.variable
  ]
  return tuple(
    dict.fromkeys(["optim.learning_rate", *objective, "regularizer.weight", *regularizer])
  )
