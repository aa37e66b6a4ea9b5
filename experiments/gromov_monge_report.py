"""The table and the figures of experiments/gromov_monge_maps.py (the paper's Figure 2 study),
from its run records; the statistics are `stats.paired`'s t intervals. The study's axes and
metrics come as arguments (this module imports nothing of the study's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import stats


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
  """(mean of a - b, 95% paired t interval) (`stats.paired`)."""
  result = stats.paired(a, b, method="t")
  return result.mean, result.low, result.high


def _interval(values: np.ndarray) -> tuple[float, float, float]:
  """(mean, low, high): the 95% t interval of the mean."""
  return _paired(values, np.zeros_like(values))


def _cell(mean: float, low: float, high: float) -> str:
  """ "mean [low, high]"; the mean alone when there is no interval (n < 2, or no spread)."""
  if math.isnan(low) or low == high:
    return f"{mean:.4g}"
  return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def table(
  records: list[dict[str, Any]],
  command: str,
  axes: Sequence[str],
  metrics: Sequence[str],
) -> str:
  """The study's markdown table: a row per (target, cost, regularizer, weight), in the order of
  `axes` (its targets, costs and regularizers), a column group per metric of `metrics`."""
  groups: dict[tuple, dict[int, dict[str, Any]]] = {}
  for r in records:
    a = r["args"]
    groups.setdefault((a["target"], a["cost"], a["regularizer"], a["weight"]), {})[a["seed"]] = r
  a0 = records[0]["args"]
  lines = [
    f"`{command}`",
    "",
    f"Setting: {a0['steps']} steps, batch {a0['batch']}, Adam {a0['lr']:g}, epsilon_0 "
    f"{a0['epsilon_0']:g}, held-out evaluation on {a0['eval_size']} points "
    f"(GMG values: mean over batches of {a0['batch']}). Cells: mean [95% t interval over seeds]; "
    "Δ columns: paired difference vs `none` on the same seed, mean [95% paired t interval]; "
    "`Δfit vs dst`: gmg minus dst at the same weight, same seed. "
    "`init` columns: the same metric before training (identical across arms of a seed). "
    "No correction for the many intervals.",
    "",
    "| target | cost | reg | weight | n | fit | Δfit vs none | Δfit vs dst | fit at init | "
    "distortion | Δdistortion | gmg_entropic | Δgmg_entropic | gmg_certified | Δgmg_certified | "
    "fit floor |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]

  def paired_cell(runs: dict[int, dict], other: dict[int, dict], metric: str) -> str:
    seeds = [s for s in sorted(runs) if s in other]
    if runs is other or not seeds:
      return "–"
    a, b = (np.array([r[s][metric] for s in seeds]) for r in (runs, other))
    return _cell(*_paired(a, b))

  order = {name: i for i, name in enumerate(axes)}
  for key in sorted(groups, key=lambda k: (order[k[0]], order[k[1]], order[k[2]], k[3])):
    target, cost, regularizer, weight = key
    runs = groups[key]
    none = groups.get((target, cost, "none", 0.0), {})
    dst = groups.get((target, cost, "dst", weight), {}) if regularizer == "gmg" else runs
    seeds = sorted(runs)
    cells = []
    for metric in metrics:
      cells.append(_cell(*_interval(np.array([runs[s][metric] for s in seeds]))))
      cells.append(paired_cell(runs, none, metric))
      if metric == "fit":
        cells.append(paired_cell(runs, dst, metric))
        cells.append(_cell(*_interval(np.array([runs[s]["init"]["fit"] for s in seeds]))))
    floor = _cell(*_interval(np.array([runs[s]["fit_floor"] for s in seeds])))
    weight_cell = "–" if regularizer == "none" else f"{weight:g}"
    lines.append(
      f"| {target} | {cost} | {regularizer} | {weight_cell} | {len(seeds)} | "
      + " | ".join(cells)
      + f" | {floor} |"
    )
  return "\n".join(lines) + "\n"


def figure(
  records: list[dict[str, Any]],
  target: str,
  target_points: np.ndarray,
  costs: Sequence[str],
  weight: float,
  seed: int,
  path: str,
) -> str | None:
  """The paper's Figure 2 layout for one target (rows: `costs`; columns: source, target, none,
  dst, gmg) on seed `seed`'s held-out points; returns the path, or None without runs."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  by_key = {}
  for r in records:
    a = r["args"]
    if a["target"] == target and a["seed"] == seed:
      by_key[(a["cost"], a["regularizer"], a["weight"])] = r
  costs = [c for c in costs if (c, "none", 0.0) in by_key]
  if not costs:
    return None
  columns = ["source", "target", "none", "dst", "gmg"]
  fig, axes = plt.subplots(len(costs), 5, figsize=(15, 3.6 * len(costs)), squeeze=False)
  cmap = plt.get_cmap("tab10")
  for row, cost in enumerate(costs):
    none = by_key[(cost, "none", 0.0)]
    comp = np.asarray(none["points"]["component"])
    panels = {
      "source": (np.asarray(none["points"]["source"]), comp, "source (by component)"),
      "target": (target_points, None, f"target: {target}"),
    }
    for reg in ("none", "dst", "gmg"):
      r = by_key.get((cost, reg, 0.0 if reg == "none" else weight))
      if r is not None:
        title = reg if reg == "none" else f"{reg}, weight {weight:g}"
        title += f"\nfit {r['fit']:.3g}, DST {r['distortion']:.3g}, GMG_ent {r['gmg_entropic']:.3g}"
        panels[reg] = (np.asarray(r["points"]["mapped"]), comp, title)
    for col, name in enumerate(columns):
      ax = axes[row, col]
      ax.set_aspect("equal")
      ax.set_xticks([])
      ax.set_yticks([])
      if name not in panels:
        ax.set_title(f"{name}: not run", fontsize=9)
        continue
      pts, colour, title = panels[name]
      ax.scatter(
        pts[:, 0], pts[:, 1], s=4, c="0.3" if colour is None else cmap(colour % 10), linewidths=0
      )
      ax.set_title(title, fontsize=9)
      lim = max(1.2, float(np.max(np.abs(pts))) * 1.05)
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
    axes[row, 0].set_ylabel(cost, fontsize=11)
  fig.suptitle(
    f"Mixture of Gaussians -> {target}; mapped held-out points, seed {seed} "
    "(rows: cost of the regularizer; fit = Sinkhorn divergence, L2^2)",
    fontsize=10,
  )
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return path
