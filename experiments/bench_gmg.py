r"""GMG value + gradient against POT's entropic GW, and the epsilon_0 ablation, in one run.

    python experiments/bench_gmg.py                       # full default run (~5 min, 2 CPU cores)
    python experiments/bench_gmg.py --sizes 64 --pot_costs cosine --grid_costs cosine \
        --grid_data structured --repeats 3 --pot_repeats 1 --grid_pot_repeats 0   # ~20 s

Table 1 (speed): jitted value + gradient (w.r.t. y) of `gmg.gromov_monge_gap` at n in `--sizes`, per
GW solver in `--solvers` (default: the fused one; `--solvers fused ott` adds ott-jax's, side by
side), from the start `--pot_init` (default: the product coupling, POT's only start; "both" doubles
our work), for (d_x, d_y) = (12288, 10) ("enc": x = image, y = code) and (10, 12288) ("dec": x =
code, y = image), against `ot.gromov.entropic_gromov_wasserstein2` in float64 on the same cost
matrices (ours, computed in float32, cast to float64). Conventions (POT's inner Sinkhorn runs on
twice the linearized cost): ott/ours at absolute epsilon e equals POT at 2e, and POT's value
equals 2 * `info.gw_energy` (ours has the 1/2).
Both get the same outer tolerance, inner Sinkhorn tolerance and iteration caps; the stopping rules
differ (ott: relative change of the linearized cost; POT: Frobenius change of the plan, checked
every 10th outer iteration; inner: ott L1 vs POT L2 marginal error). POT times only its solve (given
the cost matrices); ours includes the cost matrices and the backward pass. The plain distortion (DST
baseline) value + gradient is timed next to it (GMG/DST = the GMG overhead); `C_ms` times our value
+ gradient from the cost matrices (POT's inputs; POT/C = equal work). All times are medians over
repeats after one warm-up call (whose time, compile included, is the `compile` column, in seconds).
The machine is shared: read ratios, not absolute times.

Table 2 (epsilon_0 ablation, n = `--grid_n`, x = image, y = code): for each cost and epsilon_0,
time per value + gradient (of the default, entropic, value), outer iterations, `converged`, plan
entropy / log n (1 = matching, 2 = product coupling), `identity_won`, the certified gap
(`info.certified_gap`) and its ratio to the distortion. epsilon_0 is passed as a traced argument,
so one compile serves the whole epsilon_0 column. `eff_e0` = epsilon / (mean C_X * mean C_Y)
shows where gmg.py's floor on the normalized epsilon (1.2e-4 in float32) overrides epsilon_0.
POT's columns solve the same cost matrices at the same epsilon (POT's check at outer iteration 0
stops it after 1 iteration when the plan barely leaves the product coupling; `conv` False also
counts inner warnings and underflow).

Batches:
  random: x ~ U[0, 1]^12288 (noise images), y ~ N(0, I_10), independent (a map that ignores x).
  structured: x = procedural Shapes3D-like 64x64x3 images / 255 (gmg_jax.data); y = the ground-truth
    factors standardized to zero mean / unit variance, padded with 4 zero dims to 10, rotated by a
    fixed random orthogonal 10x10 matrix, plus N(0, 0.05^2) noise (a disentangled code up to a
    rotation).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import ot

from gmg_jax import gmg
from gmg_jax.data import get_dataset

IMAGE_SIZE = 64
CODE_DIM = 10


# ----------------------------------------------------------------------------- batches


def random_batch(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """Noise images and independent Gaussian codes.

  Args:
    key: PRNG key.
    n: batch size.

  Returns:
    ``(images [n, 12288], codes [n, 10])`` float32.
  """
  kx, ky = jax.random.split(key)
  images = jax.random.uniform(kx, (n, IMAGE_SIZE * IMAGE_SIZE * 3), jnp.float32)
  codes = jax.random.normal(ky, (n, CODE_DIM), jnp.float32)
  return images, codes


def structured_batch(key: jax.Array, n: int, dataset: Any) -> tuple[jax.Array, jax.Array]:
  """Procedural Shapes3D-like images and a rotated, noisy code of their factors.

  Args:
    key: PRNG key.
    n: batch size.
    dataset: the procedural Shapes3D dataset.

  Returns:
    ``(images [n, 12288], codes [n, 10])`` float32 (module docstring).
  """
  kb, kq, kn = jax.random.split(key, 3)
  images, factors = dataset.sample_batch(kb, n)
  sizes = jnp.asarray(dataset.factor_sizes, jnp.float32)
  # Standardize each factor with the mean and variance of a uniform grid of its size.
  z = (factors.astype(jnp.float32) - (sizes - 1.0) / 2.0) / jnp.sqrt((sizes**2 - 1.0) / 12.0)
  z = jnp.concatenate([z, jnp.zeros((n, CODE_DIM - z.shape[1]), jnp.float32)], axis=1)
  rotation, _ = jnp.linalg.qr(jax.random.normal(kq, (CODE_DIM, CODE_DIM), jnp.float32))
  codes = z @ rotation + 0.05 * jax.random.normal(kn, (n, CODE_DIM), jnp.float32)
  return jnp.reshape(images, (n, -1)).astype(jnp.float32) / 255.0, codes


def make_batch(kind: str, key: jax.Array, n: int, dataset: Any) -> tuple[jax.Array, jax.Array]:
  """``(images, codes)`` of the named kind ("random" or "structured")."""
  if kind == "random":
    return random_batch(key, n)
  if kind == "structured":
    return structured_batch(key, n, dataset)
  raise ValueError(f"Unknown batch kind {kind!r}.")


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> tuple[float, float, Any]:
  """First-call time (compile + run) and median time of `repeats` further calls, in seconds.

  Args:
    fn: function of `args`; JAX outputs are blocked on.
    args: positional arguments.
    repeats: timed calls after the warm-up.

  Returns:
    ``(first_s, median_s, last_output)``.
  """
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times)), out


def gmg_value_and_grad(cost: str, solver_kwargs: dict[str, Any]) -> Callable[..., Any]:
  """Jitted ``(x, y, epsilon_0) -> ((gap, info), d gap / d y)`` (epsilon_0 traced)."""

  def loss(y: jax.Array, x: jax.Array, epsilon_0: jax.Array) -> tuple[jax.Array, Any]:
    return gmg.gromov_monge_gap(x, y, cost=cost, epsilon_0=epsilon_0, **solver_kwargs)

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  return jax.jit(lambda x, y, epsilon_0: grad_fn(y, x, epsilon_0))


def gmg_from_costs_value_and_grad(solver_kwargs: dict[str, Any]) -> Callable[..., Any]:
  """Jitted ``(C_X, C_Y, epsilon_0) -> ((gap, info), d gap / d C_Y)``: POT's inputs, no costs."""

  def loss(cost_yy: jax.Array, cost_xx: jax.Array, epsilon_0: jax.Array) -> tuple[jax.Array, Any]:
    return gmg.gromov_monge_gap_from_costs(cost_xx, cost_yy, epsilon_0=epsilon_0, **solver_kwargs)

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  return jax.jit(lambda cost_xx, cost_yy, epsilon_0: grad_fn(cost_yy, cost_xx, epsilon_0))


def dst_value_and_grad(cost: str) -> Callable[..., Any]:
  """Jitted ``(x, y) -> (DST, d DST / d y)``: the plain-distortion baseline."""

  def loss(y: jax.Array, x: jax.Array) -> jax.Array:
    return gmg.distortion(gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost))

  grad_fn = jax.value_and_grad(loss)
  return jax.jit(lambda x, y: grad_fn(y, x))


def pot_solve(
  cost_xx: np.ndarray, cost_yy: np.ndarray, epsilon: float, args: argparse.Namespace
) -> tuple[float, int, bool, int]:
  """POT's float64 entropic GW at POT-epsilon ``2 * epsilon`` with our budget and tolerances.

  Args:
    cost_xx: [n, n] float64 source costs.
    cost_yy: [n, n] float64 target costs.
    epsilon: absolute epsilon in ott's (our) convention.
    args: flags (tolerances and caps).

  Returns:
    ``(value, outer iterations, converged, inner warnings)``; the value has no 1/2.
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    value, log = ot.gromov.entropic_gromov_wasserstein2(
      cost_xx,
      cost_yy,
      loss_fun="square_loss",
      epsilon=2.0 * epsilon,
      max_iter=args.max_iterations,
      tol=args.threshold,
      log=True,
      numItermax=args.sinkhorn_max_iterations,
      stopThr=args.sinkhorn_threshold,
    )
  errors = log["err"]
  # POT checks ||T - T_prev|| at outer iterations 0, 10, 20, ... and stops one step later.
  outer_ok = bool(errors[-1] <= args.threshold)
  iterations = 10 * (len(errors) - 1) + 1 if outer_ok else args.max_iterations
  inner_warnings = sum(
    "converge" in str(w.message) or "numerical" in str(w.message) for w in caught
  )
  finite = bool(np.isfinite(value)) and bool(np.all(np.isfinite(log["T"])))
  return float(value), iterations, outer_ok and inner_warnings == 0 and finite, inner_warnings


# ----------------------------------------------------------------------------- tables


def _solver_kwargs(args: argparse.Namespace) -> dict[str, Any]:
  return dict(
    max_iterations=args.max_iterations,
    threshold=args.threshold,
    sinkhorn_max_iterations=args.sinkhorn_max_iterations,
    sinkhorn_threshold=args.sinkhorn_threshold,
  )


def table_pot(args: argparse.Namespace, dataset: Any) -> None:
  """Table 1: ours vs POT float64, value + gradient, both directions, each size."""
  print(
    f"\n== Table 1: GMG value+grad (ours, jit, f32) vs POT entropic_gromov_wasserstein2 (f64)"
    f"\n   data={args.pot_data}, epsilon_0={args.pot_epsilon_0} (mean rule), init={args.pot_init}, "
    f"tol outer={args.threshold} inner={args.sinkhorn_threshold}, caps "
    f"{args.max_iterations} outer / {args.sinkhorn_max_iterations} inner"
  )
  head = (
    f"{'cost':>18s} {'solver':>6s} {'n':>4s} {'dir':>3s} {'eps(ours)':>9s} {'compile':>7s} "
    f"{'ours_ms':>8s} {'it':>3s} {'conv':>5s} {'H/logn':>6s} {'2*E_ours':>10s} "
    f"{'POT_ms':>8s} {'it':>3s} {'conv':>5s} {'POT_value':>10s} {'rel_diff':>8s} "
    f"{'POT/ours':>8s} {'C_ms':>6s} {'POT/C':>6s} {'DST_ms':>7s} {'GMG/DST':>7s}"
  )
  print(head)
  for cost, solver in ((c, s) for c in args.pot_costs for s in args.solvers):
    solver_kwargs = dict(_solver_kwargs(args), solver=solver, init=args.pot_init)
    gmg_fn = gmg_value_and_grad(cost, solver_kwargs)
    dst_fn = dst_value_and_grad(cost)
    from_costs_fn = gmg_from_costs_value_and_grad(solver_kwargs)
    for n in args.sizes:
      images, codes = make_batch(args.pot_data, jax.random.key(args.seed), n, dataset)
      large = n >= args.large_n
      repeats = args.repeats_large if large else args.repeats
      pot_repeats = args.pot_repeats_large if large else args.pot_repeats
      for direction, (x, y) in (("enc", (images, codes)), ("dec", (codes, images))):
        e0 = jnp.float32(args.pot_epsilon_0)
        first, ours_s, ((_, info), grad) = timed(gmg_fn, (x, y, e0), repeats)
        assert bool(jnp.all(jnp.isfinite(grad))), "non-finite gradient"
        _, dst_s, _ = timed(dst_fn, (x, y), repeats)
        epsilon = float(info.epsilon)
        cxx32, cyy32 = gmg.cost_matrix(x, cost), gmg.cost_matrix(y, cost)
        _, costs_s, _ = timed(from_costs_fn, (cxx32, cyy32, e0), repeats)
        cxx, cyy = np.asarray(cxx32, np.float64), np.asarray(cyy32, np.float64)
        pot_line = (
          f"{'skipped':>8s} {'':>3s} {'':>5s} {'':>10s} {'':>8s} {'':>8s} "
          f"{1e3 * costs_s:6.1f} {'':>6s}"
        )
        if n <= args.pot_max_n:
          times = []
          for _ in range(pot_repeats):
            start = time.perf_counter()
            value, pot_it, pot_conv, _ = pot_solve(cxx, cyy, epsilon, args)
            times.append(time.perf_counter() - start)
          pot_s = float(np.median(times))
          ours_value = 2.0 * float(info.gw_energy)
          rel = abs(value - ours_value) / max(abs(value), 1e-30)
          pot_line = (
            f"{1e3 * pot_s:8.1f} {pot_it:3d} {str(pot_conv):>5s} "
            f"{value:10.4g} {rel:8.1e} {pot_s / ours_s:8.1f} "
            f"{1e3 * costs_s:6.1f} {pot_s / costs_s:6.1f}"
          )
        print(
          f"{cost:>18s} {solver:>6s} {n:4d} {direction:>3s} {epsilon:9.3g} {first:7.1f} "
          f"{1e3 * ours_s:8.1f} {int(info.iterations):3d} "
          f"{str(bool(info.converged)):>5s} {float(info.plan_entropy_ratio):6.3f} "
          f"{2.0 * float(info.gw_energy):10.4g} {pot_line} {1e3 * dst_s:7.2f} "
          f"{ours_s / dst_s:7.1f}",
          flush=True,
        )


def table_epsilon(args: argparse.Namespace, dataset: Any) -> None:
  """Table 2: the epsilon_0 ablation per data kind and cost (x = image, y = code)."""
  n = args.grid_n
  print(
    f"\n== Table 2: epsilon_0 ablation, n={n}, x = image (12288), y = code (10), "
    f"value+grad w.r.t. y, median of {args.grid_repeats}"
  )
  print(
    f"{'data':>10s} {'cost':>18s} {'eps0':>6s} {'eff_e0':>7s} {'ms':>7s} {'it':>3s} "
    f"{'conv':>5s} {'H/logn':>6s} {'id_won':>6s} {'cert_gap':>10s} {'DST':>10s} "
    f"{'cert/DST':>8s} {'DST_ms':>7s} {'POT_ms':>8s} {'it':>3s} {'conv':>5s} {'POT/ours':>8s}"
  )
  solver_kwargs = _solver_kwargs(args)
  for cost in args.grid_costs:
    gmg_fn = gmg_value_and_grad(cost, solver_kwargs)
    dst_fn = dst_value_and_grad(cost)
    for kind in args.grid_data:
      x, y = make_batch(kind, jax.random.key(args.seed + 1), n, dataset)
      _, dst_s, _ = timed(dst_fn, (x, y), args.grid_repeats)
      mean_xy = float(jnp.mean(gmg.cost_matrix(x, cost)) * jnp.mean(gmg.cost_matrix(y, cost)))
      cxx = np.asarray(gmg.cost_matrix(x, cost), np.float64)
      cyy = np.asarray(gmg.cost_matrix(y, cost), np.float64)
      for e0 in args.grid_epsilon_0:
        _, sec, ((_, info), _) = timed(gmg_fn, (x, y, jnp.float32(e0)), args.grid_repeats)
        dst, certified = float(info.distortion), float(info.certified_gap)
        pot = ""
        if args.grid_pot_repeats > 0:
          times = []
          for _ in range(args.grid_pot_repeats):
            start = time.perf_counter()
            _, pot_it, pot_conv, _ = pot_solve(cxx, cyy, float(info.epsilon), args)
            times.append(time.perf_counter() - start)
          pot_s = float(np.median(times))
          pot = f" {1e3 * pot_s:8.1f} {pot_it:3d} {str(pot_conv):>5s} {pot_s / sec:8.1f}"
        print(
          f"{kind:>10s} {cost:>18s} {e0:6.3f} "
          f"{float(info.epsilon) / max(mean_xy, 1e-30):7.4f} {1e3 * sec:7.1f} "
          f"{int(info.iterations):3d} {str(bool(info.converged)):>5s} "
          f"{float(info.plan_entropy_ratio):6.3f} "
          f"{str(bool(info.identity_won)):>6s} {certified:10.4g} {dst:10.4g} "
          f"{certified / max(dst, 1e-30):8.4f} {1e3 * dst_s:7.2f}{pot}",
          flush=True,
        )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
  parser.add_argument(
    "--pot_costs", nargs="+", default=["cosine", "scaled_sqeuclidean"], choices=sorted(gmg.COSTS)
  )
  parser.add_argument("--pot_epsilon_0", type=float, default=0.01)
  parser.add_argument("--pot_data", default="structured", choices=["random", "structured"])
  parser.add_argument(
    "--pot_init",
    default="product",
    choices=gmg.INITS,
    help="our start(s) in table 1 (POT: product)",
  )
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--pot_repeats", type=int, default=5)
  parser.add_argument(
    "--large_n", type=int, default=256, help="n from which the *_large repeat counts apply"
  )
  parser.add_argument("--repeats_large", type=int, default=3)
  parser.add_argument("--pot_repeats_large", type=int, default=2)
  parser.add_argument("--pot_max_n", type=int, default=256, help="skip POT above this n")
  parser.add_argument("--grid_n", type=int, default=64)
  parser.add_argument("--grid_epsilon_0", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1])
  parser.add_argument(
    "--grid_costs", nargs="+", default=sorted(gmg.COSTS), choices=sorted(gmg.COSTS)
  )
  parser.add_argument(
    "--grid_data", nargs="+", default=["random", "structured"], choices=["random", "structured"]
  )
  parser.add_argument("--grid_repeats", type=int, default=3)
  parser.add_argument("--grid_pot_repeats", type=int, default=1, help="0 skips POT in table 2")
  parser.add_argument("--tables", nargs="+", default=["pot", "epsilon"], choices=["pot", "epsilon"])
  parser.add_argument("--max_iterations", type=int, default=50)
  parser.add_argument("--threshold", type=float, default=1e-3)
  parser.add_argument("--sinkhorn_max_iterations", type=int, default=1000)
  parser.add_argument("--sinkhorn_threshold", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--solvers",
    nargs="+",
    default=["fused"],
    choices=gmg.SOLVERS,
    help="table 1's GW solvers ('fused ott': both, side by side)",
  )
  args = parser.parse_args()

  dataset = get_dataset(
    ml_collections.ConfigDict(
      dict(name="shapes3d_procedural", source="files", data_dir="", image_size=IMAGE_SIZE)
    )
  )
  print(
    f"jax {jax.__version__}, POT {ot.__version__}, device {jax.devices()[0].device_kind}, "
    f"x64={jax.config.jax_enable_x64}"
  )
  start = time.perf_counter()
  if "pot" in args.tables:
    table_pot(args, dataset)
  if "epsilon" in args.tables:
    table_epsilon(args, dataset)
  print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
