"""GMG ablation of epsilon_0, start and estimator by the gradient that is trained; optional DCI-D.

  python experiments/ablate_epsilon.py                                  # procedural batches
  python experiments/ablate_epsilon.py --placements=decoder --name=grid_decoder_beta_vae \
      --workdir=/tmp/gmg_sweeps/decoder_cpu32/beta_vae/seeds_0-9/seed=0
  python experiments/ablate_epsilon.py --downstream --seeds=0 --epsilons=0.1,0.01,0.001

Part 1 (solver, no training): for each cost (and epsilon convention), estimator, GW start
`init` and epsilon_0, `gmg.gromov_monge_gap` with its value and gradient w.r.t. y on `--batches`
batches of n = `--batch_size` in both placements of the paper:

* decoder: x = latent codes [n, 10], y = images [n, H*W*C] in [0, 1];
* encoder: x = images, y = codes.

The images are procedural Shapes3D-like renders (gmg_jax.data). Without `--workdir` the codes are
a disentangled stand-in: the standardized ground-truth factors padded to 10 dims, rotated by a
fixed random orthogonal matrix, plus N(0, 0.05^2) noise. With `--workdir` (a run, or one replica
`seed=K` of a K-run program) they come from a trained run instead: its encoder means (encoder
placement) and its decoder's sigmoid outputs at posterior samples of the encoded batch (decoder
placement, the setting the trainer regularizes).

Epsilon conventions. gmg's rule is ``epsilon = epsilon_0 * mean(C_X) * mean(C_Y)``. For the cosine
cost ``C = 1 - cos`` ("1-cos", our cost) the paper writes the cost as the similarity
``S = 1 - C`` ("cos-sim"); GW and DST are the same for S and C (``(a - b)^2`` is unchanged), only
the mean rule differs: ``epsilon = epsilon_0 * mean(S_X) * mean(S_Y)``. The cos-sim rows are
computed without touching gmg.py: per batch the script passes the equivalent
``epsilon_0' = epsilon_0 * mean(S_X) mean(S_Y) / (mean(C_X) mean(C_Y))`` (from the batch's
detached costs, no gradient; `cos_sim_epsilon_0`), so gmg's rule yields the cos-sim epsilon.
With the zero diagonal of gmg's cost, ``mean(S) = |mean of the unit vectors|^2 >= 0``: about 1/n
for centred codes, near 0 only for a batch whose directions cancel. A batch with
``mean(S) <= 1e-6`` has no positive cos-sim epsilon; its row is reported as not applicable with
that reason (no clipping). The other costs have one convention.

Columns (means over batches): epsilon (absolute, as used; gmg floors the mean-normalized epsilon
at 1e3 float32 round-offs), the trained value (the estimator's gap), gap / DST, plan entropy /
log n (1: a matching, 2: the product coupling), outer iterations, fraction converged, fraction
`identity_won` (the plan is no better than the map's own coupling: the certified gap and its
gradient are 0), the gradient ratio ``|d gap / d y| / |d DST / d y|`` on the same batch, the
cosine between those two gradients (over the batches where the ratio exceeds 1e-6; "(k/B)" when
only k of B batches count, "–" when none), and ms per jitted value + gradient (after the
compilation; per batch the minimum of `--repeats` calls, then the median over batches; the
machine's other load included). The DST gradient is the reference: a trained gradient with ratio
~0 does nothing, one with cosine ~1 does what DST alone would do. `finalists` lists the rows with
ratio >= 0.05, mean cosine >= 0.5 (with a gradient on every batch), >= 90% converged and
<= 100 ms.

Part 2 (`--downstream`): short training runs of `--variant` (default beta_vae,gmg_cos_decoder)
at each epsilon_0 in the cpu32 setting of experiments/sweep.py, resumable, then DCI-D (mean ± std
over seeds) per epsilon_0. Runs go to `<--root>/ablate_epsilon/eps_<e>/...`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from gmg_jax import gmg  # noqa: E402

CODE_DIM = 10


def procedural_batches(
  num_batches: int, batch_size: int, image_size: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
  """Procedural images and disentangled stand-in codes.

  Args:
    num_batches: number of batches.
    batch_size: n.
    image_size: image side.
    seed: PRNG seed.

  Returns:
    [(images [n, H*W*C] float32 in [0, 1], codes [n, 10] float32)] * num_batches.
  """
  import ml_collections

  from gmg_jax import data as data_lib

  config = ml_collections.ConfigDict(
    {
      "name": "shapes3d_procedural",
      "source": "files",
      "data_dir": "",
      "image_size": image_size,
      "on_device": False,
      "device_budget_gb": None,
      "manual_dir": "",
    }
  )
  dataset = data_lib.get_dataset(config)
  rng = np.random.default_rng(seed)
  rotation, _ = np.linalg.qr(rng.normal(size=(CODE_DIM, CODE_DIM)))
  sizes = np.asarray(dataset.factor_sizes, np.float32)
  batches = []
  for b in range(num_batches):
    images, factors = dataset.sample_batch(jax.random.key(seed * 1000 + b), batch_size)
    images = np.asarray(images, np.float32).reshape(batch_size, -1) / 255.0
    f = np.asarray(factors, np.float32)
    f = (f - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12 + 1e-6)  # uniform-grid standardize
    codes = np.zeros((batch_size, CODE_DIM), np.float32)
    codes[:, : f.shape[1]] = f
    codes = codes @ rotation.T + 0.05 * rng.normal(size=codes.shape)
    batches.append((images, codes.astype(np.float32)))
  return batches


def run_batches(
  workdir: str, num_batches: int, batch_size: int, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
  """Batches from a trained run: (images, encoder means) and (sampled codes, decoder outputs).

  Args:
    workdir: a run's workdir (config.json + checkpoints).
    num_batches: number of batches.
    batch_size: n.
    seed: PRNG seed.

  Returns:
    (encoder batches [(x = images flat, y = means)], decoder batches [(x = codes, y = sigmoid
    decoder outputs flat)]).
  """
  from flax import nnx

  from gmg_jax import saved_runs

  _, graphdef, state, dataset = saved_runs.load_run(workdir)
  vae = nnx.merge(graphdef, state.modules)[0]
  encode = jax.jit(lambda x: vae.encode(x))
  decode = jax.jit(lambda z: jax.nn.sigmoid(vae.decode(z)))
  encoder, decoder = [], []
  for b in range(num_batches):
    key_data, key_noise = jax.random.split(jax.random.key(seed * 1000 + b))
    images, _ = dataset.sample_batch(key_data, batch_size)
    mu, logvar = encode(images)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key_noise, mu.shape)
    flat = np.asarray(images, np.float32).reshape(batch_size, -1) / 255.0
    encoder.append((flat, np.asarray(mu)))
    decoder.append((np.asarray(z), np.asarray(decode(z)).reshape(batch_size, -1)))
  return encoder, decoder


# Cost names of the grid: (cost of gmg_jax.gmg, epsilon convention). "cosine_sim" is the cosine
# cost under the paper's convention for the epsilon rule (module docstring); the others have one.
COST_CONVENTIONS: dict[str, tuple[str, str]] = {
  "sqeuclidean": ("sqeuclidean", "-"),
  "scaled_sqeuclidean": ("scaled_sqeuclidean", "-"),
  "cosine": ("cosine", "1-cos"),
  "cosine_sim": ("cosine", "cos-sim"),
}
# mean(S) = |mean of the unit vectors|^2 >= 0 (module docstring); at or below this it is 0 up to
# round-off and the cos-sim rule has no positive epsilon.
MIN_MEAN_SIMILARITY = 1e-6
# A gradient whose norm is below this fraction of DST's has no direction worth reporting.
MIN_GRAD_RATIO = 1e-6


def cos_sim_epsilon_0(
  cost_xx: jax.Array, cost_yy: jax.Array, epsilon_0: jax.Array | float
) -> tuple[jax.Array, jax.Array]:
  """The epsilon_0 that gives the cos-sim convention's epsilon under gmg's 1-cos mean rule.

  gmg uses ``epsilon = epsilon_0' * mean(C_X) mean(C_Y)``; the paper's cos-sim convention wants
  ``epsilon_0 * mean(S_X) mean(S_Y)`` with ``S = 1 - C``. Both computed on detached costs.

  Args:
    cost_xx: [n, n] cosine costs (1 - cos, zero diagonal) of the batch.
    cost_yy: [n, n] cosine costs of its image.
    epsilon_0: the cos-sim convention's epsilon_0.

  Returns:
    ``(epsilon_0' , applicable)``: the converted value and whether both mean similarities exceed
    `MIN_MEAN_SIMILARITY` (where not, epsilon_0' is meaningless and returned as epsilon_0).
  """
  mean_cxx = jnp.mean(jax.lax.stop_gradient(cost_xx))
  mean_cyy = jnp.mean(jax.lax.stop_gradient(cost_yy))
  mean_sxx, mean_syy = 1.0 - mean_cxx, 1.0 - mean_cyy
  applicable = jnp.logical_and(mean_sxx > MIN_MEAN_SIMILARITY, mean_syy > MIN_MEAN_SIMILARITY)
  denominator = jnp.maximum(mean_cxx * mean_cyy, 1e-12)
  factor = jnp.where(applicable, mean_sxx * mean_syy / denominator, 1.0)
  return epsilon_0 * factor, applicable


def gradient_alignment(grad: jax.Array, grad_ref: jax.Array) -> tuple[float, float]:
  """``(|grad| / |grad_ref|, cos(grad, grad_ref))``; the cosine is NaN when |grad| ~ 0.

  Args:
    grad: [n, ...] gradient of the trained value w.r.t. the map's outputs.
    grad_ref: [n, ...] gradient of the reference (DST) on the same batch.

  Returns:
    The norm ratio and the cosine, as floats.
  """
  g, r = np.ravel(np.asarray(grad, np.float64)), np.ravel(np.asarray(grad_ref, np.float64))
  norm_g, norm_r = np.linalg.norm(g), max(np.linalg.norm(r), 1e-300)
  ratio = norm_g / norm_r
  cosine = float(g @ r / (norm_g * norm_r)) if ratio > MIN_GRAD_RATIO else float("nan")
  return float(ratio), cosine


def make_value_and_grad(cost_name: str, init: str, estimator: str):
  """Jitted ``(x, y, epsilon_0) -> ((gap, (info, epsilon_0 used, applicable)), d gap / d y)``.

  epsilon_0 is traced, so one compilation serves every epsilon_0; the rest is static.
  """
  cost, convention = COST_CONVENTIONS[cost_name]

  def value_and_grad(x, y, epsilon_0):
    applicable = jnp.bool_(True)
    if convention == "cos-sim":
      epsilon_0, applicable = cos_sim_epsilon_0(
        gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost), epsilon_0
      )

    def f(y):
      gap, info = gmg.gromov_monge_gap(
        x, y, cost=cost, epsilon_0=epsilon_0, init=init, estimator=estimator
      )
      return gap, (info, epsilon_0, applicable)

    return jax.value_and_grad(f, has_aux=True)(y)

  return jax.jit(value_and_grad)


def make_distortion_grad(cost_name: str):
  """Jitted ``(x, y) -> d DST / d y`` under the cost of `cost_name`."""
  cost, _ = COST_CONVENTIONS[cost_name]
  return jax.jit(
    jax.grad(lambda x, y: gmg.distortion(gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost)), 1)
  )


def solver_table(
  batches: Sequence[tuple[np.ndarray, np.ndarray]],
  costs: Sequence[str],
  epsilons: Sequence[float],
  placement: str,
  inits: Sequence[str] = ("both",),
  estimators: Sequence[str] = ("certified",),
  repeats: int = 1,
) -> list[dict]:
  """GMG diagnostics per (cost, init, estimator, epsilon_0), averaged over the batches.

  Args:
    batches: [(x [n, d_x], y [n, d_y])], x the map's input, y its output.
    costs: names of `COST_CONVENTIONS`.
    epsilons: epsilon_0 values.
    placement: label of the rows ("decoder" / "encoder").
    inits: GW start couplings (`gmg.INITS`).
    estimators: trained values (`gmg.ESTIMATORS`).
    repeats: timed calls per batch after the compilation (the minimum is kept).

  Returns:
    One dict per (cost, estimator, init, epsilon_0). Rows of the cos-sim convention where some
    batch has no positive mean similarity have ``applicable = False`` and a ``reason``.
  """
  rows = []
  for cost_name in costs:
    cost, convention = COST_CONVENTIONS[cost_name]
    grad_dst = make_distortion_grad(cost_name)
    dst_grads = [np.asarray(grad_dst(x, y)) for x, y in batches]
    for estimator in estimators:
      for init in inits:
        fn = make_value_and_grad(cost_name, init, estimator)
        start = time.perf_counter()
        jax.block_until_ready(fn(*batches[0], jnp.float32(epsilons[0])))
        compile_s = time.perf_counter() - start
        for epsilon_0 in epsilons:
          records, times = [], []
          for (x, y), dst_grad in zip(batches, dst_grads, strict=True):
            batch_times = []
            for _ in range(max(repeats, 1)):
              start = time.perf_counter()
              (gap, (info, epsilon_0_used, applicable)), grad = fn(x, y, jnp.float32(epsilon_0))
              jax.block_until_ready(grad)
              batch_times.append(time.perf_counter() - start)
            times.append(min(batch_times))
            ratio, cosine = gradient_alignment(grad, dst_grad)
            records.append(
              dict(
                gap=float(gap),
                entropic=float(info.entropic_gap),
                certified=float(info.certified_gap),
                dst=float(info.distortion),
                epsilon=float(info.epsilon),
                epsilon_0_used=float(epsilon_0_used),
                iterations=float(info.iterations),
                converged=float(info.converged),
                entropy=float(info.plan_entropy_ratio),
                identity_won=float(info.identity_won),
                grad_norm=float(np.linalg.norm(np.asarray(grad))),
                grad_ratio=ratio,
                grad_cos=cosine,
                applicable=bool(applicable),
              )
            )
          mean = {
            k: float(np.mean([r[k] for r in records]))
            for k in records[0]
            if k not in ("grad_cos", "applicable")
          }
          mean["gap_over_dst"] = float(np.mean([r["gap"] / max(r["dst"], 1e-12) for r in records]))
          cosines = [r["grad_cos"] for r in records if not np.isnan(r["grad_cos"])]
          mean["grad_cos"] = float(np.mean(cosines)) if cosines else float("nan")
          mean["cos_batches"] = len(cosines)
          mean["ms"] = 1e3 * float(np.median(times))
          mean["compile_s"] = compile_s
          bad = sum(not r["applicable"] for r in records)
          mean["applicable"] = bad == 0
          mean["reason"] = (
            f"mean cos-sim <= {MIN_MEAN_SIMILARITY:g} in {bad}/{len(records)} batches"
            if bad
            else ""
          )
          rows.append(
            {
              "placement": placement,
              "cost": cost,
              "convention": convention,
              "estimator": estimator,
              "init": init,
              "epsilon_0": epsilon_0,
              "batches": len(records),
              **mean,
            }
          )
  return rows


HEADER = (
  "placement",
  "cost",
  "convention",
  "estimator",
  "init",
  "epsilon_0",
  "epsilon",
  "gap",
  "gap/DST",
  "H/log n",
  "iters",
  "converged",
  "identity_won",
  "grad ratio",
  "grad cos",
  "ms",
)


def format_row(r: dict) -> str:
  """One markdown row of a `solver_table` row."""
  key = (
    f"| {r['placement']} | {r['cost']} | {r['convention']} | {r['estimator']} | {r['init']} | "
    f"{r['epsilon_0']:g} |"
  )
  if not r["applicable"]:
    return key + f" n/a: {r['reason']} |" + " |" * (len(HEADER) - 7)
  cosine = "–" if np.isnan(r["grad_cos"]) else f"{r['grad_cos']:+.2f}"
  if 0 < r["cos_batches"] < r["batches"]:
    cosine += f" ({r['cos_batches']}/{r['batches']})"
  return key + (
    f" {r['epsilon']:.3g} | {r['gap']:.4g} | {r['gap_over_dst']:.3f} | {r['entropy']:.3f} | "
    f"{r['iterations']:.1f} | {r['converged']:.2f} | {r['identity_won']:.2f} | "
    f"{r['grad_ratio']:.3g} | {cosine} | {r['ms']:.1f} |"
  )


def format_table(rows: Sequence[dict]) -> str:
  """Markdown table of `solver_table` rows."""
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  lines += [format_row(r) for r in rows]
  return "\n".join(lines) + "\n"


def finalists(
  rows: Sequence[dict],
  min_ratio: float = 0.05,
  min_cos: float = 0.5,
  min_converged: float = 0.9,
  max_ms: float = 100.0,
) -> list[dict]:
  """Rows whose trained gradient is non-negligible and DST-aligned, with converged solves in time.

  Args:
    rows: `solver_table` rows.
    min_ratio: least mean |grad gap| / |grad DST|.
    min_cos: least mean cosine to DST's gradient (every batch must have a direction).
    min_converged: least fraction of converged solves.
    max_ms: most ms per value + gradient.

  Returns:
    The rows that pass, in their order.
  """
  return [
    r
    for r in rows
    if r["applicable"]
    and r["grad_ratio"] >= min_ratio
    and r["cos_batches"] == r["batches"]
    and r["grad_cos"] >= min_cos
    and r["converged"] >= min_converged
    and r["ms"] <= max_ms
  ]


def downstream(
  epsilons: Sequence[float],
  seeds: Sequence[int],
  variant: str,
  root: str,
  out: str,
  extra: Sequence[str],
) -> str:
  """Short cpu32 runs of `variant` per epsilon_0 (resumable) and their DCI-D table.

  Args:
    epsilons: epsilon_0 values.
    seeds: seeds.
    variant: config-string variant with a GMG regularizer.
    root: directory of the runs.
    out: directory of the aggregated results.
    extra: more "KEY=VALUE" overrides.

  Returns:
    The markdown table.
  """
  import aggregate
  import sweep

  lines = ["| epsilon_0 | seeds | DCI-D | MIG | identity_won |", "|---|---|---|---|---|"]
  for epsilon_0 in epsilons:
    study_root = os.path.join(root, f"eps_{epsilon_0:g}")
    overrides = (*sweep.SETTINGS["cpu32"], f"regularizer.gmg.epsilon_0={epsilon_0!r}", *extra)
    runs = sweep.expand([variant], seeds, overrides)
    sweep.run_all("configs/default.py", runs, study_root)
    summary = aggregate.summarize(
      aggregate.collect(study_root),
      ["dci/disentanglement", "mig/discrete_mig", "train/regularizer/gmg_identity_won"],
    )
    cells = [
      aggregate.format_cell(summary[0].get(m)) if summary else ""
      for m in ("dci/disentanglement", "mig/discrete_mig", "train/regularizer/gmg_identity_won")
    ]
    lines.append(
      f"| {epsilon_0:g} | {summary[0]['n'] if summary else 0} | " + " | ".join(cells) + " |"
    )
  table = "\n".join(lines) + "\n"
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "downstream.md"), "w", encoding="utf-8") as f:
    f.write(f"{variant}, cpu32 setting (experiments/sweep.py), mean ± std over seeds.\n\n{table}")
  return table


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--epsilons", default="0.003,0.01,0.03,0.1,0.3,1")
  p.add_argument("--costs", default=",".join(COST_CONVENTIONS))
  p.add_argument("--inits", default="product,identity,both")
  p.add_argument("--estimators", default="entropic,certified")
  p.add_argument("--placements", default="decoder,encoder")
  p.add_argument("--batches", type=int, default=8)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3, help="timed calls per batch")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--workdir", default="", help="take codes and decoder outputs from this run")
  p.add_argument("--name", default="", help="output file stem (default grid_procedural/grid_run)")
  p.add_argument("--downstream", action="store_true", help="also train and report DCI-D")
  p.add_argument("--variant", default="beta_vae,gmg_cos_decoder")
  p.add_argument("--seeds", default="0")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument(
    "--root",
    default=os.path.join(os.environ.get("GMG_SWEEP_ROOT", "/tmp/gmg_sweeps"), "ablate_epsilon"),
  )
  p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "ablate_epsilon"))
  args = p.parse_args(argv)
  command = " ".join(
    ["python experiments/ablate_epsilon.py", *(sys.argv[1:] if argv is None else argv)]
  )
  epsilons = [float(e) for e in args.epsilons.split(",")]
  grid = dict(
    costs=args.costs.split(","),
    epsilons=epsilons,
    inits=args.inits.split(","),
    estimators=args.estimators.split(","),
    repeats=args.repeats,
  )
  if args.workdir:
    encoder, decoder = run_batches(args.workdir, args.batches, args.batch_size)
    source = f"run {args.workdir}"
  else:
    images_codes = procedural_batches(args.batches, args.batch_size, args.image_size)
    encoder = images_codes
    decoder = [(codes, images) for images, codes in images_codes]
    source = f"procedural {args.image_size}x{args.image_size} images, stand-in codes"
  batches = {"decoder": decoder, "encoder": encoder}
  rows = []
  for placement in args.placements.split(","):
    rows += solver_table(batches[placement], placement=placement, **grid)
  table = format_table(rows)
  chosen = finalists(rows)
  compile_s = sorted(
    {
      (r["placement"], r["cost"], r["convention"], r["estimator"], r["init"]): r["compile_s"]
      for r in rows
    }.values()
  )
  text = (
    f"`{command}`\n\nGMG solver grid ({source}; {args.batches} batches of {args.batch_size}; "
    f"jax {jax.__version__}, {jax.devices()[0].platform}). Compilation (first call) per "
    f"configuration: {compile_s[0]:.1f}-{compile_s[-1]:.1f} s.\n\n{table}\n"
    "Finalists (`finalists`: grad ratio >= 0.05, mean grad cos >= 0.5 with a gradient on every "
    f"batch, converged >= 0.9, <= 100 ms): {len(chosen)} of {len(rows)} rows.\n\n"
    f"{format_table(chosen)}"
  )
  print(text)
  os.makedirs(args.out, exist_ok=True)
  name = args.name or ("grid_run" if args.workdir else "grid_procedural")
  with open(os.path.join(args.out, name + ".md"), "w", encoding="utf-8") as f:
    f.write(text)
  if args.downstream:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(downstream(epsilons, seeds, args.variant, args.root, args.out, args.set))


if __name__ == "__main__":
  main()
