r"""Runs a study (resumable), prints its launch commands, or aggregates its results.

A study is either a named function of `experiments/studies.py` that yields one dict per run
(`--study=decoder_cpu32`), or the GMG paper's grid for one dataset config, selected by flags.
The grid (Uscidda et al. 2025): {beta_vae, beta_tcvae} x {without, with hfs} x ({none} +
{dst, gmg} x {l2, scl2, cos} x {encoder, decoder}) x seeds. "none" has no cost and no placement,
so one grid point per (objective, hfs): 2 * 2 * (1 + 12) = 52 configs per seed.

  # a named study: run it here (finished runs are skipped, unfinished ones resume), then its
  # tables, plots and paired comparisons -> experiments/results/<study>/
  python experiments/sweep.py --study=decoder_cpu32 --run
  python experiments/sweep.py --study=decoder_cpu32 --aggregate
  # the full grid, one launch command per program (for a cluster scheduler)
  python experiments/sweep.py --config=configs/shapes3d.py --seeds=0-9 --print
  # a subset of the grid
  python experiments/sweep.py --config=configs/default.py --name=readme_cpu32 --setting=cpu32 \
      --objectives=beta_vae --hfs=no --placements=decoder --seeds=0,1,2 --run

Runs are grouped into K-run programs (gmg_jax/replicas.py: K runs vmapped in one jitted step) of
at most `--replicas_per_program` runs (default: 8 on a GPU/TPU, 1 on a CPU, where such programs
measured slower than separate runs): contiguous seeds of one configuration, crossed with the
values of scalar fields a K-run may vary (`--config.vary`) where the study's values form a full
grid. `--replicas_per_program=1` runs every run as its own process. A configuration's name
is its variant with "," replaced by "+", then the study's axes of that variant, sorted (e.g.
`beta_vae+gmg_cos_decoder+weight=100`); aggregation reads the axes back from it. Run directories:
`<root>/<study>/<name>/seed_<S>` (a program of one run) or `<root>/<study>/<dir>/seeds_<lo>-<hi>/
<replica>` (a program's replica, e.g. `weight=100,seed=3`: its varied values join <dir>).
For the grid, `--set KEY=VALUE` adds `--config.KEY=VALUE` to every run; `--set_for
TOKEN:KEY=VALUE` only to runs whose variant has the token (e.g. a per-cost regularizer weight:
`--set_for cos:regularizer.weight=500`). `--setting` names a bundle of overrides (`SETTINGS`).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import aggregate  # noqa: E402  (experiments/ is not a package)
import paired  # noqa: E402
import records  # noqa: E402
import studies  # noqa: E402
from run_plan import Program, Run, override, programs  # noqa: E402  (sweep's API)

# Named bundles of overrides (`--setting`); cpu32 is `studies.CPU32`.
SETTINGS: dict[str, tuple[str, ...]] = {
  "cpu32": tuple(override(k, v) for k, v in studies.CPU32.items()),
}


def expand(
  variants: Iterable[str],
  seeds: Iterable[int],
  overrides: Sequence[str] = (),
  overrides_for: Sequence[tuple[str, str]] = (),
  pattern: str | None = None,
) -> list[Run]:
  """Runs of every (variant, seed), with overrides, optionally filtered by a regex.

  Args:
    variants: config-string variants.
    seeds: seeds.
    overrides: "KEY=VALUE" overrides for every run.
    overrides_for: (token, "KEY=VALUE"): the override applies to runs whose variant has the token
      (a variant's tokens are its comma-separated parts and their "_"-separated pieces).
    pattern: keep runs whose `name` (variant with "+") matches this regex (`re.search`).

  Returns:
    The runs, variant-major.
  """
  runs = []
  for variant in variants:
    tokens = set(variant.split(",")) | {p for t in variant.split(",") for p in t.split("_")}
    extra = tuple(o for token, o in overrides_for if token in tokens)
    for seed in seeds:
      run = Run(variant, int(seed), tuple(overrides) + extra)
      if pattern is None or re.search(pattern, run.name):
        runs.append(run)
  return runs


def study_runs(study: studies.Study, pattern: str | None = None) -> list[Run]:
  """The runs a registered study yields, with the axes of each variant (fields that take more
  than one value, or are set in only some, among the study's runs of that variant).

  Raises:
    SystemExit: the study yields one (configuration, seed) twice.
  """
  items = [dict(item) for item in study.runs()]
  seen: dict[str, dict[str, set[str]]] = {}
  for item in items:
    per_field = seen.setdefault(item["config"], {})
    for field in set(per_field) | set(item) - {"config", "seed"}:
      per_field.setdefault(field, set()).add(repr(item.get(field, "<unset>")))
  runs, names = [], set()
  for item in items:
    fields = [k for k in item if k not in ("config", "seed")]
    per_field = seen[item["config"]]
    run = Run(
      item["config"],
      int(item["seed"]),
      tuple(override(k, item[k]) for k in fields),
      tuple(k for k in fields if len(per_field[k]) > 1),
    )
    if (run.name, run.seed) in names:
      raise SystemExit(f"The study yields {run.name} seed {run.seed} twice.")
    names.add((run.name, run.seed))
    if pattern is None or re.search(pattern, run.name):
      runs.append(run)
  return runs


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def load_config(config_file: str, run: Run):
  """The resolved config of a run (the dataset config's `get_config(variant)` + overrides)."""
  path = os.path.join(ROOT, config_file) if not os.path.isabs(config_file) else config_file
  spec = importlib.util.spec_from_file_location("_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(run.variant)
  config.seed = run.seed
  for item in run.overrides:
    key, value = item.split("=", 1)
    *parents, field = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = _parse_value(value)
  return config


def command(
  config_file: str, program: Program | Run, root: str, python: str = "python"
) -> list[str]:
  """The `python -m gmg_jax.main` command line of a program (or of one run on its own)."""
  program = Program((program,)) if isinstance(program, Run) else program
  seeds, vary = program.seeds, program.vary
  multi = [f"--config.num_seeds={len(seeds)}"] if len(seeds) > 1 else []
  if vary:
    multi.append("--config.vary=" + ";".join(f"{f}={','.join(v)}" for f, v in vary.items()))
  return [
    python,
    "-m",
    "gmg_jax.main",
    f"--config={config_file}:{program.first.variant}",
    f"--workdir={program.workdir(root)}",
    f"--config.seed={seeds[0]}",
    *multi,
    *(f"--config.{o}" for o in program.first.overrides if o.split("=", 1)[0] not in vary),
  ]


def is_done(root: str, runs_dir: str | None, run: Run, num_steps: int) -> bool:
  """Whether the run has finished: its committed record (`records`) or its workdir says so."""
  if runs_dir and records.is_finished(runs_dir, run.name, run.seed, num_steps):
    return True
  return finished_dir(root, run, num_steps) is not None


def steps_of(config_file: str, runs: Sequence[Run]) -> dict[Run, int]:
  """{run: its train.num_steps}, each run's config resolved once."""
  return {run: load_config(config_file, run).train.num_steps for run in runs}


def record_finished(steps: Mapping[Run, int], root: str, runs_dir: str) -> list[str]:
  """Writes the record of every run of `steps` ({run: num_steps}, `steps_of`) that finished in a
  workdir under `root` and is not yet recorded."""
  written = []
  for run, num_steps in steps.items():
    if records.is_finished(runs_dir, run.name, run.seed, num_steps):
      continue
    where = finished_dir(root, run, num_steps)
    if where:
      written.append(records.write(runs_dir, run.name, run.seed, where, num_steps))
  return written


def finished_dir(root: str, run: Run, num_steps: int) -> str | None:
  """Where the run's finished evaluation is, in any layout `aggregate.run_dirs` reads."""
  found = [d for _, seed, d in aggregate.run_dirs(root, run.name) if seed == run.seed]
  return next((d for d in found if is_finished(d, num_steps)), None)


def is_finished(workdir: str, num_steps: int) -> bool:
  """Whether the run's latest evaluation (metrics.json) is at its final step."""
  path = os.path.join(workdir, "metrics.json")
  try:
    with open(path, encoding="utf-8") as f:
      return int(json.load(f).get("step", -1)) >= num_steps
  except (OSError, ValueError):
    return False


# Runs per K-run program on an accelerator. On a CPU every run is its own process: measured on 2
# cores (experiments/results/bench_runs/mlp32_cpu.md), programs of K = 8 (32x32 MLP) and K = 4
# (64x64 conv) give 0.74-0.87x the runs/hour of separate runs, since a replica's parameters,
# gradient and Adam moments no longer stay in the caches between its steps; on an H100 they give
# 3-6.6x (experiments/results/gpu/).
ACCELERATOR_REPLICAS = 8


def default_replicas_per_program() -> int:
  """`ACCELERATOR_REPLICAS` where the runs train on a GPU or TPU, 1 on a CPU.

  The backend is read in a subprocess: a JAX started in this process would hold the
  accelerator's memory while the runs train.
  """
  probe = subprocess.run(
    [sys.executable, "-c", "import jax; print(jax.default_backend())"],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
  )
  return 1 if probe.stdout.split()[-1] == "cpu" else ACCELERATOR_REPLICAS


def run_all(
  config_file: str,
  runs: Sequence[Run],
  root: str,
  max_replicas: int = 8,
  runs_dir: str | None = None,
) -> list[tuple[Run, str]]:
  """Runs the unfinished runs as K-run programs (`programs`), one after another in subprocesses
  (logs to `<program workdir>/train.log`); finished runs are skipped.

  Args:
    config_file: dataset config file (relative to the repository root or absolute).
    runs: the runs.
    root: study directory.
    max_replicas: most runs per program (1: every run its own process).
    runs_dir: where the runs' records go (`records`; a study's committed `runs/`): a run with a
      record there counts as finished, and each run that finishes gets one. None: no records.

  Returns:
    (run, status) with status "skipped", "done" or "failed (rc N)".
  """
  statuses = []
  todo = []
  steps = steps_of(config_file, runs)
  if runs_dir:  # Runs that finished in a workdir before their record could be written.
    record_finished(steps, root, runs_dir)
  for run in runs:
    if is_done(root, runs_dir, run, steps[run]):
      print(f"{run.name} seed {run.seed}: finished, skipped", flush=True)
      statuses.append((run, "skipped"))
    else:
      todo.append(run)
  planned = programs(todo, max_replicas)
  for index, program in enumerate(planned):
    workdir = program.workdir(root)
    num_steps = steps[program.first]
    seeds = [run.seed for run in program.runs]
    prefix = f"[{index + 1}/{len(planned)}] {program.first.name} seeds {seeds}"
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    with open(os.path.join(workdir, "train.log"), "a", encoding="utf-8") as log:
      rc = subprocess.call(
        command(config_file, program, root, sys.executable),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
      )
    for run, run_dir in zip(program.runs, program.run_dirs(root), strict=True):
      finished = is_finished(run_dir, num_steps)
      statuses.append((run, "done" if finished else f"failed (rc {rc})"))
      if finished and runs_dir:
        records.write(runs_dir, run.name, run.seed, run_dir, num_steps)
    done = sum(is_finished(d, num_steps) for d in program.run_dirs(root))
    print(
      f"{prefix}: {done}/{len(seeds)} done (rc {rc}) in {time.time() - start:.0f} s", flush=True
    )
  return statuses


def _seeds(text: str) -> list[int]:
  seeds: list[int] = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds.extend(range(int(lo), int(hi) + 1))
    elif part:
      seeds.append(int(part))
  return seeds


def _axis(text: str, allowed: Sequence[str]) -> list[str]:
  values = [v for v in text.split(",") if v]
  unknown = sorted(set(values) - set(allowed))
  if unknown:
    raise SystemExit(f"Unknown values {unknown}; choose from {list(allowed)}.")
  return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Command-line flags (see the module docstring)."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  mode = p.add_mutually_exclusive_group(required=True)
  mode.add_argument("--run", action="store_true", help="run here, one after another")
  mode.add_argument("--print", action="store_true", help="print one launch command per run")
  mode.add_argument("--list", action="store_true", help="print the runs and whether finished")
  mode.add_argument("--aggregate", action="store_true", help="only aggregate finished runs")
  p.add_argument("--config", default="configs/default.py", help="dataset config file")
  p.add_argument(
    "--study",
    default="",
    help="a study of experiments/studies.py (its runs replace the grid's flags): "
    + ", ".join(studies.STUDIES),
  )
  p.add_argument(
    "--name",
    default="",
    help="without --study: the directory of the grid's runs and results (default: the config "
    "file's stem)",
  )
  p.add_argument(
    "--root",
    default=os.environ.get("GMG_SWEEP_ROOT", "/tmp/gmg_sweeps"),
    help="directory holding <study>/<config>/seed_<S> workdirs",
  )
  p.add_argument(
    "--results",
    default=os.path.join(ROOT, "experiments", "results"),
    help="aggregated tables and plots go to <results>/<study>/",
  )
  p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-9")
  p.add_argument("--objectives", default=",".join(studies.OBJECTIVES))
  p.add_argument("--hfs", default="no,yes", help="no, yes or no,yes")
  p.add_argument("--regularizers", default="none,dst,gmg")
  p.add_argument("--costs", default=",".join(studies.COSTS))
  p.add_argument("--placements", default=",".join(studies.PLACEMENTS))
  p.add_argument("--filter", default=None, help="regex on the config name (variant with '+')")
  p.add_argument("--setting", default="", choices=["", *SETTINGS], help="named override bundle")
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="config override for every run (repeatable)",
  )
  p.add_argument(
    "--set_for",
    action="append",
    default=[],
    metavar="TOKEN:KEY=VALUE",
    help="config override for runs whose variant has TOKEN (repeatable)",
  )
  p.add_argument(
    "--replicas_per_program",
    type=int,
    default=None,
    metavar="K",
    help="runs trained as one vmapped program (1: a process per run); default: "
    f"{ACCELERATOR_REPLICAS} on a GPU/TPU, 1 on a CPU (default_replicas_per_program)",
  )
  p.add_argument("--no_aggregate", action="store_true", help="--run without aggregating")
  p.add_argument(
    "--traversals",
    type=int,
    default=0,
    metavar="N",
    help="with aggregation: latent traversals of the N best configurations",
  )
  args = p.parse_args(argv)
  if args.study and args.study not in studies.STUDIES:
    p.error(
      f"unknown study {args.study!r}; registered: {', '.join(studies.STUDIES)} "
      "(experiments/studies.py). To run a subset of the paper's grid, leave out --study and name "
      "its directory with --name."
    )
  if args.study and args.name:
    p.error(f"--name names a grid's runs; --study={args.study} has its own directory.")
  if args.study in studies.STUDIES:
    grid = ("seeds", "objectives", "hfs", "regularizers", "costs", "placements", "setting")
    changed = [f for f in (*grid, "set", "set_for") if getattr(args, f) != p.get_default(f)]
    if changed:
      p.error(
        f"--study={args.study} defines its runs (experiments/studies.py); drop "
        + ", ".join(f"--{f}" for f in changed)
        + " or define a new study."
      )
  return args


def runs_from_args(args: argparse.Namespace) -> list[Run]:
  """The runs the flags select: a registered study's, or the grid's."""
  if args.study in studies.STUDIES:
    return study_runs(studies.STUDIES[args.study], args.filter)
  hfs_values = {"no": False, "yes": True}
  variants = studies.grid_variants(
    objectives=_axis(args.objectives, studies.ALL_OBJECTIVES),
    hfs=[hfs_values[v] for v in _axis(args.hfs, tuple(hfs_values))],
    regularizers=_axis(args.regularizers, ("none", *studies.REGULARIZERS)),
    costs=_axis(args.costs, studies.COSTS),
    placements=_axis(args.placements, studies.PLACEMENTS),
  )
  overrides = (*SETTINGS.get(args.setting, ()), *args.set)
  overrides_for = []
  for item in args.set_for:
    token, sep, override = item.partition(":")
    if not sep or "=" not in override:
      raise SystemExit(f"--set_for needs TOKEN:KEY=VALUE, got {item!r}.")
    overrides_for.append((token, override))
  return expand(variants, _seeds(args.seeds), overrides, overrides_for, args.filter)


def _rows(root: str, out: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
  """(one row per run, one row per run and evaluation step, source) of a study: from its
  committed run records (`<out>/runs/`), else its workdirs under `root`, else its committed
  results.csv (a round-2 study whose workdirs are gone; no per-step rows)."""
  saved = records.read(os.path.join(out, "runs"))
  if saved:
    return records.final_rows(saved), records.step_rows(saved), "records"
  rows = aggregate.collect(root)
  if rows:
    return rows, [], "workdirs"
  committed = os.path.join(out, "results.csv")
  if os.path.exists(committed):
    print(f"No run records or workdirs of this study; reading {committed}.")
    return aggregate.read_csv(committed), [], "results.csv"
  return [], [], ""


def write_results(
  root: str, out: str, study: str, traversals: int = 0, config_file: str = "configs/default.py"
) -> None:
  """Tables and plots of a study's finished runs (recording each finished workdir's run first),
  its paired comparisons and the latent traversals of the `traversals` best configurations.

  A registered study's declared primary family is analysed only once every one of its runs has
  finished (its PLAN's rule: the analysis runs once); until then it prints how many have. The
  exploratory comparisons of a study without a primary family use the arms that have runs.
  """
  spec = studies.STUDIES.get(study)
  planned = steps_of(config_file, study_runs(spec)) if spec is not None else {}
  if planned:
    record_finished(planned, root, os.path.join(out, "runs"))
  rows, curves, source = _rows(root, out)
  if source in ("records", "workdirs"):
    aggregate.write_results(root, out, rows=rows, curves=curves)
  if spec is not None and rows:
    _write_comparisons(rows, curves, out, spec, planned)
  if traversals:
    aggregate.write_traversals(root, out, traversals)


def _write_comparisons(
  rows: list[dict[str, Any]],
  curves: list[dict[str, Any]],
  out: str,
  spec: studies.Study,
  planned: Mapping[Run, int],
) -> None:
  step_of = {(row["config"], int(row["seed"])): int(row["step"]) for row in rows}
  missing = [
    run for run, num_steps in planned.items() if step_of.get((run.name, run.seed), -1) < num_steps
  ]
  if spec.primary and missing:
    print(
      f"The primary analysis waits for every run of the study: {len(planned) - len(missing)} of "
      f"{len(planned)} finished. No paired tables until then (the study's declared rule)."
    )
    return
  evaluated = {row["config"] for row in rows}
  pairs = [(a, b) for a, b in spec.compare if a in evaluated and b in evaluated]
  for a, b in sorted(set(spec.compare) - set(pairs)):
    print(f"Not compared yet (an arm has no evaluated run): {a} vs {b}")
  if pairs or spec.primary:
    paired.write_paired(
      rows,
      out,
      primary=spec.primary,
      primary_metric=spec.primary_metric,
      exploratory=pairs,
      metrics=spec.metrics,
      declared=spec.declared,
      curves=curves,
    )


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  study = args.study or args.name or os.path.splitext(os.path.basename(args.config))[0]
  root = os.path.join(args.root, study)
  results = os.path.join(args.results, study)
  # A registered study's finished runs are recorded in its results (committed): they count as
  # done on any machine.
  runs_dir = os.path.join(results, "runs") if args.study else None
  if args.aggregate:
    write_results(root, results, study, args.traversals, args.config)
    return
  if args.replicas_per_program is None:
    args.replicas_per_program = default_replicas_per_program()
  if args.replicas_per_program < 1:
    raise SystemExit(f"--replicas_per_program={args.replicas_per_program}: must be >= 1.")
  runs = runs_from_args(args)
  if args.print:
    for program in programs(runs, args.replicas_per_program):
      # An absolute config path: the printed commands run from any directory.
      print(shlex.join(command(os.path.join(ROOT, args.config), program, root)))
    return
  if args.list:
    for run in runs:
      num_steps = load_config(args.config, run).train.num_steps
      where = finished_dir(root, run, num_steps) or (
        runs_dir
        and records.is_finished(runs_dir, run.name, run.seed, num_steps)
        and records.path(runs_dir, run.name, run.seed)
      )
      print(f"{'done' if where else 'todo'}  {run.name} seed {run.seed}  {where or ''}")
    print(f"{len(runs)} runs")
    return
  # Seed-major: a study stopped early has every configuration at the first seeds.
  print(f"{len(runs)} runs under {root}", flush=True)
  statuses = run_all(args.config, runs, root, args.replicas_per_program, runs_dir)
  failed = [run for run, status in statuses if status.startswith("failed")]
  if not args.no_aggregate:
    write_results(root, results, study, args.traversals, args.config)
  if failed:
    raise SystemExit(
      f"{len(failed)} runs failed; see the train.log of their program: "
      + ", ".join(f"{r.name} seed {r.seed}" for r in failed)
    )


if __name__ == "__main__":
  main()
