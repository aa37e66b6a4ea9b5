"""Base config: beta-VAE on the procedural Shapes3D-like set; every field is commented here once.

It lives in the package so that config files load from any working directory: `configs/default.py`
re-exports it, and each dataset's file under `configs/` is `dataset_config(name, ...)`.

Variants are picked by a comma-separated config string (big_vision style), applied in order:

  python -m gmg_jax.main --config=configs/default.py:runlocal --workdir=/tmp/gmg
  python -m gmg_jax.main --config=configs/shapes3d.py:beta_tcvae,gmg_cos_decoder --workdir=...

Tokens:
  objectives: beta_vae, beta_tcvae, factor_vae, dip_vae, annealed_vae, decoder_free; hfs adds the
    Hausdorff factorized-support term.
  regularizers: {gmg,dst}_{l2,scl2,cos}_{encoder,decoder} (e.g. gmg_cos_decoder; each sets its
    weight, REGULARIZER_WEIGHTS) and jacobian_{encoder,decoder}.
  runlocal: tiny setting (32x32 images, MLP, few steps) that finishes in about a minute on a CPU;
    a dataset stored at one size (dSprites, Shapes3D, MPI3D: 64x64) keeps it.
  tiny: after runlocal, 16x16 images, a (32,) MLP, 20 steps, no evaluation (tests, benches).
"""

import difflib

import ml_collections

from gmg_jax.losses import registry


class ConfigError(ValueError):
  """A config that cannot run, or a workdir holding another run; the message names the fix."""


_COSTS = {"l2": "sqeuclidean", "scl2": "scaled_sqeuclidean", "cos": "cosine"}
_OBJECTIVES = ("beta_vae", "beta_tcvae", "factor_vae", "dip_vae", "annealed_vae", "decoder_free")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config with the variants named in `arg` applied."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameters, the data stream and every random draw of the run.
  # Many runs in one program (gmg_jax/replicas.py): seeds seed..seed+num_seeds-1, crossed with
  # the values of `vary`, e.g. "regularizer.weight=100,300;optim.learning_rate=1e-3,3e-4".
  config.num_seeds = 1
  config.vary = ""

  config.data = ml_collections.ConfigDict()
  config.data.name = "shapes3d_procedural"  # A key of gmg_jax.data.DATASETS.
  config.data.source = "files"  # "files" (original files) or "tfds"; procedural sets ignore it.
  config.data.data_dir = ""  # "" = $GMG_DATA_DIR, then ~/gmg_data.
  config.data.path = ""  # name="npz"/"hdf5": your own dataset file (docs/data.md).
  config.data.image_size = 64  # Image side; procedural sets render at any multiple of 16.
  config.data.on_device = "auto"  # Keep the images on the accelerator: "auto", True or False.
  # Device memory budget (GB) of on_device="auto"; None: half the accelerator's memory.
  config.data.device_budget_gb = ml_collections.FieldReference(None, field_type=float)
  config.data.manual_dir = ""  # tfds only: directory holding already downloaded files.

  config.model = ml_collections.ConfigDict()
  config.model.arch = "conv"  # "conv" (disentanglement_lib) or "mlp".
  config.model.latent_dim = 10  # Size of the latent code.
  config.model.mlp_hidden = (256, 256)  # Hidden widths of the "mlp" encoder (decoder mirrors).
  config.model.disc_hidden = 1000  # FactorVAE critic width.
  config.model.disc_layers = 6  # FactorVAE critic depth.

  config.objective = ml_collections.ConfigDict()
  # beta_vae | beta_tcvae | factor_vae | dip_vae | annealed_vae | decoder_free.
  config.objective.name = "beta_vae"
  config.objective.beta = 4.0  # beta-VAE KL weight; beta-TCVAE (dlib form) TC weight is beta - 1.
  config.objective.gamma = 10.0  # FactorVAE weight of the critic's TC estimate.
  config.objective.c_max = 25.0  # AnnealedVAE final capacity (nats).
  config.objective.iteration_threshold = 100_000  # AnnealedVAE steps until capacity = c_max.
  config.objective.gamma_annealed = 1000.0  # AnnealedVAE weight of |KL - C|.
  config.objective.lambda_od = 10.0  # DIP-VAE off-diagonal weight.
  config.objective.lambda_d_factor = 10.0  # DIP diagonal weight / lambda_od (i: 10, ii: 1).
  config.objective.dip_type = "i"  # DIP-VAE type: "i" or "ii".
  config.objective.hfs_weight = 0.0  # Weight of HFS (Roth et al. 2023); 0 disables it.
  config.objective.hfs_pairs = 25  # Random latent pairs per step for HFS.
  config.objective.tcvae_estimator = "auto"  # "dlib", "decomposed" or "auto" (decomposed with HFS).
  config.objective.tcvae_alpha = 1.0  # Decomposed beta-TCVAE: MI weight.
  config.objective.tcvae_beta = 6.0  # Decomposed beta-TCVAE: TC weight.
  config.objective.tcvae_gamma = 1.0  # Decomposed beta-TCVAE: dimension-wise KL weight.
  # N of the decomposed TCVAE's stratified sampling; 0: the dataset's number of images.
  config.objective.dataset_size = 0
  config.objective.prior_matching = "kl"  # decoder_free prior term: "kl" or "sinkhorn".

  config.regularizer = ml_collections.ConfigDict()
  config.regularizer.name = "none"  # "none", "gmg", "dst", "jacobian" or one you register.
  config.regularizer.on = "decoder"  # Map it regularizes: "decoder" (codes -> images) or "encoder".
  # lambda: loss += weight * regularizer; the gmg_* / dst_* variants set it per cost and
  # placement (REGULARIZER_WEIGHTS below).
  config.regularizer.weight = 1.0
  config.regularizer.target = "mean"  # Decoder target space: "mean" (sigmoid image) or "logits".
  # Data parallel: "global" = one GW problem on the global batch (the single-device objective, any
  # device count); "local" = one per device sub-batch of batch_size / devices, averaged (cheaper).
  config.regularizer.scope = "global"
  # Each regularizer's own hyperparameters, passed to it as keyword arguments
  # (`gmg_jax.losses.regularizers.make_regularizer`); only the group of `name` is used.
  config.regularizer.gmg = ml_collections.ConfigDict()
  config.regularizer.gmg.cost = "cosine"  # "sqeuclidean", "scaled_sqeuclidean" or "cosine".
  # epsilon = epsilon_0 * stat(C_X) * stat(C_Y). 0.03 with the product start (below), picked
  # over 0.1 and 0.3 by DCI-D in 2,000-step runs on seeds 0-9 (exploratory, confounded with
  # gradient share; docs/gmg.md); at 0.01 / both starts the plan sits at the map's own coupling
  # I/n, where the trained gradient is exactly 0.
  config.regularizer.gmg.epsilon_0 = 0.03
  # Value trained: "entropic" (paper: DST - GW_eps) or "certified" (>= 0, often 0 on trained
  # decoders; see gmg_jax.losses.regularizers.gmg). Both are logged.
  config.regularizer.gmg.estimator = "entropic"
  config.regularizer.gmg.epsilon_stat = "mean"  # Stat of the epsilon rule: "mean", "max", "std".
  config.regularizer.gmg.init = "product"  # Start GW at "product", "identity" or "both" (best).
  config.regularizer.gmg.max_iterations = 50  # Outer GW iterations cap.
  config.regularizer.gmg.sinkhorn_max_iterations = 1000  # Inner Sinkhorn iterations cap.
  config.regularizer.gmg.threshold = 1e-3  # Outer GW tolerance.
  config.regularizer.gmg.sinkhorn_threshold = 1e-3  # Sinkhorn marginal tolerance.
  config.regularizer.gmg.warm_start = True  # Warm-start each Sinkhorn from the last potentials.
  config.regularizer.gmg.solver = "fused"  # GW solver: "fused" (gmg_jax/gw.py) or "ott" (reference)
  config.regularizer.gmg.inner_iterations = 10  # Sinkhorn iterations between marginal checks.
  config.regularizer.dst = ml_collections.ConfigDict()
  config.regularizer.dst.cost = "cosine"  # As gmg.cost.
  config.regularizer.jacobian = ml_collections.ConfigDict()
  config.regularizer.jacobian.num_projections = 1  # Random directions per sample (cost ~ p).
  config.regularizer.jacobian.scaled = True  # Penalize deviation from a scaled isometry.

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4  # Adam (disentanglement_lib).
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.grad_clip_norm = 0.0  # Global-norm gradient clipping; 0 disables it.
  config.optim.disc_learning_rate = 1e-4  # FactorVAE critic Adam.
  config.optim.disc_b1 = 0.5
  config.optim.disc_b2 = 0.9

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # Global batch size (split over devices).
  config.train.num_steps = 300_000  # Total steps; may be raised when resuming.
  config.train.log_every = 100  # Steps between metric log lines.
  config.train.checkpoint_every = 1000  # Steps between checkpoints (+ on SIGTERM and at the end).
  config.train.max_checkpoints = 3  # Checkpoints kept.
  config.train.init_from = ""  # Workdir to initialize from when this workdir has no checkpoint.
  config.train.resume_with_changed_config = False  # Resume even if the saved config differs.
  config.train.progress_bar = True  # tqdm progress bar with ETA.

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 10_000  # Steps between evaluations (also at the end); 0 disables.
  # Further steps to evaluate at, e.g. (1000, 2000) for a learning curve's early points.
  config.eval.at_steps = ()
  config.eval.metrics = ("dci", "mig", "sap", "modularity_explicitness")  # gmg_jax.metrics names.
  config.eval.mode = "fast"  # "exact" (disentanglement_lib estimators) or "fast".
  config.eval.num_train = 10_000  # Training points of the metrics.
  config.eval.num_test = 5_000  # Test points of the metrics.
  config.eval.pictures = True  # Write reconstructions and latent traversals as PNG.

  # JSON lines and TensorBoard are always written; Weights & Biases is optional and needs
  # pip install -e ".[wandb]". The W&B run id is kept in <workdir>/wandb_run_id.txt.
  config.logging = ml_collections.ConfigDict()
  config.logging.wandb_project = ""  # W&B project; "" disables W&B.
  config.logging.wandb_entity = ""  # W&B user or team; "" = W&B's default.
  config.logging.wandb_mode = ""  # "online", "offline" or "disabled"; "" = $WANDB_MODE or online.

  # The hyperparameter groups of the objectives and regularizers registered so far outside this
  # file (a user's, imported by their config file), with their registered defaults.
  registry.add_groups(config)
  return apply_variants(config, arg)


def _objective(name):
  def apply(config):
    config.objective.name = name
    if name == "beta_tcvae":
      config.objective.beta = 6.0
    if name == "factor_vae":
      config.objective.gamma = 30.0

  return apply


def _hfs(config):
  config.objective.hfs_weight = 1000.0
  if config.objective.name == "beta_vae":
    config.objective.beta = 1.0


# lambda of the {gmg,dst}_{cost}_{placement} variants (the jacobian variants keep the base 1.0):
# the weight at which the regularizer takes ~1.5% of the loss's gradient w.r.t. the map's outputs
# (`grad/regularizer_share`) on a 32x32 beta-VAE in training, measured per variant with
# experiments/calibrate_weight.py. 1.5% is the smallest share above the 1% "negligible" line at
# which GMG was trained with 10 seeds (Cos, decoder, 500: DCI-D not resolved against beta-VAE;
# larger shares were not better). GMG's gradient is 0.005-1.1x DST's on the same batch, so the
# same weight means very different strengths. Cos and ScL2 do not change with a global scale of
# the images; L2 does (its DST grows with the square of the pixel count). On other data, image
# sizes or objectives, measure the share (experiments/results/calibrate_weight/README.md).
REGULARIZER_WEIGHTS = {
  ("gmg", "cos", "decoder"): 500.0,
  ("gmg", "cos", "encoder"): 100.0,
  ("gmg", "scl2", "decoder"): 100.0,
  ("gmg", "scl2", "encoder"): 50.0,
  ("gmg", "l2", "decoder"): 4e-3,
  ("gmg", "l2", "encoder"): 2e-3,
  ("dst", "cos", "decoder"): 500.0,
  ("dst", "cos", "encoder"): 30.0,
  ("dst", "scl2", "decoder"): 100.0,
  ("dst", "scl2", "encoder"): 30.0,
  ("dst", "l2", "decoder"): 2e-5,
  ("dst", "l2", "encoder"): 1e-4,
}


# The setting REGULARIZER_WEIGHTS were measured in ("cpu32"; the results' README above).
CALIBRATION_SETTING = {
  "data.name": "shapes3d_procedural",
  "data.image_size": 32,
  "model.arch": "mlp",
  "model.mlp_hidden": (256, 256),
  "objective.name": "beta_vae",
  "objective.beta": 4.0,
  "objective.hfs_weight": 0.0,
  "train.batch_size": 64,
  "optim.learning_rate": 1e-3,
}


def calibration_note(config: ml_collections.ConfigDict) -> str | None:
  """One line saying which setting the run's regularizer weight was calibrated for, when it is
  a variant's calibrated weight (REGULARIZER_WEIGHTS) and the run's setting is another; None
  otherwise (no GMG/DST regularizer, a weight of the user's, a varied weight, the cpu32 setting).
  """
  reg = config.regularizer
  if reg.name not in ("gmg", "dst") or "regularizer.weight" in config.vary:
    return None
  cost = {value: key for key, value in _COSTS.items()}.get(reg[reg.name].cost)
  if REGULARIZER_WEIGHTS.get((reg.name, cost, reg.on)) != reg.weight:
    return None
  differs = []
  for field, calibrated in CALIBRATION_SETTING.items():
    group, key = field.split(".")
    value = config[group][key]
    if (tuple(value) if isinstance(value, list) else value) != calibrated:
      differs.append(f"{field}={value!r}")
  if not differs:
    return None
  return (
    f"Note: regularizer.weight={reg.weight:g} is {reg.name}_{cost}_{reg.on}'s weight calibrated "
    "for the cpu32 setting (~1.5% of the output gradient); this run differs "
    f"({', '.join(differs)}), so its share may too: the 'Regularizer gradient' line at the end "
    "reports it (experiments/calibrate_weight.py measures a weight)."
  )


def _regularizer(name, cost, on):
  def apply(config):
    config.regularizer.name = name
    config.regularizer.on = on
    if cost is not None:
      config.regularizer[name].cost = _COSTS[cost]
      config.regularizer.weight = REGULARIZER_WEIGHTS[name, cost, on]

  return apply


# Datasets stored at one image size (`gmg_jax.data.files`; the others render or resize to any):
# the small variants keep it, so that a dataset config with `runlocal` runs.
STORED_IMAGE_SIZE = {
  name: 64 for name in ("dsprites", "shapes3d", "mpi3d_toy", "mpi3d_realistic", "mpi3d_real")
}


def _set_image_size(config, side):
  config.data.image_size = STORED_IMAGE_SIZE.get(config.data.name, side)


def _runlocal(config):
  _set_image_size(config, 32)
  config.model.arch = "mlp"
  config.model.mlp_hidden = (128, 64)
  config.model.disc_hidden = 64
  config.model.disc_layers = 2
  config.train.batch_size = 32
  config.train.num_steps = 400
  config.train.log_every = 50
  config.train.checkpoint_every = 200
  config.optim.learning_rate = 1e-3
  config.eval.every_steps = 400
  config.eval.metrics = ("mig", "modularity_explicitness")
  config.eval.num_train = 1000
  config.eval.num_test = 500


def _tiny(config):
  # Shrinks runlocal further (use `runlocal,tiny`) for tests, benches and notebooks.
  _set_image_size(config, 16)
  config.model.mlp_hidden = (32,)
  config.model.latent_dim = 4
  config.train.batch_size = 16
  config.train.num_steps = 20
  config.train.log_every = 5
  config.train.checkpoint_every = 10
  config.train.progress_bar = False
  config.eval.every_steps = 0


# The regularizer variants' grammar, the one the studies and their tables read:
# {gmg,dst}_{cost}_{placement} and jacobian_{placement}.
COSTED_REGULARIZERS = ("gmg", "dst")
COSTS = tuple(_COSTS)
PLACEMENTS = ("encoder", "decoder")
_REGULARIZER_VARIANTS = {
  **{
    f"{reg}_{cost}_{on}": (reg, cost, on)
    for reg in COSTED_REGULARIZERS
    for cost in COSTS
    for on in PLACEMENTS
  },
  **{f"jacobian_{on}": ("jacobian", None, on) for on in PLACEMENTS},
}


def regularizer_variant(token: str) -> tuple[str, str | None, str] | None:
  """(regularizer, cost token or None, placement) of a regularizer variant token, e.g.
  "gmg_cos_decoder" -> ("gmg", "cos", "decoder"); None for any other token."""
  return _REGULARIZER_VARIANTS.get(token)


VARIANTS = {
  **{name: _objective(name) for name in _OBJECTIVES},
  "hfs": _hfs,
  **{token: _regularizer(*parts) for token, parts in _REGULARIZER_VARIANTS.items()},
  "runlocal": _runlocal,
  "tiny": _tiny,
}


def apply_variants(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the comma-separated variant tokens of `arg` in order."""
  for token in filter(None, (arg or "").split(",")):
    if token not in VARIANTS:
      close = difflib.get_close_matches(token, VARIANTS, n=1)
      hint = f"did you mean {close[0]!r}? " if close else ""
      raise ConfigError(
        f"Unknown config variant {token!r}; {hint}the variants: {', '.join(sorted(VARIANTS))}."
      )
    VARIANTS[token](config)
  return config


def dataset_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The base config on dataset `name` (a key of `gmg_jax.data.DATASETS`), variants applied."""
  config = get_config()
  config.data.name = name
  return apply_variants(config, arg)
