r"""The paper's Figure 2 mechanism: a 2-D map fitted onto a target under DST or GMG.

  python experiments/gromov_monge_maps.py --target=square --cost=sqeuclidean --regularizer=gmg \
      --out=/tmp/gmm_square_l2_gmg.json       # one run: 10-35 s (+ ~5 s start) on 2 CPU cores
  python experiments/gromov_monge_maps.py --study --weights=0.01,0.1,1 --seeds=0,1,2,3,4 \
      --out_dir=experiments/results/gromov_monge_maps       # the study: 30 min, resumable

An MLP map ``T: R^2 -> R^2`` (2 hidden layers of 128, SiLU) is trained for ``--steps`` steps with
Adam (``--lr``, cosine-decayed to 0 over the run) on fresh batches of ``--batch`` points to minimize

  ``fit(T(x), t) + weight * R(x, T(x))``

* source ``x``: a mixture of 5 isotropic Gaussians, equal weights, means on the circle of radius
  0.75 (angles 18 + 72 k degrees), standard deviation 0.1 (adjacent means are 8.8 SDs apart);
  each point's component is recorded (the figure colours by it);
* target ``t``: "square", uniform on ``[-1, 1]^2``; or "circle", uniform on the unit circle, the
  curve itself (radius exactly 1, no radial noise);
* ``fit``: ott-jax's Sinkhorn divergence (`ott.tools.sinkhorn_divergence.sinkhorn_divergence`
  with `ott.geometry.pointcloud.PointCloud`, squared Euclidean ground cost, epsilon 0.05 absolute,
  i.e. a blur of 0.22 on a target of side 2), whatever ``--cost`` is;
* ``R`` on the batch (``--cost`` is the cost of both sides, `gmg_jax.costs.cost_matrix`):
  "none": 0; "dst": the distortion ``1/2 mean_ik (C_X[i,k] - C_Y[i,k])^2``
  (`gmg_jax.gmg.distortion`); "gmg": the value `gmg_jax.gmg.gromov_monge_gap` returns with the
  trainer's settings (`gmg_jax.config`, ``regularizer.gmg``: the "entropic" estimator
  ``DST - GW_eps``, epsilon_0 0.03 by default, the product start, the same budgets; envelope
  gradient), i.e. exactly the value a gmg_* variant trains.

Budget choices (probe on seed 99, not reported): epsilon 0.01 took ~5x the Sinkhorn iterations
per step (360 vs 70 at n = 256). Adam 3e-2 with batch 128 reached a held-out fit of 0.011-0.012
in 1,000 steps, against 0.02-0.05 with Adam 1e-3 to 1e-2; batch 256 fitted better still
(0.005-0.010) at 2-3x the time, which the 140-run study could not afford on 2 CPU cores.

The paper's claim (Uscidda et al., ICLR 2025, Figure 2): no map both fits such a target and
preserves the source's geometry, so DST fights the fit, while GMG asks only for the least
distortion any map onto the target can have, so GMG should fit about as well as no regularizer
while lowering its own gap.

Evaluation, at initialization and after training, on held-out samples (a key no training batch
uses): ``fit`` is the Sinkhorn divergence (as above) between ``--eval_size`` mapped held-out
source points and as many fresh target points; ``fit_floor`` the same between two independent
target samples of that size (what a perfect map would score, up to noise). ``distortion``,
``gmg_entropic``, ``gmg_certified`` (`gmg_jax.gmg.GMGInfo`: ``distortion``, ``entropic_gap``,
``certified_gap``) are means over the ``--eval_size / --batch`` held-out batches of ``--batch``
points (the gap depends on n through its entropic bias, so it is measured at the trained n),
with ``--cost`` and the trainer's GMG settings, for every regularizer (also "none").

Default weight, one for both regularizers: 0.1. How it was chosen: a probe on seed 99 (not
reported; the study uses seeds 0-4) of DST at 0.001, 0.01, 0.1 and 1 at the default steps, in the
four settings. Held-out fit of "none" 0.011-0.012 everywhere; DST at 0.001 and 0.01 left the fit
unchanged (within 0.006) except circle / sqeuclidean at 0.01 (0.024); at 0.1 it worsened the fit in
all four settings (0.016-0.043) and cut the distortion (by 34-77%); at 1 it drove the distortion
to < 0.01 at a fit of 0.027-0.078. So 0.1 is the smallest decade at which DST acts everywhere, and
the study sweeps 0.01, 0.1 and 1 around it. GMG gets the same number (the paper compares the two
at one lambda).

A run seeds everything from ``--seed``: the MLP's initial parameters, the training batches and
the held-out samples, so runs with the same seed and different regularizers are paired (the same
initial map, the same data).

`--study` trains every (target, cost, regularizer, weight, seed) of its grid in one process (one
compilation per target, cost and regularizer; the weight is a traced argument), writes one JSON
per run into ``--out_dir`` (an existing JSON is kept and its run skipped, if its arguments match;
so the study resumes), then ``table.md`` (per target, cost, regularizer and weight: mean and 95%
t interval over seeds, the paired difference vs "none" on the same seed and, for gmg, vs dst at
the same weight, `scipy.stats`) and ``figure_<target>.png`` (the paper's layout: rows = cost,
sqeuclidean on top; columns = source coloured by component, target, then the mapped held-out
points, coloured by component, for none / dst / gmg at ``--figure_weight``, on seed
``--figure_seed``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import gromov_monge_report as report
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gmg_jax import config as config_lib
from gmg_jax import gmg
from gmg_jax.atomic import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGETS = ("square", "circle")
COSTS = ("sqeuclidean", "cosine")
REGULARIZERS = ("none", "dst", "gmg")
METRICS = ("fit", "distortion", "gmg_entropic", "gmg_certified")

# The source: 5 Gaussians, means on a circle of radius 0.75, SD 0.1.
NUM_COMPONENTS = 5
MEAN_RADIUS = 0.75
COMPONENT_STD = 0.1
HIDDEN = (128, 128)
# Sinkhorn divergence of the fitting loss and of `fit`: squared Euclidean cost, absolute epsilon.
FIT_EPSILON = 0.05
# The regularizer weight used for both regularizers (module docstring: how it was chosen).
DEFAULT_WEIGHT = 0.1
DEFAULT_STEPS = 1000
DEFAULT_BATCH = 128
DEFAULT_LR = 3e-2
DEFAULT_EVAL_SIZE = 2048
# Mapped held-out points stored per run (for the figure), rounded to 4 decimals.
STORED_POINTS = 512
HISTORY_POINTS = 50

# The trainer's GMG settings (estimator, start, budgets); `cost` and `epsilon_0` come per run.
_GMG_CONFIG = config_lib.get_config().regularizer.gmg.to_dict()
DEFAULT_EPSILON_0 = float(_GMG_CONFIG["epsilon_0"])
GMG_KWARGS = {k: v for k, v in _GMG_CONFIG.items() if k not in ("cost", "epsilon_0")}


def sample_source(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """``n`` points of the Gaussian mixture and their component indices.

  Args:
    key: PRNG key.
    n: number of points.

  Returns:
    (points [n, 2] float32, components [n] int32).
  """
  key_c, key_z = jax.random.split(key)
  components = jax.random.randint(key_c, (n,), 0, NUM_COMPONENTS)
  angles = 2.0 * jnp.pi * (components.astype(jnp.float32) + 0.25) / NUM_COMPONENTS
  means = MEAN_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
  return means + COMPONENT_STD * jax.random.normal(key_z, (n, 2)), components


def sample_target(key: jax.Array, n: int, target: str) -> jax.Array:
  """``n`` points of the target: uniform on [-1, 1]^2 ("square") or on the unit circle.

  Args:
    key: PRNG key.
    n: number of points.
    target: "square" or "circle".

  Returns:
    [n, 2] float32 points.
  """
  if target == "square":
    return jax.random.uniform(key, (n, 2), minval=-1.0, maxval=1.0)
  if target == "circle":
    angles = jax.random.uniform(key, (n,), maxval=2.0 * jnp.pi)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
  raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}.")


def init_mlp(key: jax.Array) -> list[dict[str, jax.Array]]:
  """Parameters of the MLP 2 -> HIDDEN -> 2 (LeCun-normal weights, zero biases)."""
  sizes = (2, *HIDDEN, 2)
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (a, b)) / math.sqrt(a), "b": jnp.zeros((b,))}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def apply_mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  """The map T on a batch [n, 2] -> [n, 2]."""
  for layer in params[:-1]:
    x = jax.nn.silu(x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def fit_loss(y: jax.Array, t: jax.Array) -> jax.Array:
  """Sinkhorn divergence between the point clouds ``y`` and ``t`` (uniform weights)."""
  from ott.geometry import pointcloud
  from ott.tools import sinkhorn_divergence

  value, _ = sinkhorn_divergence.sinkhorn_divergence(
    pointcloud.PointCloud, y, t, epsilon=FIT_EPSILON
  )
  return value


def regularizer_value(
  name: str, x: jax.Array, y: jax.Array, cost: str, epsilon_0: float
) -> jax.Array:
  """The regularizer ``R(x, T(x))`` on a batch: 0, the distortion, or the trained GMG value."""
  if name == "none":
    return jnp.zeros((), y.dtype)
  if name == "dst":
    return gmg.distortion(gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost))
  if name == "gmg":
    return gmg.gromov_monge_gap(x, y, cost=cost, epsilon_0=epsilon_0, **GMG_KWARGS)[0]
  raise ValueError(f"unknown regularizer {name!r}; expected one of {REGULARIZERS}.")


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(initial parameters, training batches, held-out evaluation) keys of a seed."""
  key = jax.random.key(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)


@functools.cache
def make_trainer(
  target: str, cost: str, regularizer: str, steps: int, batch: int, lr: float, epsilon_0: float
):
  """A jitted ``train(params, data_key, weight) -> (params, history)``: the whole run, one scan.

  Cached per static setting, so a study compiles once per target, cost and regularizer (the
  weight is traced). ``history`` holds per step the loss, the fit and the regularizer's value.
  """
  optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))

  def loss_fn(params, x, t, weight):
    y = apply_mlp(params, x)
    fit = fit_loss(y, t)
    reg = regularizer_value(regularizer, x, y, cost, epsilon_0)
    return fit + weight * reg, (fit, reg)

  def step(carry, key, weight):
    params, opt_state = carry
    key_x, key_t = jax.random.split(key)
    x, _ = sample_source(key_x, batch)
    t = sample_target(key_t, batch, target)
    (loss, (fit, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, t, weight)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), jnp.stack([loss, fit, reg])

  @jax.jit
  def train(params, data_key, weight):
    keys = jax.random.split(data_key, steps)
    carry = (params, optimizer.init(params))
    (params, _), history = jax.lax.scan(lambda c, k: step(c, k, weight), carry, keys)
    return params, history

  return train


@functools.cache
def make_evaluator(target: str, cost: str, epsilon_0: float, batch: int, eval_size: int):
  """A jitted ``evaluate(params, key) -> dict`` of the held-out metrics (module docstring)."""
  num_batches = eval_size // batch

  @jax.jit
  def evaluate(params, key):
    key_x, key_t, key_floor = jax.random.split(key, 3)
    x, components = sample_source(key_x, eval_size)
    t = sample_target(key_t, eval_size, target)
    y = apply_mlp(params, x)
    out = {
      "fit": fit_loss(y, t),
      "fit_floor": fit_loss(sample_target(key_floor, eval_size, target), t),
    }
    xs = x[: num_batches * batch].reshape(num_batches, batch, 2)
    ys = y[: num_batches * batch].reshape(num_batches, batch, 2)

    def gap(xy):
      return gmg.gromov_monge_gap(*xy, cost=cost, epsilon_0=epsilon_0, **GMG_KWARGS)[1]

    infos = jax.lax.map(gap, (xs, ys))
    out["distortion"] = jnp.mean(infos.distortion)
    out["gmg_entropic"] = jnp.mean(infos.entropic_gap)
    out["gmg_certified"] = jnp.mean(infos.certified_gap)
    out["gmg_converged"] = jnp.mean(infos.converged.astype(jnp.float32))
    out["gmg_identity_won"] = jnp.mean(infos.identity_won.astype(jnp.float32))
    return out, x[:STORED_POINTS], y[:STORED_POINTS], components[:STORED_POINTS]

  return evaluate


@functools.cache
def initial_metrics(
  target: str, cost: str, epsilon_0: float, batch: int, eval_size: int, seed: int
) -> tuple[tuple[str, float], ...]:
  """The held-out metrics of the initial map of ``seed`` (the same for every arm; cached)."""
  key_params, _, key_eval = run_keys(seed)
  evaluate = make_evaluator(target, cost, epsilon_0, batch, eval_size)
  metrics, *_ = evaluate(init_mlp(key_params), key_eval)
  return tuple((k, float(v)) for k, v in metrics.items())


def run_args(args: argparse.Namespace) -> dict[str, Any]:
  """The arguments that define a run (stored in its JSON and compared on resume)."""
  keys = (
    "target", "cost", "regularizer", "weight", "epsilon_0", "seed", "steps", "batch", "lr",
    "eval_size",
  )  # fmt: skip
  return {k: getattr(args, k) for k in keys}


def train_and_evaluate(run: dict[str, Any]) -> dict[str, Any]:
  """Trains one run and returns its JSON record (module docstring).

  Args:
    run: `run_args`' dict.

  Returns:
    The record: the four metrics (and ``fit_floor``, GMG diagnostics) after training at the top
    level, the same at initialization under "init", "args", "history", "points", "seconds".
  """
  start = time.time()
  weight = 0.0 if run["regularizer"] == "none" else run["weight"]
  train = make_trainer(
    run["target"], run["cost"], run["regularizer"], run["steps"], run["batch"], run["lr"],
    run["epsilon_0"],
  )  # fmt: skip
  evaluate = make_evaluator(
    run["target"], run["cost"], run["epsilon_0"], run["batch"], run["eval_size"]
  )
  key_params, key_data, key_eval = run_keys(run["seed"])
  params = init_mlp(key_params)
  init_metrics = initial_metrics(
    run["target"], run["cost"], run["epsilon_0"], run["batch"], run["eval_size"], run["seed"]
  )
  params, history = train(params, key_data, jnp.float32(weight))
  metrics, x, y, components = evaluate(params, key_eval)
  history = np.asarray(history)
  every = max(1, run["steps"] // HISTORY_POINTS)
  rows = [*range(0, run["steps"], every), run["steps"] - 1]
  rows = sorted(set(rows))
  record: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
  record["init"] = dict(init_metrics)
  record["args"] = {**run, "weight": weight}
  record["setting"] = {
    "components": NUM_COMPONENTS,
    "mean_radius": MEAN_RADIUS,
    "component_std": COMPONENT_STD,
    "hidden": list(HIDDEN),
    "fit_epsilon": FIT_EPSILON,
    "gmg_kwargs": GMG_KWARGS,
    "jax": jax.__version__,
  }
  record["history"] = {
    "step": rows,
    **{
      name: history[rows, i].astype(np.float64).round(6).tolist()
      for i, name in enumerate(("loss", "fit", "reg"))
    },
  }
  record["points"] = {
    "source": np.asarray(x, np.float64).round(4).tolist(),
    "mapped": np.asarray(y, np.float64).round(4).tolist(),
    "component": np.asarray(components).tolist(),
  }
  finite = all(math.isfinite(record[k]) for k in METRICS) and np.all(np.isfinite(history))
  record["finite"] = bool(finite)
  record["seconds"] = round(time.time() - start, 2)
  return record


def write_json(path: str, record: dict[str, Any]) -> None:
  """Writes ``record`` to ``path`` atomically (temp file, then os.replace).

  The scalars one per line; "history" and "points" each on one line (they are most of the bytes).
  """
  bulky = {k: record[k] for k in ("history", "points") if k in record}
  text = json.dumps({k: v for k, v in record.items() if k not in bulky}, indent=1)
  text = text[: -len("\n}")] + "".join(
    f',\n "{k}": {json.dumps(v, separators=(",", ":"))}' for k, v in bulky.items()
  )
  atomic_write(path, lambda f: f.write(text + "\n}\n"), text=True)


def summary_line(record: dict[str, Any]) -> str:
  a, i = record["args"], record["init"]
  values = ", ".join(f"{k} {i[k]:.4g} -> {record[k]:.4g}" for k in METRICS)
  return (
    f"{a['target']} {a['cost']} {a['regularizer']} w={a['weight']:g} seed={a['seed']}: "
    f"{values} (floor {record['fit_floor']:.3g}; {record['seconds']:.0f} s)"
  )


# --- The study ------------------------------------------------------------------------------------


def run_path(out_dir: str, run: dict[str, Any]) -> str:
  """``<out_dir>/<target>_<cost>_<regularizer>[_w<weight>]_s<seed>.json``."""
  weight = "" if run["regularizer"] == "none" else f"_w{run['weight']:g}"
  return os.path.join(
    out_dir, f"{run['target']}_{run['cost']}_{run['regularizer']}{weight}_s{run['seed']}.json"
  )


def study_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Every run of the study: targets x costs x (none, dst and gmg x weights) x seeds."""
  runs = []
  for target, cost in itertools.product(args.targets, args.costs):
    arms = [("none", 0.0)] + [(r, w) for r in ("dst", "gmg") for w in args.weights]
    for (regularizer, weight), seed in itertools.product(arms, args.seeds):
      ns = argparse.Namespace(**{**vars(args), "target": target, "cost": cost})
      ns.regularizer, ns.weight, ns.seed = regularizer, weight, seed
      runs.append(run_args(ns))
  return runs


def load_or_run(out_dir: str, run: dict[str, Any]) -> tuple[dict[str, Any], bool]:
  """The run's record: read from its JSON if present (arguments must match), else trained.

  Returns:
    (record, whether it was trained now).
  """
  path = run_path(out_dir, run)
  expected = {**run, "weight": 0.0 if run["regularizer"] == "none" else run["weight"]}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    if record.get("args") != expected:
      raise SystemExit(
        f"{path} holds a run with other arguments ({record.get('args')}); move it away or use "
        "another --out_dir."
      )
    return record, False
  record = train_and_evaluate(run)
  write_json(path, record)
  return record, True


def study(args: argparse.Namespace, command: str) -> None:
  """Runs (or resumes) the study, then writes table.md and the figures into ``args.out_dir``."""
  runs = study_runs(args)
  records = []
  start = time.time()
  for i, run in enumerate(runs):
    record, trained = load_or_run(args.out_dir, run)
    records.append(record)
    status = summary_line(record) if trained else f"{run_path(args.out_dir, run)}: exists, skipped"
    print(f"[{i + 1}/{len(runs)}, {time.time() - start:.0f} s] {status}", flush=True)
  text = report.table(records, command, (*TARGETS, *COSTS, *REGULARIZERS), METRICS)
  atomic_write(os.path.join(args.out_dir, "table.md"), lambda f: f.write(text), text=True)
  print(text)
  for target in args.targets:
    key = jax.random.key(10_000 + args.figure_seed)  # The seed's held-out target points.
    path = report.figure(
      records,
      target,
      np.asarray(sample_target(key, STORED_POINTS, target)),
      COSTS,
      args.figure_weight,
      args.figure_seed,
      os.path.join(args.out_dir, f"figure_{target}.png"),
    )
    if path:
      print(f"wrote {path}")


# --- Command line ---------------------------------------------------------------------------------


def _csv(text: str, cast, name: str) -> list:
  try:
    values = [cast(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ValueError(f"--{name}={text!r} is not a comma-separated list") from None
  if not values:
    raise ValueError(f"--{name} is empty")
  return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """Parses and validates the arguments; a bad one exits with a one-line error before any work."""
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--target", default="square", choices=TARGETS)
  p.add_argument("--cost", default="sqeuclidean", choices=COSTS)
  p.add_argument("--regularizer", default="none", choices=REGULARIZERS)
  p.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="lambda, >= 0")
  p.add_argument("--epsilon_0", type=float, default=DEFAULT_EPSILON_0, help="GMG's epsilon_0")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
  p.add_argument("--batch", type=int, default=DEFAULT_BATCH)
  p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
  p.add_argument("--eval_size", type=int, default=DEFAULT_EVAL_SIZE, help="held-out points")
  p.add_argument("--out", default="", help="the run's JSON (single run)")
  p.add_argument("--study", action="store_true", help="run the sweep (resumable) and its report")
  p.add_argument("--targets", default=",".join(TARGETS), help="study: targets")
  p.add_argument("--costs", default=",".join(COSTS), help="study: costs")
  p.add_argument("--weights", default="0.01,0.1,1", help="study: weights of dst and gmg")
  p.add_argument("--seeds", default="0,1,2,3,4", help="study: seeds")
  p.add_argument("--out_dir", default="", help="study: directory of the JSONs, table, figures")
  p.add_argument("--figure_weight", type=float, default=None, help="study: default --weight")
  p.add_argument("--figure_seed", type=int, default=None, help="study: default first seed")
  args = p.parse_args(argv)

  def check(ok: bool, message: str) -> None:
    if not ok:
      p.error(message)

  check(
    math.isfinite(args.weight) and args.weight >= 0, f"--weight must be >= 0, got {args.weight}"
  )
  check(
    math.isfinite(args.epsilon_0) and args.epsilon_0 > 0,
    f"--epsilon_0 must be > 0, got {args.epsilon_0}",
  )
  check(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
  check(args.batch >= 8, f"--batch must be >= 8, got {args.batch}")
  check(math.isfinite(args.lr) and args.lr > 0, f"--lr must be > 0, got {args.lr}")
  check(
    args.eval_size >= args.batch,
    f"--eval_size must be >= --batch ({args.batch}), got {args.eval_size}",
  )
  check(args.seed >= 0, f"--seed must be >= 0, got {args.seed}")
  if not args.study:
    check(bool(args.out), "--out=FILE.json is required (or --study --out_dir=DIR)")
    check(not os.path.isdir(args.out), f"--out={args.out} is a directory; give a file name")
    return args
  check(bool(args.out_dir), "--study needs --out_dir=DIR")
  try:
    args.targets = _csv(args.targets, str, "targets")
    args.costs = _csv(args.costs, str, "costs")
    args.weights = _csv(args.weights, float, "weights")
    args.seeds = _csv(args.seeds, int, "seeds")
  except ValueError as error:
    p.error(str(error))
  bad = [t for t in args.targets if t not in TARGETS] + [c for c in args.costs if c not in COSTS]
  check(not bad, f"unknown target or cost {bad}; targets {TARGETS}, costs {COSTS}")
  check(
    all(math.isfinite(w) and w > 0 for w in args.weights),
    f"--weights must be > 0, got {args.weights}",
  )
  check(all(s >= 0 for s in args.seeds), f"--seeds must be >= 0, got {args.seeds}")
  check(len(set(args.seeds)) == len(args.seeds), f"--seeds has duplicates: {args.seeds}")
  check(len(set(args.weights)) == len(args.weights), f"--weights has duplicates: {args.weights}")
  if args.figure_weight is None:
    args.figure_weight = args.weight if args.weight in args.weights else max(args.weights)
  if args.figure_seed is None:
    args.figure_seed = args.seeds[0]
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  command = " ".join(
    ["python experiments/gromov_monge_maps.py", *(sys.argv[1:] if argv is None else argv)]
  )
  if args.study:
    study(args, command)
    return
  record = train_and_evaluate(run_args(args))
  record["command"] = command
  write_json(args.out, record)
  print(summary_line(record))
  if not record["finite"]:
    raise SystemExit(f"non-finite values in {args.out}")


if __name__ == "__main__":
  main()
