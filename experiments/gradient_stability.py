"""Gradient stability of GMG vs DST: how much the regularizer's gradient changes across batches.

  python experiments/gradient_stability.py                     # a freshly initialized cpu32 VAE
  python experiments/gradient_stability.py --workdir=/tmp/gmg_sweeps/readme_cpu32/beta_vae/seed_0

The paper reports that GMG's gradients are more stable than the distortion's (DST). For a
decoder (from `--workdir`'s latest checkpoint, or freshly initialized in the cpu32 setting of
experiments/sweep.py) and `--batches` batches (codes sampled from the encoder's posterior of
procedural images), this computes the gradient g_b of the regularizer (as the trainer applies it:
on the decoder's sigmoid outputs, gmg_jax.losses.regularizers) w.r.t. the decoder's parameters, and
reports per (regularizer, cost):

* |g|: mean gradient norm over batches;
* rel. var: trace of the covariance of g_b over batches divided by |mean g|^2 (noise-to-signal
  ratio; scale-free, so regularizers of different magnitude compare; lower = more stable);
* cos: mean pairwise cosine similarity of the g_b (1 = every batch pushes the same way);
* |dR/dy| CV: coefficient of variation over batches of the norm of the gradient w.r.t. the
  decoder's outputs y;
* identity_won (GMG): fraction of batches where the solver found no plan better than the map's
  own coupling; there the certified gap and its gradient are exactly 0 (gmg_jax.gmg).

Regularizers, all as the trainer applies them (gmg_jax.losses.regularizers): "dst";
"gmg_entropic", GMG
with `estimator="entropic"` (the default), DST - (E(P_eps) + eps KL), the smooth entropic gap whose
exact gradient gmg_jax.gmg's envelope gradient is (nonzero even when identity_won); and
"gmg_certified", GMG with `estimator="certified"` (0 whenever identity_won). So the stability of
the paper's form of the gap can be compared with DST's either way.

Writes the table to experiments/results/gradient_stability/<tag>.md.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from flax import nnx  # noqa: E402

from gmg_jax.losses import regularizers  # noqa: E402


def load_model(workdir: str):
  """(vae, dataset, config) from a run's checkpoint, or a fresh cpu32 model when `workdir` is ""."""
  if workdir:
    from gmg_jax import saved_runs

    config, graphdef, state, dataset = saved_runs.load_run(workdir)
  else:
    import sweep

    from gmg_jax import data as data_lib
    from gmg_jax import train

    config = sweep.load_config(
      "configs/default.py", sweep.Run("beta_vae", 0, sweep.SETTINGS["cpu32"])
    )
    dataset = data_lib.get_dataset(config.data)
    graphdef, state = train.create_train_state(config, dataset.image_shape)
  return nnx.merge(graphdef, state.modules)[0], dataset, config


def stability(
  vae,
  dataset,
  regularizer: str,
  cost: str,
  num_batches: int,
  batch_size: int,
  epsilon_0: float,
  seed: int = 0,
) -> dict[str, float]:
  """Gradient statistics of one regularizer on the decoder over batches.

  Args:
    vae: a gmg_jax.models.VAE with a decoder.
    dataset: ground-truth dataset for the image batches.
    regularizer: "gmg_entropic", "gmg_certified" or "dst".
    cost: cost name of gmg_jax.gmg.
    num_batches: number of batches.
    batch_size: n.
    epsilon_0: GMG's relative epsilon.
    seed: PRNG seed (same batches for every regularizer).

  Returns:
    {"grad_norm", "rel_var", "cos", "out_grad_cv", "value", "identity_won"}.
  """
  name, fields = regularizer, {"cost": cost}
  if regularizer.startswith("gmg_"):
    name, fields = "gmg", {"estimator": regularizer[4:], "cost": cost, "epsilon_0": epsilon_0}
  reg_fn = regularizers.make_regularizer(ml_collections.ConfigDict({"name": name, name: fields}))
  dec_graph, params, rest = nnx.split(vae.decoder, nnx.Param, ...)

  def value(params, z, y_override=None):
    decoder = nnx.merge(dec_graph, params, rest)
    y = jax.nn.sigmoid(decoder(z)) if y_override is None else y_override
    out, aux = reg_fn(lambda zz: jax.nn.sigmoid(decoder(zz)), z, y, jax.random.key(0))
    return out, aux

  param_grad = jax.jit(jax.grad(lambda p, z: value(p, z)[0]))
  out_grad = jax.jit(jax.value_and_grad(lambda y, p, z: value(p, z, y), has_aux=True))
  encode = jax.jit(lambda x: vae.encode(x))
  decode = jax.jit(lambda z: jax.nn.sigmoid(vae.decode(z)))
  grads, out_norms, values, identity = [], [], [], []
  for b in range(num_batches):
    key_data, key_noise = jax.random.split(jax.random.key(seed * 1000 + b))
    images, _ = dataset.sample_batch(key_data, batch_size)
    mu, logvar = encode(images)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key_noise, mu.shape)
    g = param_grad(params, z)
    grads.append(np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(g)]))
    (val, aux), gy = out_grad(decode(z), params, z)
    out_norms.append(float(jnp.linalg.norm(gy)))
    values.append(float(val))
    identity.append(float(aux.get("gmg_identity_won", 0.0)))
  g = np.stack(grads).astype(np.float64)  # [batches, params]
  mean = g.mean(axis=0)
  trace_var = float(np.sum(g.var(axis=0, ddof=1)))
  norms = np.linalg.norm(g, axis=1)
  unit = g / np.maximum(norms[:, None], 1e-30)
  cos = unit @ unit.T
  pairs = cos[np.triu_indices(len(g), k=1)]
  out_norms = np.asarray(out_norms)
  signal = float(mean @ mean)
  return {
    "value": float(np.mean(values)),
    "grad_norm": float(norms.mean()),
    "rel_var": trace_var / signal if signal > 0 else float("nan"),
    "cos": float(pairs.mean()) if pairs.size and norms.min() > 0 else float("nan"),
    "out_grad_cv": (
      float(out_norms.std() / out_norms.mean()) if out_norms.mean() > 0 else float("nan")
    ),
    "identity_won": float(np.mean(identity)),
  }


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default="", help="a run's workdir (default: fresh cpu32 model)")
  p.add_argument("--costs", default="sqeuclidean,scaled_sqeuclidean,cosine")
  p.add_argument("--batches", type=int, default=16)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--epsilon_0", type=float, default=0.01)
  p.add_argument(
    "--out", default=os.path.join(ROOT, "experiments", "results", "gradient_stability")
  )
  args = p.parse_args(argv)
  vae, dataset, _ = load_model(args.workdir)
  header = ("regularizer", "cost", "value", "|g|", "rel. var", "cos", "|dR/dy| CV", "identity_won")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for cost in args.costs.split(","):
    for regularizer in ("dst", "gmg_entropic", "gmg_certified"):
      s = stability(vae, dataset, regularizer, cost, args.batches, args.batch_size, args.epsilon_0)
      lines.append(
        f"| {regularizer} | {cost} | {s['value']:.4g} | {s['grad_norm']:.3g} | "
        f"{s['rel_var']:.3g} | {s['cos']:.3f} | {s['out_grad_cv']:.3f} | "
        f"{s['identity_won'] if regularizer != 'dst' else '-'} |"
      )
      print(lines[-1], flush=True)
  source = args.workdir or "fresh cpu32 model (seed 0)"
  table = "\n".join(lines) + "\n"
  text = (
    f"Decoder regularizer gradients over {args.batches} batches of {args.batch_size} "
    f"({source}; epsilon_0 = {args.epsilon_0}).\n\n{table}"
  )
  print("\n" + text)
  os.makedirs(args.out, exist_ok=True)
  tag = os.path.basename(os.path.dirname(args.workdir.rstrip("/"))) if args.workdir else "fresh"
  with open(os.path.join(args.out, f"{tag}.md"), "w", encoding="utf-8") as f:
    f.write(text)


if __name__ == "__main__":
  main()
