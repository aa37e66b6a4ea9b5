"""Paired comparisons of a study's arms by seed: the declared primary family and the rest.

Arm A's run with seed s is compared with arm B's run with seed s. Each comparison is the paired
t interval and test of the mean difference A - B (`experiments/stats.py`). A study declares a
primary family of at most `MAX_PRIMARY` contrasts on one metric (`experiments/studies.py`): only
those get a verdict, by Holm's adjustment over the family at level 0.05. Every other comparison
is printed with its raw p and labelled exploratory. Next to each contrast is its minimal
detectable effect (80% power at the observed paired SD and n), what a null could have missed.

  paired.write_paired(rows, out, primary=[("beta_vae+gmg_cos_decoder", "beta_vae")],
                      exploratory=[...], metrics=["dci/disentanglement", "mig/discrete_mig"])

writes `paired.md`, `paired.csv` and `paired_<A>_vs_<B>.png` (per-seed lines from A to B; the
per-seed differences and their mean with its interval); given the learning curves' rows
(`curves=`), also each pair on the family's metric at each evaluation step (`paired_steps.csv`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import stats

from gmg_jax.atomic import atomic_write

# The metrics of a pair's plot when the caller names none.
PLOT_METRICS = ("dci/disentanglement", "mig/discrete_mig")
_ALPHA = 0.05  # Family-wise level of a study's primary family.
MAX_PRIMARY = 4  # Contrasts a declared family may hold.


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
    result: the paired t interval and test of the differences (`stats.paired`).
    family: "primary" (a contrast of the study's declared family) or "exploratory".
    p_adjusted: Holm-adjusted p within the primary family (NaN for exploratory rows).
  """

  metric: str
  arm_a: str
  arm_b: str
  seeds: tuple[int, ...]
  unpaired_seeds: tuple[int, ...]
  values_a: np.ndarray
  values_b: np.ndarray
  differences: np.ndarray
  result: stats.Paired
  family: str = "exploratory"
  p_adjusted: float = math.nan

  @property
  def n(self) -> int:
    return len(self.seeds)

  @property
  def mean_diff(self) -> float:
    return self.result.mean

  @property
  def ci(self) -> tuple[float, float]:
    return (self.result.low, self.result.high)

  @property
  def mde(self) -> float:
    """The mean difference a paired t test at alpha 0.05 with these n and paired SD detects with
    80% power (`stats.detectable_effect`): what a null here could have missed."""
    return stats.detectable_effect(self.result.sd, self.n)

  @property
  def verdict(self) -> str:
    """By the declared rule for the primary family (Holm-adjusted p < 0.05, the sign of the mean
    difference); "exploratory" for everything else."""
    if self.family != "primary":
      return "exploratory"
    if self.p_adjusted < _ALPHA:
      return "a > b" if self.mean_diff > 0 else "a < b"
    return "no difference detected"


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
  confidence: float = 0.95,
) -> PairedDifference:
  """Mean paired difference A - B of `metric` over shared seeds: paired t interval and p-value
  (`stats.paired`; it covers at its level at 10 seeds, where a percentile bootstrap covers ~90%).

  Args:
    rows: rows of `collect` ("config", "seed" and metric columns), one per run.
    metric: metric column; "dci.disentanglement" is read as "dci/disentanglement".
    arm_a: config name of A.
    arm_b: config name of B.
    confidence: level of the interval, in (0, 1).

  Returns:
    The comparison (see `PairedDifference`), labelled exploratory.

  Raises:
    ValueError: an arm has no runs (the message lists the configs present), or the arms share no
      seed with the metric.
  """
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
  return PairedDifference(
    metric=metric,
    arm_a=arm_a,
    arm_b=arm_b,
    seeds=seeds,
    unpaired_seeds=tuple(sorted(ran - set(seeds))),
    values_a=values_a,
    values_b=values_b,
    differences=values_a - values_b,
    result=stats.paired(values_a, values_b, confidence=confidence),
  )


def primary_family(
  rows: Sequence[Mapping[str, Any]],
  pairs: Sequence[tuple[str, str]],
  metric: str,
  *,
  confidence: float = 0.95,
) -> list[PairedDifference]:
  """The declared family: each pair on `metric`, Holm-adjusted over the family (`stats.holm`)."""
  found = [paired_differences(rows, metric, a, b, confidence=confidence) for a, b in pairs]
  adjusted = stats.holm([c.result.p for c in found])
  return [
    dataclasses.replace(c, family="primary", p_adjusted=float(p))
    for c, p in zip(found, adjusted, strict=True)
  ]


def _number(value: float, digits: int = 3, sign: bool = False) -> str:
  if math.isnan(value):
    return "-"
  return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value: float) -> str:
  return "-" if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def paired_table(comparisons: Sequence[PairedDifference]) -> str:
  """Markdown table, one line per comparison; means are over the paired seeds only. Primary rows
  carry the Holm-adjusted p and the verdict, exploratory rows neither."""
  level = f"{comparisons[0].result.confidence:.0%}" if comparisons else "95%"
  header = "A|B|metric|n|mean A|mean B|mean diff".split("|")
  header += [f"{level} t interval", "p", "Holm p", "MDE (80%)", "verdict"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for c in comparisons:
    n = f"{c.n} ({len(c.unpaired_seeds)} unpaired dropped)" if c.unpaired_seeds else str(c.n)
    cells = [c.arm_a, c.arm_b, c.metric, n, _number(np.mean(c.values_a))]
    cells += [_number(np.mean(c.values_b)), _number(c.mean_diff, sign=True)]
    cells.append(f"[{_number(c.ci[0], sign=True)}, {_number(c.ci[1], sign=True)}]")
    cells += [_p(c.result.p), _p(c.p_adjusted), _number(c.mde), c.verdict]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _paired_csv(comparisons: Sequence[PairedDifference]) -> str:
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(
    ["family", "arm_a", "arm_b", "metric", "n", "seeds", "unpaired_seeds", "mean_a", "mean_b"]
    + ["mean_diff", "sd_diff", "ci_low", "ci_high", "confidence", "p", "p_holm", "mde"]
    + ["verdict"]
  )
  for c in comparisons:
    seeds, unpaired = (" ".join(map(str, s)) for s in (c.seeds, c.unpaired_seeds))
    means = [float(np.mean(c.values_a)), float(np.mean(c.values_b)), c.mean_diff, c.result.sd]
    writer.writerow(
      [c.family, c.arm_a, c.arm_b, c.metric, c.n, seeds, unpaired, *means, *c.ci]
      + [c.result.confidence, c.result.p, c.p_adjusted, c.mde, c.verdict]
    )
  return text.getvalue()


def by_step(
  curves: Sequence[Mapping[str, Any]],
  pairs: Sequence[tuple[str, str]],
  metric: str,
  *,
  confidence: float = 0.95,
) -> list[tuple[int, PairedDifference]]:
  """Each pair on `metric` at each evaluation step where both arms have runs with the metric
  (exploratory): how the difference evolves with training.

  Args:
    curves: one row per (run, evaluation step) ("config", "seed", "step" and metric columns;
      `records.step_rows`).
    pairs: (A, B) config names; a pair is compared at the steps where both of its arms have the
      metric (a step without it, e.g. one evaluated with other metrics, is skipped).
    metric: the metric compared.
    confidence: level of the t intervals.

  Returns:
    (step, comparison) pair-major, steps ascending.
  """
  at: dict[int, list[Mapping[str, Any]]] = {}
  for row in curves:
    at.setdefault(int(row["step"]), []).append(row)
  found = []
  keys = (metric, metric.replace(".", "/"))
  for a, b in dict.fromkeys(pairs):
    for step in sorted(at):
      have = {r["config"] for r in at[step] if any(k in r and r[k] == r[k] for k in keys)}
      if {a, b} <= have:
        found.append((step, paired_differences(at[step], metric, a, b, confidence=confidence)))
  return found


def _steps_table(found: Sequence[tuple[int, PairedDifference]]) -> str:
  level = f"{found[0][1].result.confidence:.0%}" if found else "95%"
  header = ["A", "B", "step", "n", "mean A", "mean B", "mean diff", f"{level} t interval", "p"]
  lines = ["| " + " | ".join(header + ["MDE (80%)"]) + " |", "|" + "---|" * (len(header) + 1)]
  for step, c in found:
    cells = [c.arm_a, c.arm_b, str(step), str(c.n), _number(np.mean(c.values_a))]
    cells += [_number(np.mean(c.values_b)), _number(c.mean_diff, sign=True)]
    cells.append(f"[{_number(c.ci[0], sign=True)}, {_number(c.ci[1], sign=True)}]")
    cells += [_p(c.result.p), _number(c.mde)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _steps_csv(found: Sequence[tuple[int, PairedDifference]]) -> str:
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(
    ["arm_a", "arm_b", "metric", "step", "n", "mean_a", "mean_b", "mean_diff", "sd_diff"]
    + ["ci_low", "ci_high", "confidence", "p", "mde"]
  )
  for step, c in found:
    means = [float(np.mean(c.values_a)), float(np.mean(c.values_b)), c.mean_diff, c.result.sd]
    writer.writerow(
      [c.arm_a, c.arm_b, c.metric, step, c.n, *means, *c.ci, c.result.confidence, c.result.p, c.mde]
    )
  return text.getvalue()


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
      if c.n <= 12:
        left.text(-0.05, a, f"seed {s}", ha="right", va="center", fontsize=6)
    left.set_xticks([0, 1], [c.arm_a, c.arm_b], fontsize=7)
    left.set_xlim(-0.5, 1.5)
    left.set_ylabel(c.metric)
    right.axhline(0.0, color="k", lw=0.8)
    right.plot(np.zeros(c.n), c.differences, "k.", alpha=0.5, label="seeds")
    low, high = c.ci
    if not math.isnan(low):
      yerr = [[c.mean_diff - low], [high - c.mean_diff]]
      label = f"mean, {c.result.confidence:.0%} t interval"
      right.errorbar([0.3], [c.mean_diff], yerr, fmt="s", color="tab:red", capsize=4, label=label)
    right.set_xlim(-0.5, 0.8)
    right.set_xticks([])
    right.set_ylabel("A - B")
    right.set_title(f"n = {c.n}, p = {_p(c.result.p)}: {c.verdict}", fontsize=9)
    right.legend(fontsize=7)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  return buffer.getvalue()


def write_paired(
  rows: Sequence[Mapping[str, Any]],
  out: str,
  *,
  primary: Sequence[tuple[str, str]] = (),
  primary_metric: str = "dci/disentanglement",
  exploratory: Sequence[tuple[str, str]] = (),
  metrics: Sequence[str] = PLOT_METRICS,
  declared: str = "",
  confidence: float = 0.95,
  curves: Sequence[Mapping[str, Any]] = (),
) -> list[PairedDifference]:
  """The primary family (Holm-adjusted, with verdicts) and the exploratory comparisons (every
  metric of `metrics`, raw p, no verdict); writes paired.md, paired.csv and one PNG per pair.
  Given `curves`, also every pair at each evaluation step (exploratory; in paired.md and
  paired_steps.csv), on `primary_metric` when there is a primary family, else on `metrics[0]`.

  Args:
    rows: rows of `collect`, one per run.
    out: output directory (created); every file is written atomically.
    primary: the declared family's (A, B) config names.
    primary_metric: the family's metric.
    exploratory: other (A, B) pairs.
    metrics: the exploratory comparisons' metrics.
    declared: where and when the family was declared (printed above its table).
    confidence: level of the t intervals.
    curves: one row per (run, evaluation step) (`records.step_rows`), or none.

  Returns:
    The comparisons: the primary family, then the exploratory ones pair-major.
  """
  family = primary_family(rows, primary, primary_metric, confidence=confidence) if primary else []
  per_pair = [
    [paired_differences(rows, m, a, b, confidence=confidence) for m in metrics]
    for a, b in exploratory
  ]
  others = [c for cs in per_pair for c in cs]
  text = ""
  if family:
    text += (
      f"## Primary family: {primary_metric}, {len(family)} contrasts, Holm-adjusted at "
      f"{_ALPHA}\n\nDeclared: {declared or 'with the study'}. Verdict: Holm p < {_ALPHA} gives "
      "the sign of the mean difference; otherwise no difference detected, with the t interval "
      "(the effects the data exclude) and the minimal detectable effect at 80% power (MDE).\n\n"
      + paired_table(family)
    )
  if others:
    text += (
      ("\n" if text else "")
      + "## Exploratory (raw p, not adjusted for multiplicity; no verdicts)\n\n"
      + paired_table(others)
    )
  step_metric = primary_metric if primary else metrics[0] if metrics else primary_metric
  steps = by_step(curves, [*primary, *exploratory], step_metric, confidence=confidence)
  if steps:
    text += (
      ("\n" if text else "")
      + f"## Exploratory: {steps[0][1].metric} at each evaluation step (raw p, no verdicts)\n\n"
      + _steps_table(steps)
    )
    table = _steps_csv(steps)
    atomic_write(os.path.join(out, "paired_steps.csv"), lambda f: f.write(table), text=True)
  atomic_write(os.path.join(out, "paired.md"), lambda f: f.write(text), text=True)
  table = _paired_csv(family + others)
  atomic_write(os.path.join(out, "paired.csv"), lambda f: f.write(table), text=True)
  plots: dict[tuple[str, str], list[PairedDifference]] = {}
  for c in family + others:
    plots.setdefault((c.arm_a, c.arm_b), []).append(c)
  for (a, b), cs in plots.items():
    png = _paired_plot(cs)
    target = os.path.join(out, f"paired_{a}_vs_{b}.png")
    atomic_write(target, lambda f, data=png: f.write(data), text=False)
  print(text)
  print(f"Wrote {out}/paired.md, paired.csv and {len(plots)} paired_*.png.")
  return family + others
