"""Shared test fixtures: a seeded `rng`, float64 on demand, tiny configs that train in seconds."""

import hashlib
import os
import sys

import jax
import numpy as np
import pytest

from gmg_jax.config import get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_digest(root: str) -> dict[str, str]:
  """{relative path: sha256} of every file under `root` (empty if it does not exist): a workdir
  compared before and after a command that must write nothing."""
  digests = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return digests


@pytest.fixture
def rng() -> np.random.Generator:
  """A numpy generator seeded the same in every test; draw jax keys from it where needed."""
  return np.random.default_rng(0)


@pytest.fixture
def enable_x64():
  """Float64 for the test (finite differences, brute force); the previous setting is restored."""
  with jax.enable_x64(True):
    yield


def tiny_config(arg: str = ""):
  """`runlocal,tiny` (16x16 images, a (32,) MLP, 20 steps, no evaluation), then `arg`'s variants."""
  return get_config(",".join(filter(None, ["runlocal", "tiny", arg])))


def tiny_main_command(workdir, *overrides: str, variant: str = "") -> list[str]:
  """`python -m gmg_jax.main` on `tiny_config`'s config (run from ROOT); `overrides` go last."""
  return [
    sys.executable,
    "-m",
    "gmg_jax.main",
    f"--config=configs/default.py:{','.join(filter(None, ['runlocal', 'tiny', variant]))}",
    f"--workdir={workdir}",
    *overrides,
  ]


@pytest.fixture
def tiny():
  return tiny_config
