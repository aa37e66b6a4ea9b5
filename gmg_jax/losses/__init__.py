"""Where a loss lives: objectives, regularizers, their terms, the maps they regularize and the
diagnostics of their gradients, each registered with a spec the rest of the code reads.

  from gmg_jax.losses import register_regularizer

  @register_regularizer("isometry", reads_outputs=True)
  def isometry(map_fn, x, y, key, *, power=2.0):
    ...
    return value, {"isometry": value}

`config.regularizer.name = "isometry"` then trains it, with `config.regularizer.isometry.power`
(docs/extending.md). `build(config)` resolves a run's losses once, before its loop.

This package's own module imports no JAX (configs register losses before JAX loads):

  registry      the specs and the tables; register_regularizer, register_objective
  fields        the loss fields of a config: their checks, what a run does not read
  terms         KL, reconstruction, total correlation, HFS, ... (pure array functions)
  objectives    the built-in objectives, the batch's `Inputs`, FactorVAE's critic
  regularizers  GMG, DST, the Jacobian penalty
  maps          the encoder and decoder maps, the "local"/"global" scope of a regularizer
  diagnostics   the regularizer's share of the output gradient
  loss          vae_loss, make_loss, build
"""

from __future__ import annotations

from typing import Any

from gmg_jax.losses.registry import (
  Critic,
  ObjectiveSpec,
  RegularizerSpec,
  objective_spec,
  objective_specs,
  register_objective,
  register_regularizer,
  regularizer_spec,
  regularizer_specs,
)

__all__ = [
  "Critic",
  "ObjectiveSpec",
  "RegularizerSpec",
  "build",
  "objective_spec",
  "objective_specs",
  "register_objective",
  "register_regularizer",
  "regularizer_spec",
  "regularizer_specs",
]


def build(config: Any) -> Any:
  """`gmg_jax.losses.loss.build`: the run's `Losses`, resolved once before its loop."""
  from gmg_jax.losses import loss  # noqa: PLC0415 (JAX loads on first use, not on registering)

  return loss.build(config)
