"""How a run fails: the exceptions the trainer raises and the command line turns into exit
statuses (`gmg_jax.cli`). No JAX here, so the command line can name them before importing JAX."""

from __future__ import annotations

import os
from typing import Any

from gmg_jax.config import ConfigError

__all__ = ["ConfigError", "DataFileError", "Diverged", "Preempted", "ReplicasDiverged"]


class DataFileError(ValueError):
  """A dataset file is missing, truncated, corrupt or has the wrong layout."""


class Diverged(FloatingPointError):
  """A step produced a non-finite loss, gradient or state; it was not applied or saved."""

  def __init__(self, step: int, metrics: dict[str, Any], last_checkpoint: int | None = None):
    self.step = step
    terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()) if k != "finite")
    fix = "--config.optim.learning_rate=<lower> --config.train.resume_with_changed_config=True"
    where = (
      f"No checkpoint was saved before it: start again with a lower learning rate (add {fix}, "
      "or use a new --workdir)."
      if last_checkpoint is None
      else "Every checkpoint left holds finite parameters whose loss was finite. Resume from the "
      f"last one (step {last_checkpoint}) with a lower learning rate: add {fix}."
    )
    super().__init__(
      f"Non-finite loss, gradient or parameters at step {step} ({terms}). The update was not "
      f"applied. {where}"
    )


class Preempted(Exception):
  """The run was asked to stop (SIGTERM) and saved its state; the same command resumes it."""

  def __init__(self, step: int, workdir: str):
    self.step = step
    super().__init__(
      f"Preempted at step {step}; the state is saved in {workdir}. Run the same command to resume."
    )


class ReplicasDiverged(Diverged):
  """Some replicas of a K-run went non-finite and were stopped; the others ran to the end."""

  def __init__(self, failures: dict[str, str], workdir: str):
    self.failures = failures
    lines = "\n".join(f"  - {name}: {why}" for name, why in failures.items())
    FloatingPointError.__init__(
      self,
      f"{len(failures)} replica(s) went non-finite and were stopped (their last finite state is "
      f"kept; the other replicas finished; see {os.path.join(workdir, 'replicas.json')}):\n"
      f"{lines}",
    )
