"""Shared test fixtures: tiny configs that train in seconds on a CPU."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `from configs import default`, as `python -m gmg_jax.main` sees it.
  sys.path.insert(0, ROOT)


def tiny_config(arg: str = ""):
  """The runlocal config shrunk further: 16x16 images, a small MLP, no evaluation."""
  from configs import default

  config = default.get_config(",".join(filter(None, ["runlocal", arg])))
  config.data.image_size = 16
  config.model.mlp_hidden = (32,)
  config.model.latent_dim = 4
  config.train.batch_size = 16
  config.train.num_steps = 20
  config.train.log_every = 5
  config.train.checkpoint_every = 10
  config.train.progress_bar = False
  config.eval.every_steps = 0
  return config


def tiny_main_command(workdir, *overrides: str, variant: str = "") -> list[str]:
  """`python -m gmg_jax.main` on `tiny_config`'s sizes (run from ROOT); `overrides` go last."""
  return [
    sys.executable,
    "-m",
    "gmg_jax.main",
    f"--config=configs/default.py:{','.join(filter(None, ['runlocal', variant]))}",
    f"--workdir={workdir}",
    "--config.data.image_size=16",
    "--config.model.mlp_hidden=(32,)",
    "--config.model.latent_dim=4",
    "--config.train.batch_size=16",
    "--config.train.progress_bar=False",
    "--config.eval.every_steps=0",
    *overrides,
  ]


@pytest.fixture
def tiny():
  return tiny_config
