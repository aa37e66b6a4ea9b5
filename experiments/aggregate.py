r"""Aggregates a sweep's runs into a CSV, a markdown table (mean ± std over seeds) and bar plots.

  python experiments/aggregate.py --root=/tmp/gmg_sweeps/readme_cpu32 \
      --out=experiments/results/readme_cpu32

Reads `<root>/<config name>/seed_<S>/metrics.json` (the latest evaluation of each run, see
gmg_jax.evaluate) and, where present, `metrics.jsonl` (training logs). The config name is the
config-string variant with "+" for "," (experiments/sweep.py), so the objective, HFS,
regularizer, cost and placement are read back from it. Writes, in `--out`:

* `results.csv`: one row per run: axes, seed, step, every metric (flattened "dci/disentanglement")
  and training diagnostics ("train/reconstruction" at the last log, "train/regularizer/..."
  averaged over the run's logs).
* `results.md`: one row per configuration: number of seeds and mean ± std (sample std, ddof = 1)
  over seeds of the main metrics.
* `<metric>.png`: a bar per configuration (mean, std error bar, one dot per seed).

Paired comparison of arms run over the same seeds (instead of the above; `experiments/paired.py`):

  python experiments/aggregate.py --root=/tmp/gmg_sweeps/readme_cpu32 \
      --out=experiments/results/readme_cpu32 \
      --primary=beta_vae+gmg_cos_decoder:beta_vae [--primary_metric=dci/disentanglement] \
      --compare=beta_vae+dst_cos_decoder:beta_vae [--metrics=dci/disentanglement,mig/discrete_mig]

pairs the runs of A and B by seed and writes, in `--out`, `paired.md` and `paired.csv`: the
primary family (paired t interval, p, Holm-adjusted p, minimal detectable effect, verdict) and
the exploratory comparisons (interval and raw p, no verdict), and `paired_<A>_vs_<B>.png`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import paired

from gmg_jax import config as config_lib
from gmg_jax.atomic import atomic_write

# Columns of results.md and the plots, in this order, when present.
MAIN_METRICS = (
  "dci/disentanglement",
  "dci/completeness",
  "dci/informativeness_test",
  "mig/discrete_mig",
  "sap/sap",
  "modularity_explicitness/modularity",
)
# The trainer's train_summary.json medians of the regularizer's output-gradient diagnostics.
GRADIENT_SUMMARY = (
  "median_regularizer_share",
  "median_regularizer_to_distortion",
  "median_cosine_to_distortion",
)
TRAIN_COLUMNS = (
  "train/reconstruction",
  *(f"train/{k}" for k in GRADIENT_SUMMARY),
  "train/regularizer/gmg_identity_won",
)
PLOT_METRICS = paired.PLOT_METRICS
# Panels of the learning curves (`plot_curves`).
CURVE_METRICS = ("dci/disentanglement", "dci/informativeness_test", "mig/discrete_mig")


_AXES = ("objective", "hfs", "regularizer", "cost", "placement", "values")


def parse_name(name: str) -> dict[str, str]:
  """Axes of a config name such as "beta_tcvae+hfs+gmg_cos_decoder".

  Args:
    name: config-string variant with "+" (or ",") between tokens.

  Returns:
    {"config", "objective", "hfs" ("yes"/"no"), "regularizer", "cost", "placement", "values"
    (the study's axes, e.g. "epsilon_0=0.1,weight=500")}; "-" where one does not apply.
  """
  tokens = [t for t in re.split(r"[+,]", name) if t]
  axes = {
    "config": name.replace(",", "+"),
    "objective": tokens[0] if tokens else "",
    "hfs": "yes" if "hfs" in tokens else "no",
    "regularizer": "none",
    "cost": "-",
    "placement": "-",
    "values": ",".join(t for t in tokens if "=" in t) or "-",
  }
  for token in tokens[1:]:
    variant = config_lib.regularizer_variant(token)  # The config's variant grammar.
    if variant is not None:
      regularizer, cost, placement = variant
      axes.update(regularizer=regularizer, cost=cost or "-", placement=placement)
  return axes


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Numeric leaves of a nested dict, keys joined with "/" (booleans become 0/1)."""
  flat: dict[str, float] = {}
  for key, value in record.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{name}/"))
    elif isinstance(value, (bool, int, float, np.number)):
      flat[name] = float(value)
  return flat


def train_diagnostics(run_dir: str) -> dict[str, float]:
  """Last logged loss terms, mean regularizer logs, and the train_summary.json gradient medians."""
  out = {}
  summary = os.path.join(run_dir, "train_summary.json")
  if os.path.exists(summary):
    with open(summary, encoding="utf-8") as f:
      out = {f"train/{k}": float(v) for k, v in json.load(f).items() if k in GRADIENT_SUMMARY}
  path = os.path.join(run_dir, "metrics.jsonl")
  records = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          continue  # A line cut by a kill.
  if not records:
    return out
  out.update(
    (f"train/{k}", float(records[-1][k]))
    for k in ("reconstruction", "kl", "loss")
    if k in records[-1]
  )
  keys = sorted({k for r in records for k in r if k.startswith("regularizer/")})
  for key in keys:
    values = [float(r[key]) for r in records if key in r]
    out[f"train/{key}"] = float(np.mean(values))
  return out


def config_name(*parts: str) -> str:
  """The config name of joined name parts: the variant's tokens in order, then the "FIELD=VALUE"
  tokens of its study's axes sorted (so a program's directory plus its replica's values name
  the same configuration as the run on its own)."""
  tokens = [t for part in parts for t in re.split(r"[+,]", part) if t]
  return "+".join([t for t in tokens if "=" not in t] + sorted(t for t in tokens if "=" in t))


def run_dirs(root: str, name: str | None = None) -> list[tuple[str, int, str]]:
  """(config name, seed, directory) of every run under a study directory `root`, in each layout
  `experiments/sweep.py` writes: `<config>/seed_<S>` (a program of one run) and
  `<dir>/seeds_<lo>-<hi>/<replica>` (a K-run program's replica, named "seed=<S>" or
  "weight=100,seed=<S>": its varied values join the directory's name). `name` keeps one config.
  """
  found = []
  if not os.path.isdir(root):
    return found
  for entry in sorted(os.listdir(root)):
    config_dir = os.path.join(root, entry)
    if not os.path.isdir(config_dir):
      continue
    for sub in sorted(os.listdir(config_dir)):
      if match := re.fullmatch(r"seed_(\d+)", sub):
        found.append((config_name(entry), int(match.group(1)), os.path.join(config_dir, sub)))
      elif re.fullmatch(r"seeds_\d+-\d+", sub) and os.path.isdir(os.path.join(config_dir, sub)):
        for replica in sorted(os.listdir(os.path.join(config_dir, sub))):
          if match := re.fullmatch(r"((?:[^,=]+=[^,=]+,)*)seed=(\d+)", replica):
            values = match.group(1).rstrip(",").replace(",", "+")
            path = os.path.join(config_dir, sub, replica)
            found.append((config_name(entry, values), int(match.group(2)), path))
  return [run for run in found if name is None or run[0] == name]


def collect(root: str) -> list[dict[str, Any]]:
  """One row per run directory (`run_dirs`) that has a metrics.json.

  Args:
    root: study directory.

  Returns:
    Rows with the axes of `parse_name`, "seed", "step", the flattened metrics and the training
    diagnostics; sorted by config then seed.
  """
  rows = []
  for name, seed, run_dir in run_dirs(root):
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    row: dict[str, Any] = {**parse_name(name), "seed": seed, "step": int(record.get("step", -1))}
    row.update(flatten({k: v for k, v in record.items() if k not in ("step", "sources")}))
    row.update(train_diagnostics(run_dir))
    rows.append(row)
  # A seed evaluated in two places (a run of its own stopped midway, then finished as a program's
  # replica) counts once, at its latest step.
  latest: dict[tuple[str, int], dict[str, Any]] = {}
  for row in rows:
    key = (row["config"], row["seed"])
    if key not in latest or row["step"] > latest[key]["step"]:
      latest[key] = row
  return sorted(latest.values(), key=lambda r: (r["config"], r["seed"]))


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
  """Mean and sample std (ddof = 1; NaN for one seed) over seeds per configuration.

  Args:
    rows: rows of `collect`.
    metrics: metric columns to summarize (missing values are skipped).

  Returns:
    One dict per configuration (first-seen order): the axes, "n" (number of seeds), and for each
    metric `"<m>"`: (mean, std, count).
  """
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row["config"], []).append(row)
  summary = []
  for members in groups.values():
    entry: dict[str, Any] = {"config": members[0]["config"]}
    entry.update({k: members[0].get(k, "-") for k in _AXES})
    entry["n"] = len(members)
    entry["seeds"] = sorted(int(m["seed"]) for m in members)
    for metric in metrics:
      values = np.array(
        [m[metric] for m in members if metric in m and m[metric] == m[metric]], dtype=np.float64
      )
      if values.size:
        std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
        entry[metric] = (float(np.mean(values)), std, int(values.size))
    summary.append(entry)
  return summary


def format_cell(cell: tuple[float, float, int] | None) -> str:
  if cell is None:
    return ""
  mean, std, _ = cell
  return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
  """Markdown table of `summarize`'s output: axes, seeds, mean ± std per metric."""
  header = [*_AXES, "seeds", *metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for entry in summary:
    cells = [str(entry[k]) for k in _AXES]
    cells.append(str(entry["n"]))
    cells += [format_cell(entry.get(m)) for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
  """All rows with the union of their columns (axes first, then sorted metric names)."""
  fixed = ["config", "objective", "hfs", "regularizer", "cost", "placement", "seed", "step"]
  extra = sorted({k for r in rows for k in r} - set(fixed))
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=fixed + extra)
    writer.writeheader()
    for row in rows:
      writer.writerow(row)


def read_csv(path: str) -> list[dict[str, Any]]:
  """The rows of a results.csv `write_csv` wrote: numbers as floats ("seed" and "step" as ints),
  empty cells dropped, other text (the axes) kept."""
  rows = []
  with open(path, newline="", encoding="utf-8") as f:
    for raw in csv.DictReader(f):
      row: dict[str, Any] = {}
      for key, text in raw.items():
        if text == "":
          continue
        try:
          row[key] = int(text) if key in ("seed", "step") else float(text)
        except ValueError:
          row[key] = text
      rows.append(row)
  return rows


def plot_metric(rows: Sequence[Mapping[str, Any]], metric: str, path: str):
  """Bar plot of one metric: mean over seeds per configuration, std error bars, seed dots.

  Returns:
    The figure written to `path` (a PNG), or None when no row has the metric.
  """
  from matplotlib.figure import Figure

  summary = [s for s in summarize(rows, [metric]) if metric in s]
  if not summary:
    return None
  colors = {"none": "tab:gray", "dst": "tab:orange", "gmg": "tab:blue", "jacobian": "tab:green"}
  figure = Figure(figsize=(max(4.0, 0.6 * len(summary) + 1.5), 4.0), layout="constrained")
  ax = figure.subplots()
  for i, entry in enumerate(summary):
    mean, std, _ = entry[metric]
    ax.bar(
      i,
      mean,
      yerr=0.0 if math.isnan(std) else std,
      capsize=3,
      color=colors.get(entry["regularizer"], "tab:purple"),
      alpha=0.8,
    )
    values = [r[metric] for r in rows if r["config"] == entry["config"] and metric in r]
    ax.plot([i] * len(values), values, "k.", markersize=4)
  ax.set_xticks(range(len(summary)))
  ax.set_xticklabels([s["config"] for s in summary], rotation=60, ha="right", fontsize=7)
  ax.set_ylabel(metric)
  ax.set_title(f"{metric} (mean ± std over seeds; dots: seeds)", fontsize=9)
  figure.savefig(path, dpi=110)
  return figure


def curve_summary(
  rows: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, tuple[list[int], np.ndarray]]:
  """{config: (evaluation steps, [steps, 3] 25th / 50th / 75th percentiles over seeds)} of
  `metric` in per-step rows (numpy's linear interpolation between seeds)."""
  found = {}
  for config in dict.fromkeys(r["config"] for r in rows):
    members = [r for r in rows if r["config"] == config and metric in r]
    steps = sorted({int(r["step"]) for r in members})
    if steps:
      values = [[float(r[metric]) for r in members if int(r["step"]) == s] for s in steps]
      found[config] = (steps, np.array([np.percentile(v, (25, 50, 75)) for v in values]))
  return found


def plot_curves(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: str) -> bool:
  """Learning curves: per metric a panel, per configuration its median over seeds at each
  evaluation step and the band between the 25th and 75th percentiles (thin: each seed).

  Args:
    rows: one row per (run, evaluation step) (`records.step_rows`).
    metrics: the panels' metric columns (absent ones are skipped).
    path: the PNG to write (atomically).

  Returns:
    Whether a figure was written (False when no row has a metric).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  metrics = [m for m in metrics if any(m in r for r in rows)]
  if not metrics:
    return False
  configs = list(dict.fromkeys(r["config"] for r in rows))  # Stable colours across panels.
  figure = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(metrics), squeeze=False)[0]
  for ax, metric in zip(axes, metrics, strict=True):
    summary = curve_summary(rows, metric)
    for index, config in enumerate(configs):
      if config not in summary:
        continue
      color = f"C{index}"
      by_seed: dict[int, list[tuple[int, float]]] = {}
      for r in rows:
        if r["config"] == config and metric in r:
          by_seed.setdefault(int(r["seed"]), []).append((int(r["step"]), float(r[metric])))
      for points in by_seed.values():
        seed_steps, values = zip(*sorted(points), strict=True)
        ax.plot(seed_steps, values, color=color, alpha=0.12, lw=0.6)
      steps, bands = summary[config]
      low, median, high = bands.T
      ax.fill_between(steps, low, high, color=color, alpha=0.25, lw=0)
      ax.plot(steps, median, "o-", color=color, lw=1.6, ms=3, label=f"{config} ({len(by_seed)})")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
  axes[0].legend(fontsize=6, title="config (seeds)", title_fontsize=6)
  figure.suptitle("median over seeds; band: 25th-75th percentile; thin lines: seeds", fontsize=9)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  atomic_write(path, lambda f: f.write(buffer.getvalue()), text=False)
  return True


def write_results(
  root: str,
  out: str,
  metrics: Sequence[str] | None = None,
  rows: Sequence[Mapping[str, Any]] | None = None,
  curves: Sequence[Mapping[str, Any]] = (),
) -> list[dict]:
  """Writes results.csv, results.md and PNG plots of a study's runs to `out`.

  Args:
    root: study directory (`<root>/<config>/seed_<S>/metrics.json`), read when `rows` is None.
    out: output directory (created).
    metrics: table columns (default: `MAIN_METRICS` + `TRAIN_COLUMNS` that are present).
    rows: one row per run (e.g. `records.final_rows`), instead of reading `root`.
    curves: one row per (run, evaluation step) (`records.step_rows`): results.csv then holds
      these rows, and `learning_curves.png` is drawn from them.

  Returns:
    The summary rows (see `summarize`).
  """
  rows = collect(root) if rows is None else list(rows)
  if not rows:
    print(f"No finished runs under {root}; nothing aggregated.")
    return []
  present = {k for r in rows for k in r}
  if metrics is None:
    metrics = [m for m in (*MAIN_METRICS, *TRAIN_COLUMNS) if m in present]
  os.makedirs(out, exist_ok=True)
  write_csv(
    _with_final_diagnostics(curves, rows) if curves else rows, os.path.join(out, "results.csv")
  )
  summary = summarize(rows, metrics)
  table = markdown_table(summary, metrics)
  source = "committed run records" if curves else f"`{root}`"
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(f"{len(rows)} runs from {source}; mean ± std (ddof = 1) over seeds.\n\n{table}")
  for metric in PLOT_METRICS:
    if metric in present:
      plot_metric(rows, metric, os.path.join(out, metric.replace("/", "_") + ".png"))
  if curves:
    plot_curves(curves, CURVE_METRICS, os.path.join(out, "learning_curves.png"))
  print(table)
  print(f"Wrote {out}/results.csv, results.md and plots ({len(rows)} runs).")
  return summary


def _with_final_diagnostics(
  curves: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
  """Per-step rows, each with its run's training diagnostics (the "train/..." columns)."""
  train = {
    (r["config"], r["seed"]): {k: v for k, v in r.items() if k.startswith("train/")} for r in rows
  }
  return [{**row, **train.get((row["config"], row["seed"]), {})} for row in curves]


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

  from gmg_jax import saved_runs, viz

  rows = collect(root)
  summary = [s for s in summarize(rows, [metric]) if metric in s]
  summary.sort(key=lambda s: -s[metric][0])
  paths = []
  for entry in summary[:top]:
    best = max(
      (r for r in rows if r["config"] == entry["config"] and metric in r), key=lambda r: r[metric]
    )
    workdir = next(d for _, s, d in run_dirs(root, entry["config"]) if s == best["seed"])
    _, graphdef, state, dataset = saved_runs.load_run(workdir)
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


def _parse_pairs(text: str) -> list[tuple[str, str]]:
  """Parses "A:B,C:D" into [("A", "B"), ("C", "D")]."""
  pairs = []
  for item in filter(None, text.split(",")):
    a, sep, b = item.partition(":")
    if not (sep and a and b) or ":" in b:
      raise ValueError(f"--compare wants A:B[,C:D...]; got {item!r}.")
    pairs.append((a, b))
  if not pairs:
    raise ValueError("--compare names no pair.")
  return pairs


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--root", required=True, help="study directory of the runs")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--metrics", default="", help="comma-separated columns (default: main)")
  parser.add_argument(
    "--primary",
    default="",
    help="A:B[,C:D...]: the declared primary family (<= 4 pairs), on --primary_metric, "
    "Holm-adjusted, with verdicts",
  )
  parser.add_argument("--primary_metric", default="dci/disentanglement")
  parser.add_argument(
    "--compare",
    default="",
    help="A:B[,C:D...]: exploratory paired comparisons of config names by seed (default "
    "metrics: " + ", ".join(PLOT_METRICS) + "), instead of results.*",
  )
  args = parser.parse_args(argv)
  metrics = [m for m in args.metrics.split(",") if m]
  if not (args.compare or args.primary):
    write_results(args.root, args.out, metrics or None)
    return
  try:
    primary = _parse_pairs(args.primary) if args.primary else []
    if len(primary) > paired.MAX_PRIMARY:
      raise ValueError(
        f"--primary names {len(primary)} pairs; a family has at most {paired.MAX_PRIMARY}."
      )
    paired.write_paired(
      collect(args.root),
      args.out,
      primary=primary,
      primary_metric=args.primary_metric,
      exploratory=_parse_pairs(args.compare) if args.compare else [],
      metrics=metrics or PLOT_METRICS,
      declared="on the command line",
    )
  except ValueError as e:
    parser.error(f"{e} (root: {args.root})")


if __name__ == "__main__":
  main()
