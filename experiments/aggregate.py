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

Paired comparison of arms run over the same seeds (instead of the above):

  python experiments/aggregate.py --root=/tmp/gmg_sweeps/readme_cpu32 \
      --out=experiments/results/readme_cpu32 \
      --compare=beta_vae+dst_cos_decoder:beta_vae,beta_vae+gmg_cos_decoder:beta_vae \
      [--metrics=dci/disentanglement,mig/discrete_mig]

pairs the runs of A and B by seed and writes, in `--out`, `paired.md` and `paired.csv` (per pair
and metric: seeds, means, mean paired difference A - B, its percentile bootstrap CI and a verdict)
and `paired_<A>_vs_<B>.png` (per-seed lines from A to B, the mean difference with its CI).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import tempfile
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
PLOT_METRICS = ("dci/disentanglement", "mig/discrete_mig")
_REGULARIZER = re.compile(
  r"^(dst|gmg)_(l2|scl2|cos)_(encoder|decoder)$|^(jacobian)_(encoder|decoder)$"
)


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


def _train_diagnostics(run_dir: str) -> dict[str, float]:
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
    row.update(_train_diagnostics(run_dir))
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


def _write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it over `path`."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """One metric of arm A against arm B over the seeds both arms ran.

  Attributes:
    metric: the metric column compared.
    arm_a: config name of A.
    arm_b: config name of B.
    seeds: [n] seeds present in both arms (sorted).
    unpaired_seeds: seeds run by one arm or both but not paired: absent from, or NaN in, the
      other arm or both (dropped).
    values_a: [n] A's metric per paired seed.
    values_b: [n] B's metric per paired seed.
    differences: [n] A - B per paired seed.
    mean_diff: mean of `differences`.
    ci: (low, high) percentile bootstrap interval of the mean difference (NaN for n < 2).
    confidence: coverage of `ci`, e.g. 0.95.
    verdict: "a > b" if the interval is above 0, "a < b" if below, else "not resolved".
  """

  metric: str
  arm_a: str
  arm_b: str
  seeds: tuple[int, ...]
  unpaired_seeds: tuple[int, ...]
  values_a: np.ndarray
  values_b: np.ndarray
  differences: np.ndarray
  mean_diff: float
  ci: tuple[float, float]
  confidence: float
  verdict: str

  @property
  def n(self) -> int:
    return len(self.seeds)


def _metric_key(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
  """`metric`, or its "/"-flattened spelling ("dci.disentanglement" -> "dci/disentanglement")."""
  for key in (metric, metric.replace(".", "/")):
    if any(key in r for r in rows):
      return key
  raise ValueError(f"No run has the metric {metric!r}.")


def _arm_values(rows: Sequence[Mapping[str, Any]], arm: str, metric: str) -> dict[int, float]:
  """{seed: value} of one arm's runs where `metric` is present and not NaN."""
  values: dict[int, float] = {}
  for row in rows:
    if row["config"] != arm:
      continue
    seed = int(row["seed"])
    if seed in values:
      raise ValueError(f"Arm {arm!r} has two runs with seed {seed}.")
    if metric in row and row[metric] == row[metric]:
      values[seed] = float(row[metric])
  return values


def paired_differences(
  rows: Sequence[Mapping[str, Any]],
  metric: str,
  arm_a: str,
  arm_b: str,
  *,
  num_bootstrap: int = 10_000,
  confidence: float = 0.95,
  seed: int = 0,
) -> PairedDifference:
  """Mean paired difference A - B of `metric` over shared seeds, with a bootstrap interval.

  The interval resamples the n per-seed differences with replacement `num_bootstrap` times
  (`np.random.default_rng(seed).integers(0, n, size=(num_bootstrap, n))`) and takes the
  (1 - confidence) / 2 and (1 + confidence) / 2 percentiles (numpy's linear interpolation) of the
  resampled means. With few seeds it covers less than `confidence` (with 3 seeds, all three
  differences positive already puts it above 0), so read a verdict with n in view.

  Args:
    rows: rows of `collect` ("config", "seed" and metric columns).
    metric: metric column; "dci.disentanglement" is read as "dci/disentanglement".
    arm_a: config name of A.
    arm_b: config name of B.
    num_bootstrap: number of resamples.
    confidence: coverage of the interval, in (0, 1).
    seed: seed of the resampling generator.

  Returns:
    The comparison (see `PairedDifference`).

  Raises:
    ValueError: an arm has no runs (the message lists the configs present), or the arms share no
      seed with the metric.
  """
  if not 0.0 < confidence < 1.0 or num_bootstrap < 1:
    raise ValueError(
      f"Need 0 < confidence < 1 and num_bootstrap >= 1: {confidence}, {num_bootstrap}."
    )
  present = sorted({r["config"] for r in rows})
  for arm in (arm_a, arm_b):
    if arm not in present:
      raise ValueError(f"Arm {arm!r} has no runs; configs present: {', '.join(present)}.")
  metric = _metric_key(rows, metric)
  by_seed_a = _arm_values(rows, arm_a, metric)
  by_seed_b = _arm_values(rows, arm_b, metric)
  seeds = tuple(sorted(by_seed_a.keys() & by_seed_b.keys()))
  ran = {int(r["seed"]) for r in rows if r["config"] in (arm_a, arm_b)}
  if not seeds:
    raise ValueError(
      f"Arms {arm_a!r} (seeds {sorted(by_seed_a)}) and {arm_b!r} (seeds {sorted(by_seed_b)}) "
      f"share no seed with {metric!r}; configs present: {', '.join(present)}."
    )
  values_a = np.array([by_seed_a[s] for s in seeds])
  values_b = np.array([by_seed_b[s] for s in seeds])
  differences = values_a - values_b
  n = len(seeds)
  ci = (math.nan, math.nan)
  verdict = "not resolved"
  if n >= 2:
    index_BxN = np.random.default_rng(seed).integers(0, n, size=(num_bootstrap, n))
    means_B = differences[index_BxN].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means_B, [tail, 100.0 - tail])
    ci = (float(low), float(high))
    verdict = "a > b" if low > 0 else "a < b" if high < 0 else "not resolved"
  return PairedDifference(
    metric=metric,
    arm_a=arm_a,
    arm_b=arm_b,
    seeds=seeds,
    unpaired_seeds=tuple(sorted(ran - set(seeds))),
    values_a=values_a,
    values_b=values_b,
    differences=differences,
    mean_diff=float(np.mean(differences)),
    ci=ci,
    confidence=confidence,
    verdict=verdict,
  )


def paired_table(comparisons: Sequence[PairedDifference]) -> str:
  """Markdown table, one line per comparison; means are over the paired seeds only."""
  level = f"{comparisons[0].confidence:.0%}" if comparisons else "95%"
  header = "A|B|metric|n seeds|mean A|mean B|mean diff".split("|") + [f"{level} CI", "verdict"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for c in comparisons:
    n = f"{c.n} ({len(c.unpaired_seeds)} unpaired dropped)" if c.unpaired_seeds else str(c.n)
    cells = [c.arm_a, c.arm_b, c.metric, n]
    cells += [f"{np.mean(c.values_a):.3f}", f"{np.mean(c.values_b):.3f}", f"{c.mean_diff:+.3f}"]
    cells += [f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]", c.verdict]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _paired_csv(comparisons: Sequence[PairedDifference]) -> bytes:
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(
    ["arm_a", "arm_b", "metric", "n", "seeds", "unpaired_seeds", "mean_a", "mean_b"]
    + ["mean_diff", "ci_low", "ci_high", "confidence", "verdict"]
  )
  for c in comparisons:
    seeds, unpaired = (" ".join(map(str, s)) for s in (c.seeds, c.unpaired_seeds))
    means = [float(np.mean(c.values_a)), float(np.mean(c.values_b)), c.mean_diff]
    writer.writerow(
      [c.arm_a, c.arm_b, c.metric, c.n, seeds, unpaired, *means, *c.ci, c.confidence, c.verdict]
    )
  return text.getvalue().encode("utf-8")


def _paired_plot(comparisons: Sequence[PairedDifference]) -> bytes:
  """PNG, one row per metric: per-seed lines from A to B; per-seed and mean A - B with its CI."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(7.0, 2.8 * len(comparisons)), layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.subplots(len(comparisons), 2, squeeze=False)
  for (left, right), c in zip(axes, comparisons, strict=True):
    for s, a, b in zip(c.seeds, c.values_a, c.values_b, strict=True):
      left.plot([0, 1], [a, b], "o-", color="tab:blue", alpha=0.6)
      left.text(-0.05, a, f"seed {s}", ha="right", va="center", fontsize=6)
    left.set_xticks([0, 1], [c.arm_a, c.arm_b], fontsize=7)
    left.set_xlim(-0.5, 1.5)
    left.set_ylabel(c.metric)
    right.axhline(0.0, color="k", lw=0.8)
    right.plot(np.zeros(c.n), c.differences, "k.", alpha=0.5, label="seeds")
    low, high = c.ci
    if not math.isnan(low):
      yerr = [[c.mean_diff - low], [high - c.mean_diff]]
      label = f"mean, {c.confidence:.0%} CI"
      right.errorbar([0.3], [c.mean_diff], yerr, fmt="s", color="tab:red", capsize=4, label=label)
    right.set_xlim(-0.5, 0.8)
    right.set_xticks([])
    right.set_ylabel("A - B")
    right.set_title(f"n = {c.n}: {c.verdict}", fontsize=9)
    right.legend(fontsize=7)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  return buffer.getvalue()


def write_paired(
  rows: Sequence[Mapping[str, Any]],
  pairs: Sequence[tuple[str, str]],
  out: str,
  metrics: Sequence[str] = PLOT_METRICS,
  **bootstrap: Any,
) -> list[PairedDifference]:
  """Compares each pair (A, B) on each metric; writes paired.md, paired.csv and one PNG per pair.

  Args:
    rows: rows of `collect`.
    pairs: (A, B) config names.
    out: output directory (created); every file is written atomically.
    metrics: metric columns.
    **bootstrap: `num_bootstrap`, `confidence` or `seed` of `paired_differences`.

  Returns:
    The comparisons, pair-major.
  """
  per_pair = [[paired_differences(rows, m, a, b, **bootstrap) for m in metrics] for a, b in pairs]
  comparisons = [c for cs in per_pair for c in cs]
  table = paired_table(comparisons)
  os.makedirs(out, exist_ok=True)
  _write_atomic(os.path.join(out, "paired.md"), table.encode("utf-8"))
  _write_atomic(os.path.join(out, "paired.csv"), _paired_csv(comparisons))
  for (a, b), cs in zip(pairs, per_pair, strict=True):
    _write_atomic(os.path.join(out, f"paired_{a}_vs_{b}.png"), _paired_plot(cs))
  print(table)
  print(f"Wrote {out}/paired.md, paired.csv and {len(pairs)} paired_*.png.")
  return comparisons


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
    "--compare",
    default="",
    help="A:B[,C:D...]: paired comparison of config names by seed (default metrics: "
    + ", ".join(PLOT_METRICS)
    + ") instead of results.*",
  )
  args = parser.parse_args(argv)
  metrics = [m for m in args.metrics.split(",") if m]
  if not args.compare:
    write_results(args.root, args.out, metrics or None)
    return
  try:
    write_paired(collect(args.root), _parse_pairs(args.compare), args.out, metrics or PLOT_METRICS)
  except ValueError as e:
    parser.error(f"{e} (root: {args.root})")


if __name__ == "__main__":
  main()
