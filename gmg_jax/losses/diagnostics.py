"""The gradient-share probe's diagnostics: how much of the loss's gradient w.r.t. the regularized
outputs is the regularizer's, and how it compares with the distortion's.

`gmg_jax.losses.loss.vae_loss(..., probe=...)` computes the gradients; these functions turn them
into the logged "grad/..." scalars, and `gradient_summary` into the run's summary line.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Aux = dict[str, jax.Array]
# Key of the regularizer's output gradient in vae_loss's aux (an array; the step pops it).
OUTPUT_GRADIENT = "_regularizer_output_gradient"


def output_gradient_diagnostics(reg_grad: jax.Array, dst_grad: jax.Array) -> dict[str, jax.Array]:
  """Norms of the regularizer's and the distortion's gradients w.r.t. the same outputs, their
  ratio and cosine (a GMG whose plan sits on the map's own coupling has ratio ~0)."""
  reg_norm, dst_norm = jnp.linalg.norm(reg_grad), jnp.linalg.norm(dst_grad)
  tiny = jnp.finfo(reg_norm.dtype).tiny
  return {
    "grad/regularizer": reg_norm,
    "grad/distortion": dst_norm,
    "grad/regularizer_to_distortion": reg_norm / jnp.maximum(dst_norm, tiny),
    "grad/cosine_to_distortion": jnp.vdot(reg_grad, dst_grad)
    / jnp.maximum(reg_norm * dst_norm, tiny),
  }


# Below this share of the output gradient, a regularizer is logged (and summarized) as negligible.
NEGLIGIBLE_SHARE = 0.01


def gradient_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
  """Medians of the logged output-gradient diagnostics (None without a regularizer whose output
  gradient is measured, `RegularizerSpec.reads_outputs`).

  "negligible" is set when the regularizer's median share of the output gradient is below
  `NEGLIGIBLE_SHARE`: the run trained (almost) without it.
  """
  rows = [r for r in records if r.get("grad/regularizer_share") is not None]
  if not rows:
    return None

  def median(key):  # None for a regularizer without a distortion (no ratio, no cosine logged).
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.median(values)) if values else None

  share = median("grad/regularizer_share")
  return {
    "logged_steps": len(rows),
    "median_regularizer_share": share,
    "median_regularizer_to_distortion": median("grad/regularizer_to_distortion"),
    "median_cosine_to_distortion": median("grad/cosine_to_distortion"),
    "negligible_fraction": float(np.mean([bool(r["grad/negligible"]) for r in rows])),
    "negligible": share < NEGLIGIBLE_SHARE,
  }


def regularizer_share(reg_grad: jax.Array, output_grad: jax.Array, weight: float) -> Aux:
  """How much of the loss's gradient w.r.t. the regularized outputs is the regularizer's.

  `output_grad` is the whole loss's gradient w.r.t. the outputs and `reg_grad` the regularizer's
  own, so the rest of the loss contributes `output_grad - weight * reg_grad`. The share is
  |weight g_reg| / (|weight g_reg| + |g_rest|), in [0, 1]; "grad/negligible" marks a share below
  `NEGLIGIBLE_SHARE`.
  """
  weighted = weight * reg_grad
  reg_norm = jnp.linalg.norm(weighted)
  rest_norm = jnp.linalg.norm(output_grad - weighted)
  share = reg_norm / jnp.maximum(reg_norm + rest_norm, jnp.finfo(reg_norm.dtype).tiny)
  return {"grad/regularizer_share": share, "grad/negligible": share < NEGLIGIBLE_SHARE}
