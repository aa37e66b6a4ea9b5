r"""Trains and evaluates a VAE (with GMG / DST / Jacobian regularizers) from a config file.

  python -m gmg_jax.main --config=configs/default.py:runlocal --workdir=/tmp/gmg
  python -m gmg_jax.main --config=configs/shapes3d.py:gmg_cos_decoder \
      --config.train.num_steps=1000 --workdir=/tmp/shapes3d

The same command trains data parallel on every device of every host: on a TPU slice run it on
all workers (experiments/launch_tpu.sh); for hand-made multi-process jobs set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (experiments/launch_multigpu.sh).

All logic lives in gmg_jax.train (tested as a library); this file parses flags, starts
jax.distributed on multi-host runs, and calls train.train_and_evaluate.
"""

from absl import flags, logging
from ml_collections import config_flags

from gmg_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and pictures.")
_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file, with optional variants: configs/x.py:variant1,variant2.",
  lock_config=True,
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # cli.parse_flags refuses stray arguments.
  cli.status("Loading JAX and the model code ...")
  # Imported once the flags are parsed: a mistake on the command line is answered at once.
  import jax  # noqa: PLC0415

  from gmg_jax import sharding, train  # noqa: PLC0415

  # Multi-process jobs (TPU pod slices, multi-GPU, SLURM) are described by the environment;
  # see sharding.initialize_distributed and experiments/launch_*.sh.
  sharding.initialize_distributed()
  logging.info(
    "JAX process %d/%d, local devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  # On the command line a setting the run would not read is refused (checks.inert_settings).
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, refuse_inert=True)


if __name__ == "__main__":
  cli.run(main, __doc__, __name__, cli.config_help())
