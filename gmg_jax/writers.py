"""Metric writer: JSON lines in the workdir always, TensorBoard via tensorboardX, W&B optionally.

Only process 0 writes; other processes get a writer that drops everything, so the training loop
needs no `if process_index == 0` of its own.

Given the run's config, a writer also records the hyperparameters in TensorBoard (the HParams
dashboard and a text summary of the whole config) and, when `config.logging.wandb_project` is
set, logs scalars and images to Weights & Biases (`pip install -e ".[wandb]"`). The W&B run id is
kept in `<workdir>/wandb_run_id.txt`, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter

from gmg_jax.atomic import atomic_write


def _to_python(value: Any) -> float | int | bool | str:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends `{"step": s, ...}` lines to `<workdir>/<name>.jsonl` and scalars to TensorBoard.

  Args:
    workdir: the run's directory.
    name: file stem of the JSON lines and TensorBoard subdirectory ("metrics", "eval").
    tensorboard: also write TensorBoard event files (when tensorboardX is installed).
    config: the run's config; when given, its fields go to TensorBoard as hyperparameters and
      `config.logging.wandb_project` (if set) turns on the W&B writer.
  """

  def __init__(
    self,
    workdir: str,
    name: str = "metrics",
    *,
    tensorboard: bool = True,
    config: Any = None,
  ):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, f"{name}.jsonl")
    self._file = None
    self._tb = None
    self._wandb = None
    if not self._active:
      return
    logging_config = None if config is None else config.get("logging", None)
    if logging_config is not None and logging_config.get("wandb_project", ""):
      self._wandb = WandbWriter(workdir, logging_config, config)  # fails before any file is made
    os.makedirs(workdir, exist_ok=True)
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
    if tensorboard:
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", name))
    if config is not None and self._tb is not None:
      _write_hparams(self._tb, config)

  def truncate_after(self, step: int) -> None:
    """Drops records past `step` (a resumed run recomputes them), rewriting the file atomically."""
    if not self._active:
      return
    kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
    self._file.close()
    atomic_write(self.path, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept), text=True)
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one record of scalars for `step`."""
    if not self._active:
      return
    record = {"step": int(step), **{k: _to_python(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
    self._file.flush()
    if self._tb is not None:
      _add_scalars(self._tb, record)
    if self._wandb is not None:
      self._wandb.log(step, {k: v for k, v in record.items() if k != "step" and _is_number(v)})

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Writes pictures (uint8 [H, W, C], C = 1 or 3) to TensorBoard and W&B under their names."""
    if not self._active:
      return
    images = {k: _to_uint8_hwc(v) for k, v in images.items()}
    if self._tb is not None:
      _add_images(self._tb, step, images)
      self._tb.flush()
    if self._wandb is not None:
      self._wandb.log_images(step, images)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.close()
      self._wandb = None


def _add_scalars(tb: Any, record: Mapping[str, Any]) -> None:
  """The numbers of a record {"step": s, name: value} as TensorBoard scalars at step s."""
  for k, v in record.items():
    if k != "step" and _is_number(v):
      tb.add_scalar(k, v, int(record["step"]))


def _add_images(tb: Any, step: int, images: Mapping[str, np.ndarray]) -> None:
  for k, image in images.items():
    tb.add_image(k, _to_uint8_hwc(image), int(step), dataformats="HWC")


def rewrite_tensorboard(
  logdir: str,
  records: list[Mapping[str, Any]],
  images: Mapping[int, Mapping[str, Any]],
  config: Any = None,
) -> None:
  """Replaces the TensorBoard run in `logdir` with `records` and `images`, in the order given.

  TensorBoard draws a run's points in the order they were written, so a step written after a
  later one (an evaluation of an earlier checkpoint) bends the curve back; rewriting the run in
  step order keeps it a curve. Process 0 writes.

  Args:
    logdir: the run's directory, e.g. `<workdir>/tensorboard/eval`.
    records: {"step": s, name: value} in step order (values that are no number are skipped).
    images: {step: {name: image [H, W, C]}}, written at their steps.
    config: the run's config, written as hyperparameters (as `MetricWriter` does).
  """
  if jax.process_index() != 0:
    return
  fresh, stale = f"{logdir}.new-{os.getpid()}", f"{logdir}.old-{os.getpid()}"
  shutil.rmtree(fresh, ignore_errors=True)
  tb = SummaryWriter(fresh)
  if config is not None:
    _write_hparams(tb, config)
  for record in records:
    _add_scalars(tb, record)
    _add_images(tb, record["step"], images.get(int(record["step"]), {}))
  tb.close()
  if os.path.exists(logdir):
    os.rename(logdir, stale)
  os.rename(fresh, logdir)
  shutil.rmtree(stale, ignore_errors=True)


def finite_json(record: dict[str, Any]) -> dict[str, Any]:
  """`record` with non-finite floats as null (JSON has no NaN/Infinity) and their keys listed.

  The keys go under "nonfinite" (e.g. `{"grad_norm": null, "nonfinite": ["grad_norm"]}`); nested
  keys are listed dotted ("dci.disentanglement").
  """
  bad = []

  def clean(value: Any, key: str) -> Any:
    if isinstance(value, dict):
      return {k: clean(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
      return [clean(v, key) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
      bad.append(key)
      return None
    return value

  cleaned = clean(record, "")
  if bad:
    cleaned["nonfinite"] = sorted(set(bad))
  return cleaned


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes `payload` as JSON (non-finite floats as null, see `finite_json`), atomically."""
  atomic_write(
    path,
    lambda f: json.dump(finite_json(payload), f, indent=2, sort_keys=True, allow_nan=False),
    text=True,
  )


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


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_uint8_hwc(image: Any) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.dtype != np.uint8:
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  return image


def _flatten_config(config: Any) -> dict[str, Any]:
  """Dotted keys of a config's leaves; tuples and other values that are no scalar become str."""
  flat = {}

  def add(prefix, tree):
    for key, value in tree.items():
      if isinstance(value, Mapping):
        add(f"{prefix}{key}.", value)
      elif value is None or isinstance(value, (bool, int, float, str)):
        flat[f"{prefix}{key}"] = value
      else:
        flat[f"{prefix}{key}"] = str(value)

  add("", config.to_dict() if hasattr(config, "to_dict") else dict(config))
  return flat


def _write_hparams(tb: Any, config: Any) -> None:
  """The config as HParams (in this writer's own run directory) and as a text summary."""
  from tensorboardX.summary import hparams

  flat = _flatten_config(config)
  for summary in hparams({k: v for k, v in flat.items() if v is not None}, {}):
    tb.file_writer.add_summary(summary)
  table = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(flat.items()))
  tb.add_text("config", "| field | value |\n|---|---|\n" + table, 0)
  tb.flush()


WANDB_RUN_ID_FILE = "wandb_run_id.txt"
# Open W&B runs of this process by id, with the number of writers using each: the trainer's
# and the evaluator's writers of one workdir share one W&B run.
_WANDB_RUNS: dict[str, list[Any]] = {}


def wandb_run_id(workdir: str) -> str:
  """The W&B run id of a workdir: read from `wandb_run_id.txt`, or made and written atomically."""
  path = os.path.join(workdir, WANDB_RUN_ID_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      run_id = f.read().strip()
    if run_id:
      return run_id
  run_id = uuid.uuid4().hex[:16]
  atomic_write(path, lambda f: f.write(run_id + "\n"), text=True)
  return run_id


class WandbWriter:
  """Scalars and images to the W&B run of a workdir; a resumed run continues the same W&B run.

  Every record carries "step" as its x axis (`define_metric`), so records that a resumed run
  writes again for steps it already logged are kept instead of dropped by W&B's own step
  counter.

  Args:
    workdir: the run's directory (holds `wandb_run_id.txt`; W&B's files go to `$WANDB_DIR`,
      default the workdir).
    logging_config: has `wandb_project` and optionally `wandb_entity` and `wandb_mode`
      ("online", "offline", "disabled"; "" leaves W&B's default, e.g. `$WANDB_MODE`).
    run_config: the run's config, stored as the W&B run's config.

  Raises:
    ImportError: wandb is not installed (names the install command).
  """

  def __init__(self, workdir: str, logging_config: Any, run_config: Any = None):
    project = logging_config.get("wandb_project", "")
    try:
      import wandb
    except ImportError as e:
      raise ImportError(
        f"config.logging.wandb_project={project!r} asks for Weights & Biases, but wandb is not "
        'installed: pip install -e ".[wandb]" (or set --config.logging.wandb_project="").'
      ) from e
    self.run_id = wandb_run_id(workdir)
    if self.run_id not in _WANDB_RUNS:
      run = wandb.init(
        project=project,
        entity=logging_config.get("wandb_entity", "") or None,
        mode=logging_config.get("wandb_mode", "") or None,
        id=self.run_id,
        resume="allow",
        reinit="create_new",
        dir=os.environ.get("WANDB_DIR") or workdir,
        name=os.path.basename(os.path.normpath(workdir)),
        config=None if run_config is None else _flatten_config(run_config),
      )
      run.define_metric("step")
      run.define_metric("*", step_metric="step")
      _WANDB_RUNS[self.run_id] = [run, 0]
    _WANDB_RUNS[self.run_id][1] += 1
    self.run = _WANDB_RUNS[self.run_id][0]
    self._wandb = wandb

  def log(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log({**scalars, "step": int(step)})

  def log_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    pictures = {
      k: self._wandb.Image(v[..., 0] if v.shape[-1] == 1 else v) for k, v in images.items()
    }
    self.run.log({**pictures, "step": int(step)})

  def close(self) -> None:
    """Finishes the W&B run when the last writer of this process that uses it closes."""
    entry = _WANDB_RUNS.get(self.run_id)
    if entry is None:
      return
    entry[1] -= 1
    if entry[1] == 0:
      del _WANDB_RUNS[self.run_id]
      entry[0].finish()
