"""Orbax checkpoints of the train state: save, restore, resume order, config check.

Layout in the workdir:
  checkpoints/<step>/   Orbax composite: "state" (parameters, optimizer states, RNG, step) and
                        "meta" (the config as JSON and the data position).
  config.json           the run's config, written once the run has started (after a successful
                        restore or a fresh start); a resume compares against it first.

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

from gmg_jax import config as config_lib
from gmg_jax.config import ConfigError
from gmg_jax.writers import write_json_atomic

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
  "logging",
)


def make_manager(workdir: str, train_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """A CheckpointManager of `<workdir>/checkpoints` keeping `max_checkpoints`; creates nothing.

  The directory is made by `write_config`, once the run has started; the trainer decides when to
  save (`save` always writes).
  """
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    options=ocp.CheckpointManagerOptions(max_to_keep=train_config.max_checkpoints, create=False),
  )


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
  """Saves `state` and `meta` at `step` (asynchronously; `wait_until_finished` to join)."""
  manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=True,
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


def _leaf_name(path: tuple[Any, ...]) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def shape_mismatches(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> list[str]:
  """Arrays whose stored shape differs from `abstract_state`'s (or exist on one side only).

  Reads only the checkpoint's metadata, so a state that does not fit is found without a restore.
  """
  metadata = ocp.StandardCheckpointHandler().metadata(manager.directory / str(step) / "state")
  stored = {
    _leaf_name(path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_leaves_with_path(metadata)
  }
  wanted = {
    _leaf_name(path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
  }
  return [
    f"{name}: stored {stored.get(name, 'absent')}, this config {wanted.get(name, 'absent')}"
    for name in sorted(set(stored) | set(wanted))
    if stored.get(name) != wanted.get(name)
  ]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Dotted keys whose values differ, ignoring the fields a resumed run may change.

  A field the saved config lacks (added to the code after the run started) counts only when the
  current value is not the field's default.
  """
  a, b = _flatten(saved), _flatten(json.loads(json.dumps(current)))
  defaults = _flatten(json.loads(json.dumps(config_lib.get_config().to_dict())))
  return [
    k
    for k in sorted(set(a) | set(b))
    if a.get(k, defaults.get(k)) != b.get(k)
    and not any(k == f or k.startswith(f + ".") for f in _RESUMABLE_CHANGES)
  ]


def _saved_config(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Checks that a run already in `workdir` used the same config (reads only).

  Raises:
    ConfigError: the workdir holds a run with a different config (names the keys and the
      override that forces the resume).
  """
  saved = _saved_config(workdir)
  if saved is None or config.train.resume_with_changed_config:
    return
  current = config.to_dict()
  diff = config_differences(saved, current)
  if diff:
    before, after = _flatten(saved), _flatten(json.loads(json.dumps(current)))
    details = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in diff)
    raise ConfigError(
      f"{workdir} holds a run with a different config ({details}). Use a new --workdir, or "
      "resume anyway with --config.train.resume_with_changed_config=True."
    )


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir and writes `config.json` when it is missing or differs (process 0).

  Call it once the run has started: a run that fails before leaves the workdir as it was.
  """
  os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
  current = config.to_dict()
  saved = _saved_config(workdir)
  if jax.process_index() == 0 and (saved is None or config_differences(saved, current)):
    write_json_atomic(os.path.join(workdir, "config.json"), current)
