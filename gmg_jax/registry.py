"""One lookup for every name-to-implementation table (costs, objectives, datasets, ...).

fn = lookup(COSTS, name, "regularizer.gmg.cost")
# ValueError: "Unknown regularizer.gmg.cost 'x'; choose one of ['cosine', ...]."
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def unknown_message(what: str, name: Any, choices: Collection[Any]) -> str:
  """The error text for a `name` that is not one of `choices`."""
  return f"Unknown {what} {name!r}; choose one of {sorted(choices, key=str)}."


def check_choice(name: Any, choices: Collection[Any], what: str) -> None:
  """Raises a ValueError naming `what`, the bad `name` and the valid `choices`."""
  if name not in choices:
    raise ValueError(unknown_message(what, name, choices))


def lookup(registry: Mapping[Any, T], name: Any, what: str) -> T:
  """`registry[name]`, or a ValueError naming `what`, the bad `name` and the valid names."""
  check_choice(name, registry, what)
  return registry[name]
