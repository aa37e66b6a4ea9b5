"""The weight at which a regularizer takes a target share of the loss's output gradient.

A GMG or DST weight is only meaningful relative to the rest of the loss, and the scale of that
ratio depends on the cost, the placement, the images and the objective (GMG's gradient is 0.005x
DST's with the L2 cost and 0.1-0.3x with Cos). This trains the weights of a grid as one K-run
program (`--config.vary=regularizer.weight=...`, crossed with `--seeds` seeds) for a few hundred
steps, reads each replica's `train_summary.json` (the median over its logged steps of
`grad/regularizer_share` = |w g_reg| / (|w g_reg| + |g_rest|), gmg_jax.losses.diagnostics) and
prints, per weight, the median over seeds of the share, the regularizer's gradient over the
distortion's and their cosine. The suggested weight scales the grid point nearest the target by
the odds ratio: at fixed gradients the share's odds s / (1 - s) are proportional to the weight.

  python experiments/calibrate_weight.py --config=configs/default.py:beta_vae,gmg_l2_encoder \\
      --setting=cpu32 --weights=1e-4,1e-3,1e-2,1e-1 --workdir=/tmp/calibrate/gmg_l2_encoder

The share is a statement about the gradient, not about the metric: the config's defaults
(`gmg_jax.config.REGULARIZER_WEIGHTS`) come from this and from the downstream studies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence

import sweep  # experiments/ is not a package: the script's own directory
from aggregate import GRADIENT_SUMMARY

from gmg_jax.atomic import atomic_write

_SHARE = "median_regularizer_share"


def parse_weights(text: str) -> list[float]:
  """Distinct positive weights from "1e-3,1e-2,..."; a clear ValueError otherwise."""
  try:
    weights = [float(w) for w in text.split(",") if w.strip()]
  except ValueError:
    raise ValueError(f"--weights={text!r}: not a comma-separated list of numbers.") from None
  if not weights or any(not (math.isfinite(w) and w > 0) for w in weights):
    raise ValueError(f"--weights={text!r}: give one or more finite weights > 0.")
  if len(set(weights)) != len(weights):
    raise ValueError(f"--weights={text!r}: a weight is listed twice.")
  return sorted(weights)


def suggest(shares: dict[float, float], target: float) -> float:
  """The weight whose share's odds are the target's, from the grid point nearest in log-odds."""
  odds = {w: s / (1.0 - s) for w, s in shares.items() if 0.0 < s < 1.0}
  if not odds:
    raise ValueError("every share is 0 or 1: widen the weight grid.")
  goal = target / (1.0 - target)
  weight = min(odds, key=lambda w: abs(math.log(odds[w] / goal)))
  return weight * goal / odds[weight]


def summarize(workdir: str) -> dict[float, dict[str, object]]:
  """Per weight: the medians over its replicas of their train_summary.json `GRADIENT_SUMMARY`
  fields, and the seeds of failed replicas ("failed")."""
  with open(os.path.join(workdir, "replicas.json"), encoding="utf-8") as f:
    listed = json.load(f)["replicas"]
  rows: dict[float, dict[str, list]] = {}
  for replica in listed:
    row = rows.setdefault(float(replica["values"]["regularizer.weight"]), {"failed": []})
    if replica["failure"] is not None:
      row["failed"].append(replica["seed"])
      continue
    with open(os.path.join(replica["workdir"], "train_summary.json"), encoding="utf-8") as f:
      summary = json.load(f)
    for field in GRADIENT_SUMMARY:
      row.setdefault(field, []).append(summary[field])
  return {
    w: {
      "failed": row["failed"],
      **{k: statistics.median(row[k]) for k in GRADIENT_SUMMARY if k in row},
    }
    for w, row in sorted(rows.items())
  }


def table(config: str, rows: dict[float, dict[str, object]], target: float) -> str:
  """The markdown report: one row per weight and the suggested weight."""
  lines = [
    f"`{config}`: median over seeds of each replica's median over its logged steps.",
    "",
    "| weight | share of the output gradient | / distortion's gradient | cosine to it "
    "| failed seeds |",
    "|---|---|---|---|---|",
  ]
  for w, row in rows.items():
    cells = [f"{row[k]:.4g}" if k in row else "-" for k in GRADIENT_SUMMARY]
    lines.append(f"| {w:g} | {' | '.join(cells)} | {row['failed'] or '-'} |")
  shares = {w: row[_SHARE] for w, row in rows.items() if _SHARE in row}
  lines += ["", f"Target share {target:g}: weight ~{suggest(shares, target):.3g}."]
  return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=True, help="FILE:VARIANTS with a gmg_* or dst_* variant")
  p.add_argument("--weights", required=True, help="e.g. 10,100,1000")
  p.add_argument("--workdir", required=True, help="the K-run's workdir (resumable)")
  p.add_argument("--setting", default="", choices=["", *sweep.SETTINGS])
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
  p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per weight")
  p.add_argument("--steps", type=int, default=600, help="training steps")
  p.add_argument("--target", type=float, default=0.015, help="target share, in (0, 1)")
  p.add_argument("--out", default="", help="also write the report to this markdown file")
  args = p.parse_args(argv)
  if args.seeds < 1 or args.steps < 1 or not 0.0 < args.target < 1.0:
    p.error("--seeds and --steps must be >= 1 and --target in (0, 1).")
  try:
    args.weights = parse_weights(args.weights)
  except ValueError as error:
    p.error(str(error))
  return args


def _check_config(spec: str, overrides: Sequence[str]) -> None:
  """Fails before any work unless the config trains a GMG or DST regularizer."""
  config_file, _, variant = spec.partition(":")
  run = sweep.Run(variant=variant, seed=0, overrides=tuple(overrides))
  try:
    config = sweep.load_config(config_file, run)
  except (OSError, ValueError, KeyError) as error:
    raise SystemExit(f"--config={spec}: {error}") from None
  if config.regularizer.name not in ("gmg", "dst"):
    raise SystemExit(
      f"--config={spec}: regularizer {config.regularizer.name!r} logs no gradient share; add a "
      "gmg_* or dst_* variant (e.g. ':beta_vae,gmg_cos_decoder')."
    )


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  given = (
    *sweep.SETTINGS.get(args.setting, ()),
    *args.set,
    f"train.num_steps={args.steps}",
    "eval.every_steps=0",
    "train.progress_bar=False",
  )
  overrides = list({o.split("=", 1)[0]: o for o in given}.values())  # The last per field wins.
  _check_config(args.config, overrides)
  weights = ",".join(format(w, "g") for w in args.weights)
  cmd = [
    sys.executable, "-m", "gmg_jax.main",
    f"--config={args.config}",
    f"--workdir={args.workdir}",
    f"--config.vary=regularizer.weight={weights}",
    f"--config.num_seeds={args.seeds}",
    *(f"--config.{o}" for o in overrides),
  ]  # fmt: skip
  print(shlex.join(cmd), flush=True)
  rc = subprocess.run(cmd, cwd=sweep.ROOT).returncode
  if rc not in (0, 3):  # 3: some replicas diverged; the table names them.
    raise SystemExit(f"the K-run failed (exit {rc}); see its output above.")
  report = table(args.config, summarize(args.workdir), args.target)
  print(report)
  if args.out:
    atomic_write(args.out, lambda f: f.write(report), text=True)


if __name__ == "__main__":
  main()
