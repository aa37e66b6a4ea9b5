"""Pairwise cost matrices of a batch, and their low-rank factors for the GW solver.

Three costs, the same on both sides of a map: squared Euclidean, squared Euclidean over its
batch mean (invariant to a global scale), and cosine. `cost_matrix` builds the dense [n, n]
matrix (Gram expansion of the centered batch, one-product backward pass, zero diagonal, clipped
at 0); `cost_factors` writes the same matrix as ``left @ right.T`` of rank d + 2, which
`gmg_jax.gw.solve` uses to make its linearizations ``O(n^2 d)`` on the codes' side
(`solver_factors` says where that pays).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from gmg_jax import gw
from gmg_jax.registry import lookup

CostName = Literal["sqeuclidean", "scaled_sqeuclidean", "cosine"]

# Guards against division by zero for zero vectors and all-equal batches.
TINY = 1e-12


def _flatten(z: jax.Array) -> jax.Array:
  return jnp.reshape(z, (z.shape[0], -1))


@jax.custom_vjp
def _gram(z: jax.Array) -> jax.Array:
  """``z z^T`` whose backward pass is one product, ``(G + G^T) z``.

  Autodiff transposes ``z @ z.T`` into two products (one per operand), each as costly as the
  forward pass (``n^2 d``, with d = 12,288 for 64x64x3 images): a third of the cost matrices'
  work, saved here. Both run at full float32 precision (`gw.PRECISION`).
  """
  return gw.matmul(z, z.T)


def _gram_fwd(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  return gw.matmul(z, z.T), z


def _gram_bwd(z: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
  return (gw.matmul(cotangent + cotangent.T, z),)


_gram.defvjp(_gram_fwd, _gram_bwd)


def _centered(z: jax.Array) -> jax.Array:
  """``z`` minus its batch mean: the same distances, and a Gram expansion whose cancellation is
  relative to the batch's spread, not to its offset.

  A flat batch (a fresh decoder's sigmoid outputs: 0.62 +- 2e-5 in every pixel) has squared
  distances ~1e-7 against squared norms ~25; uncentered, float32 round-off (~2e-6) is all the
  expansion returns.
  """
  return z - jnp.mean(z, axis=0, keepdims=True)


def _sq_norms_and_gram(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  gram = _gram(z)
  return jnp.diagonal(gram), gram


def sqeuclidean_cost(z: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances.

  Args:
    z: [n, ...] points (flattened internally).

  Returns:
    [n, n] symmetric matrix with zero diagonal.
  """
  # The Gram expansion avoids an [n, n, d] difference tensor (d = 12288 for images).
  sq, gram = _sq_norms_and_gram(_centered(_flatten(z)))
  cost = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
  return cost * (1.0 - jnp.eye(z.shape[0], dtype=cost.dtype))


def scaled_sqeuclidean_cost(z: jax.Array) -> jax.Array:
  """Squared Euclidean distances divided by their batch mean (invariant to a global scale).

  Args:
    z: [n, ...] points.

  Returns:
    [n, n] matrix with mean 1 (or all zeros when all points coincide).
  """
  cost = sqeuclidean_cost(z)
  return cost / jnp.maximum(jnp.mean(cost), TINY)


def _lifted_unit(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(u, w)``: ``u = z / |z|`` (0 for a zero vector) and ``w = sqrt(1 - |u|^2)`` (detached).

  ``[u, w]`` is a unit vector for every row: ``w`` is 1 for a zero vector and exactly 0 for a
  vector with ``|z|^2 >= 1e-12``, so a zero vector is at cosine distance 1 from every other
  vector and 0 from another zero vector (the same point), and the cost matrix has the exact
  rank ``d + 2`` form of `cost_factors`.
  """
  z = _flatten(z)
  sq = jnp.sum(z * z, axis=1)
  # max(|z|^2, tiny) keeps the value and the gradient finite at a zero vector.
  floored = jnp.maximum(sq, TINY)
  unit = z * jax.lax.rsqrt(floored)[:, None]
  # |u|^2 = sq / floored: exactly 1 (x / x) unless |z|^2 < tiny.
  rest = jnp.sqrt(jnp.maximum(1.0 - sq / floored, 0.0))
  return unit, jax.lax.stop_gradient(rest)


def cosine_cost(z: jax.Array) -> jax.Array:
  """Pairwise cosine distances ``1 - cos(z_i, z_j)`` (a zero vector is at distance 1 from every
  nonzero vector and 0 from another zero vector).

  Args:
    z: [n, ...] points.

  Returns:
    [n, n] symmetric matrix in [0, 2] with zero diagonal.
  """
  unit, rest = _lifted_unit(z)
  # The lifted points [u, w] are unit vectors, so 1 - cos = |[u, w]_i - [u, w]_j|^2 / 2: as a
  # (centered) squared distance, 1 - cos of near-parallel vectors keeps its digits, which
  # 1 - u_i.u_j loses to round-off below ~1e-7.
  return 0.5 * sqeuclidean_cost(jnp.concatenate([unit, rest[:, None]], axis=1))


COSTS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "sqeuclidean": sqeuclidean_cost,
  "scaled_sqeuclidean": scaled_sqeuclidean_cost,
  "cosine": cosine_cost,
}


def cost_matrix(z: jax.Array, cost: CostName) -> jax.Array:
  """Pairwise cost matrix ``[n, n]`` of the batch ``z [n, ...]`` under the named cost."""
  return lookup(COSTS, cost, "cost")(z)


def _sqeuclidean_factors(z: jax.Array) -> gw.Factors:
  z = _centered(z)
  sq = jnp.sum(z * z, axis=1, keepdims=True)
  ones = jnp.ones_like(sq)
  # |z_i|^2 + |z_j|^2 - 2 z_i.z_j
  return gw.Factors(jnp.concatenate([sq, ones, -2.0 * z], 1), jnp.concatenate([ones, sq, z], 1))


def _scaled_sqeuclidean_factors(z: jax.Array) -> gw.Factors:
  left, right = _sqeuclidean_factors(z)
  # mean(L R^T) = mean(L, 0) . mean(R, 0): the matrix's mean without forming it.
  mean = jnp.dot(jnp.mean(left, axis=0), jnp.mean(right, axis=0), precision=gw.PRECISION)
  return gw.Factors(left / jnp.maximum(mean, TINY), right)


def _cosine_factors(z: jax.Array) -> gw.Factors:
  unit, rest = _lifted_unit(z)
  ones, rest = jnp.ones_like(rest[:, None]), rest[:, None]
  # 1 - u_i.u_j - w_i w_j
  return gw.Factors(
    jnp.concatenate([ones, -unit, -rest], 1), jnp.concatenate([ones, unit, rest], 1)
  )


_FACTORS: dict[str, Callable[[jax.Array], gw.Factors]] = {
  "sqeuclidean": _sqeuclidean_factors,
  "scaled_sqeuclidean": _scaled_sqeuclidean_factors,
  "cosine": _cosine_factors,
}


def cost_factors(z: jax.Array, cost: CostName) -> gw.Factors:
  """``cost_matrix(z, cost)`` as ``left @ right.T`` of rank ``d + 2`` (d = features of a point).

  Equal to the matrix up to round-off: its diagonal is 0 up to round-off and its entries are not
  clipped at 0. `gmg_jax.gmg.gromov_monge_gap` hands them to the fused solver for a side whose
  rank is small next to the batch (the codes), where they make each linearization ``O(n^2 d)``.

  Args:
    z: [n, ...] points (flattened internally).
    cost: a name of `COSTS`.

  Returns:
    `gmg_jax.gw.Factors` with [n, d + 2] ``left`` and ``right``.
  """
  return lookup(_FACTORS, cost, "cost")(_flatten(z))


def solver_factors(z: jax.Array, cost: CostName) -> gw.Factors | None:
  """`cost_factors` where they make the solver's linearizations cheaper, else None.

  ``C_X P C_Y`` costs ``3 r n^2`` flops through rank-r factors against ``2 n^3`` dense: the codes'
  side (d = 10 features, r = 12) pays from n = 19 on, an image side never does.
  """
  n, d = _flatten(z).shape
  return cost_factors(z, cost) if 3 * (d + 2) < 2 * n else None
