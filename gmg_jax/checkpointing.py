"""Orbax checkpoints of the train state: save, restore, resume order, config check.

Layout in the workdir:
  checkpoints/<step>/   Orbax composite: "state" (parameters, optimizer states, RNG, step) and
                        "meta" (the config as JSON and the data position).
  config.json           the run's config, written once; a resume compares against it.

Resume order: the workdir's own latest checkpoint, then `config.train.init_from` (another
workdir's latest checkpoint: parameters and optimizer state, step counted on from there), then
from scratch. The data stream and every random draw are functions of (seed, step), so a resumed
run replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from gmg_jax.logging import write_json_atomic

# Fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = (
  "train.num_steps",
  "train.log_every",
  "train.checkpoint_every",
  "train.max_checkpoints",
  "train.progress_bar",
  "train.resume_with_changed_config",
  "train.init_from",
  "eval",
)


def make_manager(workdir: str, train_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """A CheckpointManager in `<workdir>/checkpoints` saving every `checkpoint_every` steps."""
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=train_config.max_checkpoints,
      save_interval_steps=train_config.checkpoint_every,
    ),
  )


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: Any,
  meta: dict[str, Any],
  *,
  force: bool = False,
) -> bool:
  """Saves (asynchronously) if the manager's policy, or `force`, says so."""
  return manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=force,
  )


def restore(
  manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
  """Restores `(state, meta)` at `step` (default: latest) into the structure of `abstract_state`."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    ),
  )
  return restored.state, restored.meta


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Dotted keys whose values differ, ignoring the fields a resumed run may change."""
  a, b = _flatten(saved), _flatten(json.loads(json.dumps(current)))
  keys = sorted(set(a) | set(b))
  return [
    k
    for k in keys
    if a.get(k) != b.get(k) and not any(k == f or k.startswith(f + ".") for f in _RESUMABLE_CHANGES)
  ]


def check_or_write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json`, or checks that a run already in `workdir` used the same config.

  Raises:
    ValueError: the workdir holds a run with a different config (names the keys and the
      override that forces the resume).
  """
  path = os.path.join(workdir, "config.json")
  current = config.to_dict()
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    diff = config_differences(saved, current)
    if diff and not config.train.resume_with_changed_config:
      details = ", ".join(
        f"{k}: {_flatten(saved).get(k)!r} -> {_flatten(json.loads(json.dumps(current))).get(k)!r}"
        for k in diff
      )
      raise ValueError(
        f"{workdir} holds a run with a different config ({details}). Use a new --workdir, or "
        "resume anyway with --config.train.resume_with_changed_config=True."
      )
    if not diff:
      return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(path, current)
