r"""Records and tables of the 64x64 GPU study (`experiments/study_gpu64.sh`), from what a GPU call
brought back.

  python experiments/gpu64_results.py OUT_DIR/runs.tar.gz [--results=DIR]

Unpacks the call's runs (one K-run program: `gmg_cos_decoder/weight=W,seed=S/` or
`dst_cos_decoder/seed=S/`), writes one record per replica that evaluated
(`<results>/runs/<config>/seed_<S>.json`, `experiments/records.py`; a replica stopped by the
time box counts at its last evaluation, which its record's `num_steps` states), then the tables
from every record committed so far: `results.csv` (one row per replica and evaluation step),
`results.md`, `learning_curves.png`, the per-replica gradient shares in the records' "train"
columns, and `paired.md`: the declared primary family of PLAN.md once both arms are recorded,
the GMG-vs-weight-0 comparison (exploratory) before that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Sequence

import aggregate  # experiments/ is not a package: the script's own directory
import paired
import records

from gmg_jax.train import gradient_summary
from gmg_jax.writers import read_jsonl

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu", "study64")
GMG = "beta_vae+gmg_cos_decoder+weight=1000"
BASELINE = "beta_vae+gmg_cos_decoder+weight=0"  # Trains as beta-VAE (0 x the GMG gradient).
DST = "beta_vae+dst_cos_decoder"
# Declared in experiments/results/gpu/study64/PLAN.md before the first GPU run of this design.
PRIMARY = ((GMG, BASELINE), (GMG, DST), (DST, BASELINE))
METRICS = ("dci/disentanglement", "dci/informativeness_test", "mig/discrete_mig")
_REPLICA = re.compile(r"(?:weight=([^,]+),)?seed=(\d+)")


def config_name(program: str, weight: str | None) -> str:
  """The config name of a replica of `program` ("gmg_cos_decoder" or "dst_cos_decoder")."""
  name = f"beta_vae+{program}"
  return f"{name}+weight={weight}" if weight is not None else name


def record_runs(runs_root: str, runs_dir: str) -> list[str]:
  """Writes a record for every replica under `runs_root` that has an evaluation.

  Raises:
    ValueError: a replica directory whose name is not `[weight=W,]seed=S`, or a program this
      study does not have.
  """
  written = []
  for program in sorted(os.listdir(runs_root)):
    if program not in ("gmg_cos_decoder", "dst_cos_decoder"):
      raise ValueError(f"{runs_root}: unknown program {program!r} (not of study_gpu64.sh).")
    for replica in sorted(os.listdir(os.path.join(runs_root, program))):
      if not os.path.isdir(os.path.join(runs_root, program, replica)):
        continue  # The program's own files (config.json, ...).
      match = _REPLICA.fullmatch(replica)
      if not match:
        raise ValueError(f"{program}/{replica}: not a replica directory ([weight=W,]seed=S).")
      run_dir = os.path.join(runs_root, program, replica)
      if not os.path.exists(os.path.join(run_dir, "metrics.json")):
        continue  # Stopped before its first evaluation.
      summary = os.path.join(run_dir, "train_summary.json")
      if not os.path.exists(summary):  # Stopped by the time box: summarize its logs here.
        logged = gradient_summary(read_jsonl(os.path.join(run_dir, "metrics.jsonl")))
        if logged:
          with open(summary, "w", encoding="utf-8") as f:
            json.dump(logged, f)
      with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        reached = int(json.load(f)["step"])
      name = config_name(program, match.group(1))
      written.append(records.write(runs_dir, name, int(match.group(2)), run_dir, reached))
  return written


def write_tables(results: str) -> None:
  """Tables, curves and paired comparisons of every record under `<results>/runs`."""
  saved = records.read(os.path.join(results, "runs"))
  if not saved:
    raise SystemExit(f"No records under {results}/runs.")
  rows, curves = records.final_rows(saved), records.step_rows(saved)
  aggregate.write_results(results, results, rows=rows, curves=curves)
  configs = {r["config"] for r in rows}
  if {GMG, BASELINE, DST} <= configs:
    paired.write_paired(
      rows,
      results,
      primary=PRIMARY,
      exploratory=PRIMARY,
      metrics=METRICS,
      declared="experiments/results/gpu/study64/PLAN.md, before the first GPU run",
    )
  elif {GMG, BASELINE} <= configs:
    print("The primary family waits for the DST arm; GMG vs weight 0 is exploratory until then.")
    paired.write_paired(rows, results, exploratory=[(GMG, BASELINE)], metrics=METRICS)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("runs", help="runs.tar.gz of a study_gpu64.sh call, or its unpacked folder")
  parser.add_argument("--results", default=RESULTS, help="the study's results directory")
  args = parser.parse_args(argv)
  if not os.path.exists(args.runs):
    parser.error(f"{args.runs}: no such file or folder.")
  with tempfile.TemporaryDirectory() as unpacked:
    root = args.runs
    if os.path.isfile(args.runs):
      with tarfile.open(args.runs) as archive:
        archive.extractall(unpacked, filter="data")
      root = unpacked
    try:
      written = record_runs(root, os.path.join(args.results, "runs"))
    except ValueError as e:
      parser.error(str(e))
  print(f"Recorded {len(written)} replicas under {args.results}/runs.")
  write_tables(args.results)


if __name__ == "__main__":
  main()
