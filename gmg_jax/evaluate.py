r"""Scores a saved run: restores a checkpoint, computes metrics, writes metrics and pictures.

  python -m gmg_jax.evaluate --workdir=/tmp/gmg [--metrics=dci,mig] [--mode=exact]
  python -m gmg_jax.evaluate --workdir=/tmp/gmg --step=all     # every kept checkpoint, curves

Values merge into the run's metrics.json (the trainer's other metrics stay; "sources" says which
step, mode and sample sizes each value came from); every evaluation is appended to eval.jsonl
and `pictures/metric_curves.png` plots them; the TensorBoard run `tensorboard/eval` is rewritten
from eval.jsonl in step order. The library behind it is `gmg_jax.evaluation`.

Standard output is one JSON document: the record of the step scored ({"step": ..., "<metric>":
{...}}), a list of records for --step=all, and for a K-run program an object {replica workdir:
record or list}. Progress and messages go to standard error.

A replica of a K-run (`<program workdir>/<replica name>`, gmg_jax/replicas.py) is scored the
same way: its state is taken from the program's stacked checkpoints. `--workdir=<program
workdir>` scores every replica that had not stopped at that step, encoding all of them together
(`evaluation.evaluate_runs`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import ml_collections
from absl import flags

from gmg_jax import cli, evaluation, replicas, saved_runs, train
from gmg_jax import metrics as metrics_lib
from gmg_jax.config import ConfigError


def checkpoint_steps(manager: Any, which: str) -> list[int | None]:
  """The steps `--step` names: [None] (latest), [N], or every kept checkpoint in order."""
  if which == "latest":
    return [None]
  if which == "all":
    return sorted(manager.all_steps())
  if not which.isdigit():
    raise ConfigError(f"--step={which!r}: pass a step number, 'latest' or 'all'.")
  return [int(which)]


def _override_eval(config: ml_collections.ConfigDict, args: Any) -> ml_collections.ConfigDict:
  """`config` with the evaluation fields the command line sets."""
  with config.unlocked():
    if args.metrics:
      config.eval.metrics = tuple(args.metrics.split(","))
    for name in ("mode", "num_train", "num_test"):
      if args[name].value is not None:
        config.eval[name] = args[name].value
  return config


def _stopped_at(workdir: str) -> dict[str, int]:
  """{replica name: step it stopped at} of a K-run program's replicas.json."""
  path = os.path.join(workdir, "replicas.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    index = json.load(f)["replicas"]
  return {r["name"]: r["failed_at"] for r in index if r.get("failed_at") is not None}


def _say(message: str) -> None:
  """A progress line on stderr (stdout holds the JSON document)."""
  print(message, file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
  del argv
  args = flags.FLAGS
  workdir = args.workdir
  # The run is opened once; each named checkpoint is restored into the same state structure.
  run = saved_runs.open_run(workdir)
  config = _override_eval(run.config, args)
  try:  # Before any checkpoint is restored or image encoded.
    metrics_lib.check_names(config.eval.metrics, config.eval.mode, metrics_lib.suite.evaluate_flag)
    metrics_lib.suite.check_dataset(
      config.eval.metrics, run.dataset, metrics_lib.suite.evaluate_flag
    )
  except ValueError as e:
    raise ConfigError(f"{e} Nothing was evaluated or written.") from e
  program = replicas.program(config)
  # TensorBoard gets the evaluations once all are done, rewritten in step order.
  scored: dict[str, tuple[ml_collections.ConfigDict, list[dict[str, Any]]]] = {}
  for step in checkpoint_steps(run.manager, args.step):
    _say(f"Evaluating {'the latest checkpoint' if step is None else f'step {step}'} ...")
    state = saved_runs.restore_state(workdir, run, step)
    # Every run of the program that had not stopped by this step (a K-run's replicas are
    # encoded together).
    at = train.step_of(state)
    stopped = _stopped_at(workdir)
    due = [
      (r.index, r.config, program.workdir(workdir, r))
      for r in program.replicas
      if stopped.get(r.name, at + 1) > at
    ]
    records = evaluation.evaluate_runs(
      program,
      due,
      run.graphdef,
      state,
      run.dataset,
      progress=True,
      by="evaluate",
      tensorboard=False,
    )
    for (_, own_config, own), record in zip(due, records, strict=True):
      scored.setdefault(own, (own_config, []))[1].append(record)
  for own, (own_config, _) in scored.items():
    evaluation.rewrite_eval_tensorboard(own_config, own)
  every = args.step == "all"
  documents = {own: records if every else records[0] for own, (_, records) in scored.items()}
  print(json.dumps(documents if program.stacked else documents.get(workdir, []), indent=2))
  where = os.path.join(workdir, "<replica>") if program.stacked else workdir
  _say(
    f"Wrote {os.path.join(where, 'metrics.json')}, {os.path.join(where, 'eval.jsonl')} and "
    f"{os.path.join(where, 'tensorboard', 'eval')}"
  )


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Workdir of a run (holds config.json and checkpoints).")
  flags.DEFINE_string("metrics", "", "Comma-separated metric names (default: the run's).")
  flags.DEFINE_enum("mode", None, ["exact", "fast"], "Estimators (default: the run's).")
  flags.DEFINE_integer("num_train", None, "Training points (default: the run's).")
  flags.DEFINE_integer("num_test", None, "Test points (default: the run's).")
  flags.DEFINE_string(
    "step", "latest", "Checkpoint to score: a step number, 'latest' or 'all' (every kept one)."
  )
  flags.mark_flag_as_required("workdir")


if __name__ == "__main__":
  # Flags are defined only when run as a program.
  _define_flags()
  cli.run(
    main,
    __doc__,
    __name__,
    f"Metrics (--metrics=NAME,NAME): {', '.join(metrics_lib.METRIC_NAMES)}. factor_vae and "
    "beta_vae intervene on factors and need a dataset that holds every factor combination.",
  )
