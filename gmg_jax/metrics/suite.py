"""Entry point: compute named metrics of a representation on a ground-truth dataset.

The array metrics (DCI, MIG, SAP, modularity/explicitness, IRS, the unsupervised scores) share
one train set of `num_train` and one test set of `num_test` random samples, encoded once (IRS
and the unsupervised scores read only the train set); the FactorVAE and BetaVAE scores
draw their own fixed-factor batches. disentanglement_lib draws a fresh set per metric; sharing
one is statistically the same and encodes 4x fewer images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from gmg_jax.metrics import sampled
from gmg_jax.metrics.dci import dci
from gmg_jax.metrics.explicitness import modularity_explicitness
from gmg_jax.metrics.information import check_mode, mig
from gmg_jax.metrics.irs import irs
from gmg_jax.metrics.sap import sap
from gmg_jax.metrics.unsupervised import unsupervised

Split = tuple[np.ndarray, np.ndarray]

# name -> f(train (codes, factors), test (codes, factors), mode, random_state) -> scores
ARRAY_METRICS: dict[str, Callable[[Split, Split, str, int], dict]] = {
  "dci": lambda train, test, mode, seed: dci(*train, *test, mode=mode, random_state=seed),
  "mig": lambda train, test, mode, seed: mig(*train, mode=mode),
  "sap": lambda train, test, mode, seed: sap(*train, *test, mode=mode, random_state=seed),
  "modularity_explicitness": lambda train, test, mode, seed: modularity_explicitness(
    *train, *test, mode=mode
  ),
  "irs": lambda train, test, mode, seed: irs(*train, mode=mode),
  "unsupervised": lambda train, test, mode, seed: unsupervised(train[0], mode=mode),
}
SAMPLED_METRICS = ("factor_vae", "beta_vae")
METRIC_NAMES = (*ARRAY_METRICS, *SAMPLED_METRICS)


def trainer_flag(names: Sequence[str]) -> str:
  """The trainer's flag that sets metric `names`: --config.eval.metrics="('dci', 'mig')"."""
  return f'--config.eval.metrics="{tuple(names)!r}"'


def evaluate_flag(names: Sequence[str]) -> str:
  """`python -m gmg_jax.evaluate`'s flag that sets metric `names`: --metrics=dci,mig."""
  return f"--metrics={','.join(names)}"


def check_names(
  names: Sequence[str], mode: str, flag: Callable[[Sequence[str]], str] = trainer_flag
) -> None:
  """Raises a ValueError naming what is wrong with metric `names` or `mode`, and the fix (in
  the syntax of the command line whose `flag` sets metric names)."""
  check_mode(mode)
  if isinstance(names, str):
    names = (names,)
  unknown = sorted(set(names) - set(METRIC_NAMES))
  if unknown:
    raise ValueError(
      f"Unknown metrics {unknown}; known: {METRIC_NAMES}. On a command line: "
      f"{flag(('dci', 'mig'))}."
    )


def check_dataset(
  names: Sequence[str], dataset: Any, flag: Callable[[Sequence[str]], str] = trainer_flag
) -> None:
  """Raises a ValueError if `dataset` cannot give the fixed-factor samples a metric needs.

  The FactorVAE and BetaVAE scores render images with chosen factor values, which needs every
  factor combination in the data; a dataset that is not a complete grid (a researcher's own
  file, `gmg_jax.data.custom`) says why in `grid_problem`. The fix is spelled by `flag`, as in
  `check_names`.
  """
  names = (names,) if isinstance(names, str) else tuple(names)
  problem = getattr(dataset, "grid_problem", None)
  wanted = [name for name in names if name in SAMPLED_METRICS]
  if wanted and problem:
    available = tuple(name for name in names if name in ARRAY_METRICS) or tuple(ARRAY_METRICS)
    raise ValueError(
      f"Metrics {wanted} intervene on factors and need every factor combination in the "
      f"dataset, but {getattr(dataset, 'name', 'the dataset')!r} is not a complete grid: "
      f"{problem}. Metrics available on it: {tuple(ARRAY_METRICS)}; e.g. {flag(available)}."
    )


def split_factors(
  dataset: Any, key: jax.Array, num_train: int, num_test: int
) -> tuple[np.ndarray, np.ndarray]:
  """The factors of the array metrics' train and test points, as `compute_metrics` draws them
  from `key`: [num_train, K] and [num_test, K] indices."""
  key_train, key_test, _ = jax.random.split(key, 3)
  return tuple(
    np.asarray(dataset.sample_factors(k, n))
    for k, n in ((key_train, num_train), (key_test, num_test))
  )


def compute_metrics(
  names: Sequence[str],
  dataset: Any,
  representation_fn: Callable[[Any], Any],
  key: jax.Array,
  *,
  mode: str = "exact",
  num_train: int = 10000,
  num_test: int = 5000,
  batch_size: int = 64,
  encode_batch_size: int = 256,
  random_state: int = 0,
  progress: bool = False,
  codes: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
  """Computes metrics by name with disentanglement_lib's defaults.

  Args:
    names: subset of `METRIC_NAMES`.
    dataset: ground-truth dataset (`num_factors`, `sample_factors(key, n)`,
      `images_from_factors(factors)`).
    representation_fn: uint8 images [n, H, W, C] -> codes [n, D] (e.g. the encoder mean).
    key: JAX PRNG key for all sampling.
    mode: "exact" (disentanglement_lib's estimators) or "fast" (vectorized/JAX estimators).
    num_train: training points (FactorVAE: also the variance-estimate size).
    num_test: test / evaluation points.
    batch_size: FactorVAE / BetaVAE samples per point.
    encode_batch_size: images encoded at once.
    random_state: seed of the sklearn estimators.
    progress: tqdm bars over metrics and encoding.
    codes: the codes of the array metrics' train and test points (`split_factors` of `key`),
      when the caller has encoded them (a K-run encodes all its replicas' at once,
      `evaluation.evaluate_runs`); None encodes them here with `representation_fn`.

  Returns:
    {name: {score key: value}}.
  """
  check_names(names, mode)
  check_dataset(names, dataset)
  key_sampled = jax.random.split(key, 3)[2]
  run = dict(batch_size=encode_batch_size, progress=progress)
  splits = None
  results = {}
  for index, name in enumerate(tqdm.tqdm(names, desc="metrics", disable=not progress)):
    if name in ARRAY_METRICS:
      if splits is None:
        factors = split_factors(dataset, key, num_train, num_test)
        if codes is None:
          codes = [sampled.encode(dataset, representation_fn, f, **run) for f in factors]
        elif [len(c) for c in codes] != [len(f) for f in factors]:
          raise ValueError(
            f"codes has {[len(c) for c in codes]} rows for the train and test points, but "
            f"num_train, num_test = {num_train}, {num_test}: pass the codes of "
            "split_factors(dataset, key, num_train, num_test)."
          )
        splits = [(np.asarray(c), f) for c, f in zip(codes, factors, strict=True)]
      results[name] = ARRAY_METRICS[name](*splits, mode, random_state)
    elif name == "factor_vae":
      results[name] = sampled.factor_vae_score(
        dataset,
        representation_fn,
        jax.random.fold_in(key_sampled, index),
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_test,
        num_variance_estimate=num_train,
        encode_batch_size=encode_batch_size,
        progress=progress,
      )
    else:
      results[name] = sampled.beta_vae_score(
        dataset,
        representation_fn,
        jax.random.fold_in(key_sampled, index),
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_test,
        mode=mode,
        random_state=random_state,
        encode_batch_size=encode_batch_size,
        progress=progress,
      )
  return results
