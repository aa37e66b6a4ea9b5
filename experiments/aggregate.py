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
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Columns of results.md and the plots, in this order, when present.
MAIN_METRICS = (
  "dci/disentanglement",
  "dci/completeness",
  "dci/informativeness_test",
  "mig/discrete_mig",
  "sap/sap",
  "modularity_explicitness/modularity",
)
TRAIN_COLUMNS = ("train/reconstruction", "train/regularizer/gmg_identity_won")
PLOT_METRICS = ("dci/disentanglement", "mig/discrete_mig")
_REGULARIZER = re.compile(
  r"^(dst|gmg)_(l2|scl2|cos)_(encoder|decoder)$|^(jacobian)_(encoder|decoder)$"
)


def parse_name(name: str) -> dict[str, str]:
  """Axes of a config name such as "beta_tcvae+hfs+gmg_cos_decoder".

  Args:
    name: config-string variant with "+" (or ",") between tokens.

  Returns:
    {"config", "objective", "hfs" ("yes"/"no"), "regularizer", "cost", "placement"}; cost and
    placement are "-" where they do not apply.
  """
  tokens = [t for t in re.split(r"[+,]", name) if t]
  axes = {
    "config": name.replace(",", "+"),
    "objective": tokens[0] if tokens else "",
    "hfs": "yes" if "hfs" in tokens else "no",
    "regularizer": "none",
    "cost": "-",
    "placement": "-",
  }
  for token in tokens[1:]:
    match = _REGULARIZER.match(token)
    if match and match.group(1):
      axes.update(regularizer=match.group(1), cost=match.group(2), placement=match.group(3))
    elif match:
      axes.update(regularizer=match.group(4), placement=match.group(5))
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


def _train_diagnostics(path: str) -> dict[str, float]:
  records = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          continue  # A line cut by a kill.
  if not records:
    return {}
  out = {
    f"train/{k}": float(records[-1][k])
    for k in ("reconstruction", "kl", "loss")
    if k in records[-1]
  }
  keys = sorted({k for r in records for k in r if k.startswith("regularizer/")})
  for key in keys:
    values = [float(r[key]) for r in records if key in r]
    out[f"train/{key}"] = float(np.mean(values))
  return out


def collect(root: str) -> list[dict[str, Any]]:
  """One row per run directory `<root>/<config>/seed_<S>` that has a metrics.json.

  Args:
    root: study directory.

  Returns:
    Rows with the axes of `parse_name`, "seed", "step", the flattened metrics and the training
    diagnostics; sorted by config then seed.
  """
  rows = []
  if not os.path.isdir(root):
    return rows
  for name in sorted(os.listdir(root)):
    config_dir = os.path.join(root, name)
    if not os.path.isdir(config_dir):
      continue
    for seed_dir in sorted(os.listdir(config_dir)):
      match = re.fullmatch(r"seed_(\d+)", seed_dir)
      path = os.path.join(config_dir, seed_dir, "metrics.json")
      if not match or not os.path.exists(path):
        continue
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      row: dict[str, Any] = {
        **parse_name(name),
        "seed": int(match.group(1)),
        "step": int(record.get("step", -1)),
      }
      row.update(flatten({k: v for k, v in record.items() if k not in ("step", "sources")}))
      row.update(_train_diagnostics(os.path.join(config_dir, seed_dir, "metrics.jsonl")))
      rows.append(row)
  rows.sort(key=lambda r: (r["config"], r["seed"]))
  return rows


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
    entry: dict[str, Any] = {
      k: members[0][k] for k in ("config", "objective", "hfs", "regularizer", "cost", "placement")
    }
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
  header = ["objective", "hfs", "regularizer", "cost", "placement", "seeds", *metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for entry in summary:
    cells = [str(entry[k]) for k in ("objective", "hfs", "regularizer", "cost", "placement")]
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


def plot_metric(rows: Sequence[Mapping[str, Any]], metric: str, path: str) -> None:
  """Bar plot of one metric: mean over seeds per configuration, std error bars, seed dots."""
  from matplotlib.figure import Figure

  summary = [s for s in summarize(rows, [metric]) if metric in s]
  if not summary:
    return
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


def write_results(root: str, out: str, metrics: Sequence[str] | None = None) -> list[dict]:
  """Collects the runs under `root` and writes results.csv, results.md and PNG plots to `out`.

  Args:
    root: study directory (`<root>/<config>/seed_<S>/metrics.json`).
    out: output directory (created).
    metrics: table columns (default: `MAIN_METRICS` + `TRAIN_COLUMNS` that are present).

  Returns:
    The summary rows (see `summarize`).
  """
  rows = collect(root)
  if not rows:
    print(f"No finished runs (metrics.json) under {root}; nothing aggregated.")
    return []
  present = {k for r in rows for k in r}
  if metrics is None:
    metrics = [m for m in (*MAIN_METRICS, *TRAIN_COLUMNS) if m in present]
  os.makedirs(out, exist_ok=True)
  write_csv(rows, os.path.join(out, "results.csv"))
  summary = summarize(rows, metrics)
  table = markdown_table(summary, metrics)
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(f"{len(rows)} runs from `{root}`; mean ± std (ddof = 1) over seeds.\n\n{table}")
  for metric in PLOT_METRICS:
    if metric in present:
      plot_metric(rows, metric, os.path.join(out, metric.replace("/", "_") + ".png"))
  print(table)
  print(f"Wrote {out}/results.csv, results.md and plots ({len(rows)} runs).")
  return summary


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--root", required=True, help="study directory of the runs")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--metrics", default="", help="comma-separated columns (default: main)")
  args = parser.parse_args(argv)
  write_results(args.root, args.out, [m for m in args.metrics.split(",") if m] or None)


if __name__ == "__main__":
  main()
