"""A study's per-run results as small committed files, so a study outlives the machine it ran on.

A finished run's record is `<results>/<study>/runs/<config name>/seed_<S>.json`:

    {"config": "beta_vae+gmg_cos_decoder", "seed": 100, "num_steps": 10000,
     "evaluations": [{"step": 1000, "dci/disentanglement": ...}, ...],   # eval.jsonl, in order
     "metrics": {...},                                                   # the final metrics.json
     "train": {"train/reconstruction": ..., "train/median_regularizer_share": ...}}

`experiments/sweep.py` writes one when a run finishes and counts a run as done when its record
is there (a fresh clone goes on from what is committed), and aggregation reads the records: the
final rows (one per run, as `aggregate.collect`) and the per-step rows of the learning curves.
The training logs and checkpoints stay in the run's workdir; a record holds what the analysis
reads (a few KB).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import aggregate

from gmg_jax.atomic import atomic_write
from gmg_jax.writers import read_jsonl

_RECORD = re.compile(r"seed_(\d+)\.json")


def path(runs_dir: str, config: str, seed: int) -> str:
  """Where the record of (config, seed) lives under a study's `runs/` directory."""
  return os.path.join(runs_dir, config, f"seed_{seed}.json")


def write(runs_dir: str, config: str, seed: int, run_dir: str, num_steps: int) -> str:
  """Writes the record of a finished run from its workdir (atomically).

  Raises:
    ValueError: the run's metrics.json is not at `num_steps` (the run has not finished).
  """
  with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  if int(metrics.get("step", -1)) < num_steps:
    raise ValueError(
      f"{run_dir}: evaluated at step {metrics.get('step')}, not {num_steps}; not finished."
    )
  record = {
    "config": config,
    "seed": int(seed),
    "num_steps": int(num_steps),
    "evaluations": read_jsonl(os.path.join(run_dir, "eval.jsonl")),
    "metrics": {k: v for k, v in metrics.items() if k != "sources"},
    "train": aggregate.train_diagnostics(run_dir),
  }
  text = json.dumps(record, indent=1, sort_keys=True) + "\n"
  return atomic_write(path(runs_dir, config, seed), lambda f: f.write(text), text=True)


def is_finished(runs_dir: str, config: str, seed: int, num_steps: int) -> bool:
  """Whether a record of (config, seed) at `num_steps` or later is there."""
  try:
    with open(path(runs_dir, config, seed), encoding="utf-8") as f:
      return int(json.load(f)["num_steps"]) >= num_steps
  except (OSError, ValueError, KeyError):
    return False


def read(runs_dir: str) -> list[dict[str, Any]]:
  """Every record under `runs_dir`, sorted by config then seed."""
  found = []
  if not os.path.isdir(runs_dir):
    return found
  for config in sorted(os.listdir(runs_dir)):
    folder = os.path.join(runs_dir, config)
    if not os.path.isdir(folder):
      continue
    for name in os.listdir(folder):
      if _RECORD.fullmatch(name):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          found.append(json.load(f))
  return sorted(found, key=lambda r: (r["config"], r["seed"]))


def final_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per run at its final evaluation, as `aggregate.collect` makes them."""
  rows = []
  for record in records:
    metrics = record["metrics"]
    row: dict[str, Any] = {
      **aggregate.parse_name(record["config"]),
      "seed": int(record["seed"]),
      "step": int(metrics.get("step", -1)),
    }
    row.update(aggregate.flatten({k: v for k, v in metrics.items() if k != "step"}))
    row.update(record.get("train", {}))
    rows.append(row)
  return rows


def step_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per (run, evaluation step): the learning curves' points."""
  rows = []
  for record in records:
    axes = aggregate.parse_name(record["config"])
    for evaluation in record["evaluations"]:
      values = {k: float(v) for k, v in evaluation.items() if k != "step"}
      rows.append({**axes, "seed": int(record["seed"]), "step": int(evaluation["step"]), **values})
  return sorted(rows, key=lambda r: (r["config"], r["seed"], r["step"]))
