"""Disentanglement metrics matching google-research/disentanglement_lib.

Every metric is a function of arrays (codes [N, D], factors [N, K]) -> dict with
disentanglement_lib's keys, in two modes: `exact` (default; the same estimators,
discretization and hyperparameters, so equal inputs give equal numbers: checked against
disentanglement_lib's own code by experiments/crosscheck_dlib.py, where DCI and SAP's unseeded
estimators are run after `np.random.seed(random_state)`) and `fast`
(batched NumPy/scikit-learn estimators of the same quantities; see each module for how
close to `exact` they are). `compute_metrics` samples a dataset,
encodes it and runs metrics by name.

Beyond the core six: IRS (`irs`, needs factors) and the unsupervised scores (`unsupervised`,
codes only) are array metrics of a run too; UDR (`udr`) compares several models' codes of the
same inputs (e.g. one setting's seeds), so it is not a per-run metric: experiments/udr.py
scores saved runs with it.
"""

from gmg_jax.metrics.dci import completeness, dci, disentanglement, importance_matrix
from gmg_jax.metrics.explicitness import explicitness, modularity_explicitness
from gmg_jax.metrics.information import (
  MODES,
  discrete_entropy,
  discrete_mutual_info,
  histogram_discretize,
  mig,
  modularity,
)
from gmg_jax.metrics.irs import irs, irs_matrix
from gmg_jax.metrics.sampled import (
  beta_vae_accuracy,
  beta_vae_score,
  encode,
  factor_vae_accuracy,
  factor_vae_score,
  factor_vae_votes,
  sample_beta_vae_batches,
  sample_factor_vae_batches,
)
from gmg_jax.metrics.sap import sap, sap_score_matrix
from gmg_jax.metrics.suite import METRIC_NAMES, check_names, compute_metrics, split_factors
from gmg_jax.metrics.udr import gaussian_kl, relative_strength, spearman_matrix, udr
from gmg_jax.metrics.unsupervised import (
  gaussian_total_correlation,
  gaussian_wasserstein_correlation,
  mutual_info_score,
  unsupervised,
)

__all__ = [
  "METRIC_NAMES",
  "MODES",
  "beta_vae_accuracy",
  "beta_vae_score",
  "check_names",
  "completeness",
  "compute_metrics",
  "dci",
  "discrete_entropy",
  "discrete_mutual_info",
  "disentanglement",
  "encode",
  "explicitness",
  "factor_vae_accuracy",
  "factor_vae_score",
  "factor_vae_votes",
  "gaussian_kl",
  "gaussian_total_correlation",
  "gaussian_wasserstein_correlation",
  "histogram_discretize",
  "importance_matrix",
  "irs",
  "irs_matrix",
  "mig",
  "modularity",
  "modularity_explicitness",
  "mutual_info_score",
  "relative_strength",
  "sample_beta_vae_batches",
  "sample_factor_vae_batches",
  "sap",
  "sap_score_matrix",
  "spearman_matrix",
  "split_factors",
  "udr",
  "unsupervised",
]
