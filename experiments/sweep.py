r"""The GMG paper's grid of runs for one dataset config: expand, run (resumable), print, aggregate.

The grid (Uscidda et al. 2025): {beta_vae, beta_tcvae} x {without, with hfs} x ({none} +
{dst, gmg} x {l2, scl2, cos} x {encoder, decoder}) x seeds. "none" has no cost and no placement,
so one grid point per (objective, hfs): 2 * 2 * (1 + 12) = 52 configs per seed. Each run is a
config-string variant of the dataset config plus `--config.seed=S` and the extra overrides:

  # the full grid, one launch command per run (for a cluster scheduler)
  python experiments/sweep.py --config=configs/shapes3d.py --seeds=0-9 --print
  # a subset, run here one after another; finished runs are skipped, unfinished ones resume
  python experiments/sweep.py --config=configs/default.py --study=readme_cpu32 --setting=cpu32 \
      --objectives=beta_vae --hfs=no --placements=decoder --seeds=0,1,2 --run
  # every run's metrics.json -> experiments/results/<study>/{results.csv, results.md, *.png}
  python experiments/sweep.py --study=readme_cpu32 --aggregate --traversals=3

The seeds of one configuration train as one program (`--config.num_seeds=K`, gmg_jax/replicas.py:
K runs vmapped in one jitted step), at most `--replicas_per_program` (default 8) contiguous seeds
each; `--replicas_per_program=1` runs every seed as its own process. Run directories are
`<root>/<study>/<config name>/seeds_<lo>-<hi>/seed=<S>` (the replicas of a program) or
`<root>/<study>/<config name>/seed_<S>` (a program of one run), with the config name the variant
string with "," replaced by "+" (e.g. `beta_vae+gmg_cos_decoder`); aggregation reads the axes back
from that name. `--set KEY=VALUE` adds `--config.KEY=VALUE` to every run; `--set_for
TOKEN:KEY=VALUE` only to runs whose variant has the token (e.g. a per-cost regularizer weight:
`--set_for cos:regularizer.weight=500`). `--setting` names a bundle of overrides (`SETTINGS`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import aggregate  # noqa: E402  (experiments/ is not a package)

OBJECTIVES = ("beta_vae", "beta_tcvae")  # The paper's grid.
# Also selectable: the encoder-only objective (its regularizers go on the encoder only).
ALL_OBJECTIVES = (*OBJECTIVES, "decoder_free")
REGULARIZERS = ("dst", "gmg")
COSTS = ("l2", "scl2", "cos")
PLACEMENTS = ("encoder", "decoder")

# Named bundles of overrides. cpu32: the small CPU setting of the README's results (32x32 images,
# the MLP VAE, Adam 1e-3, 1000 steps, one evaluation at the end with the fast DCI and MIG on
# 2000 / 1000 points). On 2 shared CPU cores a step takes ~40 ms (~90 ms with GMG) and a run
# ~1.5-2.5 minutes including compilation and evaluation.
SETTINGS: dict[str, tuple[str, ...]] = {
  "cpu32": (
    "data.image_size=32",
    "model.arch=mlp",
    "model.mlp_hidden=(256,256)",
    "optim.learning_rate=0.001",
    "train.batch_size=64",
    "train.num_steps=1000",
    "train.log_every=50",
    "train.checkpoint_every=500",
    "train.progress_bar=False",
    "eval.every_steps=1000",
    "eval.metrics=('dci','mig')",
    "eval.mode=fast",
    "eval.num_train=2000",
    "eval.num_test=1000",
  ),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    variant: config-string variant, e.g. "beta_tcvae,hfs,gmg_cos_decoder".
    seed: value of `config.seed`.
    overrides: "KEY=VALUE" config overrides (without the `--config.` prefix), in order.
  """

  variant: str
  seed: int
  overrides: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    """Directory name of the configuration (seed excluded)."""
    return self.variant.replace(",", "+")

  def workdir(self, root: str) -> str:
    """The run's workdir under a study directory `root` when it is a program of its own."""
    return os.path.join(root, self.name, f"seed_{self.seed}")


@dataclasses.dataclass(frozen=True)
class Program:
  """Runs of one configuration with contiguous seeds, trained as one K-run program."""

  runs: tuple[Run, ...]

  @property
  def first(self) -> Run:
    return self.runs[0]

  def workdir(self, root: str) -> str:
    """`seed_<S>` for one run; `seeds_<lo>-<hi>` (replicas `seed=<S>` inside) for several."""
    if len(self.runs) == 1:
      return self.first.workdir(root)
    return os.path.join(root, self.first.name, f"seeds_{self.first.seed}-{self.runs[-1].seed}")

  def run_dirs(self, root: str) -> list[str]:
    """Where each run's outputs (metrics.json, ...) go, in the order of `runs`."""
    if len(self.runs) == 1:
      return [self.first.workdir(root)]
    return [os.path.join(self.workdir(root), f"seed={run.seed}") for run in self.runs]


def programs(runs: Sequence[Run], max_replicas: int) -> list[Program]:
  """Groups runs that differ only in their seed into programs of <= `max_replicas` contiguous
  seeds (first seed, then configuration order)."""
  groups: dict[tuple[str, tuple[str, ...]], list[Run]] = {}
  for run in runs:
    groups.setdefault((run.variant, run.overrides), []).append(run)
  found = []
  for group in groups.values():
    block: list[Run] = []
    for run in sorted(group, key=lambda r: r.seed):
      if block and (run.seed != block[-1].seed + 1 or len(block) == max_replicas):
        found.append(Program(tuple(block)))
        block = []
      block.append(run)
    found.append(Program(tuple(block)))
  order = {key: i for i, key in enumerate(groups)}
  return sorted(found, key=lambda p: (p.first.seed, order[(p.first.variant, p.first.overrides)]))


def grid_variants(
  objectives: Sequence[str] = OBJECTIVES,
  hfs: Sequence[bool] = (False, True),
  regularizers: Sequence[str] = ("none", *REGULARIZERS),
  costs: Sequence[str] = COSTS,
  placements: Sequence[str] = PLACEMENTS,
) -> list[str]:
  """Config-string variants of the paper's grid, deduplicated, in a stable order.

  Args:
    objectives: base objectives.
    hfs: whether to add the HFS term (False, True or both).
    regularizers: "none", "dst", "gmg".
    costs: costs of dst/gmg ("l2", "scl2", "cos"); ignored by "none".
    placements: "encoder" / "decoder"; ignored by "none".

  Returns:
    Variants such as "beta_vae", "beta_vae,hfs,dst_cos_decoder".
  """
  variants: list[str] = []
  for objective, with_hfs, regularizer in itertools.product(objectives, hfs, regularizers):
    base = [objective] + (["hfs"] if with_hfs else [])
    if regularizer == "none":
      tails = [[]]
    else:
      usable = [on for on in placements if objective != "decoder_free" or on == "encoder"]
      tails = [[f"{regularizer}_{cost}_{on}"] for cost in costs for on in usable]
    for tail in tails:
      variant = ",".join(base + tail)
      if variant not in variants:
        variants.append(variant)
  return variants


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
  for override in run.overrides:
    key, value = override.split("=", 1)
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
  run = program.first
  replicas = [f"--config.num_seeds={len(program.runs)}"] if len(program.runs) > 1 else []
  return [
    python,
    "-m",
    "gmg_jax.main",
    f"--config={config_file}:{run.variant}",
    f"--workdir={program.workdir(root)}",
    f"--config.seed={run.seed}",
    *replicas,
    *(f"--config.{o}" for o in run.overrides),
  ]


def finished_dir(root: str, run: Run, num_steps: int) -> str | None:
  """Where the run's finished evaluation is: its own `seed_<S>` or a program's `seed=<S>`."""
  config_dir = os.path.join(root, run.name)
  candidates = [run.workdir(root)]
  if os.path.isdir(config_dir):
    candidates += [
      os.path.join(config_dir, entry, f"seed={run.seed}")
      for entry in sorted(os.listdir(config_dir))
      if re.fullmatch(r"seeds_\d+-\d+", entry)
    ]
  return next((d for d in candidates if is_finished(d, num_steps)), None)


def is_finished(workdir: str, num_steps: int) -> bool:
  """Whether the run's latest evaluation (metrics.json) is at its final step."""
  path = os.path.join(workdir, "metrics.json")
  try:
    with open(path, encoding="utf-8") as f:
      return int(json.load(f).get("step", -1)) >= num_steps
  except (OSError, ValueError):
    return False


def run_all(
  config_file: str, runs: Sequence[Run], root: str, max_replicas: int = 8
) -> list[tuple[Run, str]]:
  """Runs the unfinished runs as K-run programs (`programs`), one after another in subprocesses
  (logs to `<program workdir>/train.log`); finished runs are skipped.

  Args:
    config_file: dataset config file (relative to the repository root or absolute).
    runs: the runs.
    root: study directory.
    max_replicas: most runs per program (1: every run its own process).

  Returns:
    (run, status) with status "skipped", "done" or "failed (rc N)".
  """
  statuses = []
  todo = []
  for run in runs:
    if finished_dir(root, run, load_config(config_file, run).train.num_steps):
      print(f"{run.name} seed {run.seed}: finished, skipped", flush=True)
      statuses.append((run, "skipped"))
    else:
      todo.append(run)
  planned = programs(todo, max_replicas)
  for index, program in enumerate(planned):
    workdir = program.workdir(root)
    num_steps = load_config(config_file, program.first).train.num_steps
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
      status = "done" if is_finished(run_dir, num_steps) else f"failed (rc {rc})"
      statuses.append((run, status))
    done = sum(is_finished(d, num_steps) for d in program.run_dirs(root))
    print(
      f"{prefix}: {done}/{len(seeds)} done (rc {rc}) in {time.time() - start:.0f} s", flush=True
    )
  return statuses


def write_traversals(
  root: str, out: str, top: int = 3, metric: str = "dci/disentanglement"
) -> list[str]:
  """Latent traversals of the best seed of the `top` configurations by mean `metric`.

  Args:
    root: study directory.
    out: output directory; writes `traversal_<config>.png` (rows: two images x latent dims,
      columns: the dim swept over -2..2 from the image's encoder mean).
    top: number of configurations.
    metric: ranking metric (flattened metrics.json key).

  Returns:
    The PNG paths written.
  """
  import jax
  import numpy as np
  from flax import nnx

  from gmg_jax import evaluate, viz

  rows = aggregate.collect(root)
  summary = [s for s in aggregate.summarize(rows, [metric]) if metric in s]
  summary.sort(key=lambda s: -s[metric][0])
  paths = []
  for entry in summary[:top]:
    best = max(
      (r for r in rows if r["config"] == entry["config"] and metric in r), key=lambda r: r[metric]
    )
    workdir = os.path.join(root, entry["config"], f"seed_{best['seed']}")
    _, graphdef, state, dataset = evaluate.load_run(workdir)
    vae = nnx.merge(graphdef, state.modules)[0]
    images, _ = dataset.sample_batch(jax.random.key(0), 2)
    mu, _ = jax.jit(vae.encode)(images)
    grid = viz.latent_traversal_grid(
      jax.jit(lambda z, vae=vae: jax.nn.sigmoid(vae.decode(z))), np.asarray(mu)
    )
    path = os.path.join(out, f"traversal_{entry['config']}.png")
    viz.save_png(path, grid)
    print(
      f"{entry['config']} (mean {metric} {entry[metric][0]:.3f}; seed {best['seed']}: "
      f"{best[metric]:.3f}) -> {path}"
    )
    paths.append(path)
  return paths


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
  p.add_argument("--study", default="", help="study name (default: the config file's stem)")
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
  p.add_argument("--objectives", default=",".join(OBJECTIVES))
  p.add_argument("--hfs", default="no,yes", help="no, yes or no,yes")
  p.add_argument("--regularizers", default="none,dst,gmg")
  p.add_argument("--costs", default=",".join(COSTS))
  p.add_argument("--placements", default=",".join(PLACEMENTS))
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
    default=8,
    metavar="K",
    help="seeds of one configuration trained as one vmapped program (1: a process per run)",
  )
  p.add_argument("--no_aggregate", action="store_true", help="--run without aggregating")
  p.add_argument(
    "--traversals",
    type=int,
    default=0,
    metavar="N",
    help="with aggregation: latent traversals of the N best configurations",
  )
  return p.parse_args(argv)


def runs_from_args(args: argparse.Namespace) -> list[Run]:
  """The runs the flags select."""
  hfs_values = {"no": False, "yes": True}
  variants = grid_variants(
    objectives=_axis(args.objectives, ALL_OBJECTIVES),
    hfs=[hfs_values[v] for v in _axis(args.hfs, tuple(hfs_values))],
    regularizers=_axis(args.regularizers, ("none", *REGULARIZERS)),
    costs=_axis(args.costs, COSTS),
    placements=_axis(args.placements, PLACEMENTS),
  )
  overrides = (*SETTINGS.get(args.setting, ()), *args.set)
  overrides_for = []
  for item in args.set_for:
    token, sep, override = item.partition(":")
    if not sep or "=" not in override:
      raise SystemExit(f"--set_for needs TOKEN:KEY=VALUE, got {item!r}.")
    overrides_for.append((token, override))
  return expand(variants, _seeds(args.seeds), overrides, overrides_for, args.filter)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  study = args.study or os.path.splitext(os.path.basename(args.config))[0]
  root = os.path.join(args.root, study)
  results = os.path.join(args.results, study)
  if args.aggregate:
    aggregate.write_results(root, results)
    if args.traversals:
      write_traversals(root, results, args.traversals)
    return
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
      where = finished_dir(root, run, load_config(args.config, run).train.num_steps)
      print(f"{'done' if where else 'todo'}  {where or run.workdir(root)}")
    print(f"{len(runs)} runs")
    return
  # Seed-major: a study stopped early has every configuration at the first seeds.
  print(f"{len(runs)} runs under {root}", flush=True)
  statuses = run_all(args.config, runs, root, args.replicas_per_program)
  failed = [run for run, status in statuses if status.startswith("failed")]
  if not args.no_aggregate:
    aggregate.write_results(root, results)
    if args.traversals:
      write_traversals(root, results, args.traversals)
  if failed:
    raise SystemExit(
      f"{len(failed)} runs failed; see the train.log of their program: "
      + ", ".join(f"{r.name} seed {r.seed}" for r in failed)
    )


if __name__ == "__main__":
  main()
