"""Metric writer: JSON lines in the workdir always, TensorBoard event files via tensorboardX.

Only process 0 writes; other processes get a writer that drops everything, so the training loop
needs no `if process_index == 0` of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


def _to_python(value: Any) -> float | int | bool | str:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends `{"step": s, ...}` lines to `<workdir>/<name>.jsonl` and scalars to TensorBoard."""

  def __init__(self, workdir: str, name: str = "metrics", *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, f"{name}.jsonl")
    self._file = None
    self._tb = None
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # TensorBoard files are optional; the JSON lines are not.
        SummaryWriter = None
      if SummaryWriter is not None:
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", name))

  def truncate_after(self, step: int) -> None:
    """Drops records past `step` (a resumed run recomputes them), rewriting the file atomically."""
    if not self._active:
      return
    kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
    self._file.close()
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self.path)
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one record of scalars for `step`."""
    if not self._active:
      return
    record = {"step": int(step), **{k: _to_python(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes `payload` as JSON to a temporary file next to `path`, then renames it to `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads the records of a JSON-lines file (a truncated last line from a kill is skipped)."""
  records = []
  if not os.path.exists(path):
    return records
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records
