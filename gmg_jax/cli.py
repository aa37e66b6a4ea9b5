"""What the command-line entry points share: help that exits 0, quiet logs, exit statuses.

Exit statuses of `python -m gmg_jax.main` and `python -m gmg_jax.evaluate`:
  0   done.
  2   the command cannot run (config, data files, workdir holding another run); nothing was
      written. The message names the field or file and the fix.
  3   training diverged (non-finite loss, gradient or parameters); every checkpoint left is
      finite. Resume with a lower learning rate (the message says how).
  75  preempted (SIGTERM; EX_TEMPFAIL): the state was saved; run the same command to resume.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags, logging

from gmg_jax import config as config_lib
from gmg_jax import train
from gmg_jax.data import DataFileError

EXIT_ERROR = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75

_HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def usage(doc: str, module_name: str) -> str:
  """The module's docstring, its flags, the config variants and where the fields are documented."""
  variants = ", ".join(sorted(config_lib.VARIANTS))
  return (
    f"{doc.strip()}\n\nFlags:\n{flags.FLAGS.module_help(module_name)}\n\n"
    f"Config variants (--config=FILE.py:variant1,variant2): {variants}.\n"
    "Config fields: every field is commented in gmg_jax/config.py; override any with "
    "--config.<group>.<field>=VALUE (a misspelled key or a wrong type fails before any work).\n"
    f"{__doc__.split(chr(10), 1)[1].strip()}"
  )


def run(main: Callable[[list[str]], None], doc: str, module_name: str) -> None:
  """`absl.app.run(main)` with `--help` exiting 0, absl/Orbax INFO quiet unless --verbosity is
  given, and the run's known failures printed as one message with a documented exit status."""
  if any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
    print(usage(doc, module_name))
    sys.exit(0)

  def quiet_main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except train.Preempted as e:
      print(e, file=sys.stderr)
      sys.exit(EXIT_PREEMPTED)
    except train.Diverged as e:
      print(f"Diverged: {e}", file=sys.stderr)
      sys.exit(EXIT_DIVERGED)
    except (config_lib.ConfigError, DataFileError, FileNotFoundError) as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(EXIT_ERROR)

  app.run(quiet_main)
