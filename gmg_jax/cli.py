"""What the command-line entry points share: help that exits 0, quiet logs, exit statuses.

Exit statuses of `python -m gmg_jax.main` and `python -m gmg_jax.evaluate`:
  0   done.
  2   the command cannot run (a flag, the config, data files, a workdir holding another run);
      nothing was written. The message names the flag, field or file and the fix.
  3   training diverged (non-finite loss, gradient or parameters); every checkpoint left is
      finite. Resume with a lower learning rate (the message says how).
  75  preempted (SIGTERM; EX_TEMPFAIL): the state was saved; run the same command to resume.

This module imports no JAX: a mistake on the command line is answered before the seconds that
JAX and the model code take to import (the programs import them after the flags are parsed).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging
from ml_collections.config_flags import config_flags as config_flags_lib

from gmg_jax import config as config_lib
from gmg_jax import errors

EXIT_ERROR = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75

_HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")
# Where the config files of a source checkout are (`--config=configs/...`).
_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def config_help() -> str:
  """The help of a program that takes `--config`: its variants and where the fields are."""
  variants = ", ".join(sorted(config_lib.VARIANTS))
  return (
    f"Config variants (--config=FILE.py:variant1,variant2): {variants}.\n"
    "Config fields: every field is commented in gmg_jax/config.py; override any with "
    "--config.<group>.<field>=VALUE (a misspelled key or a wrong type fails before any work)."
  )


def usage(doc: str, module_name: str, notes: str = "") -> str:
  """The module's docstring, its flags, `notes` and the exit statuses."""
  return (
    f"{doc.strip()}\n\nFlags:\n{flags.FLAGS.module_help(module_name)}\n\n"
    + (f"{notes.strip()}\n" if notes else "")
    + __doc__.split("\n\n")[1]
  )


def status(message: str) -> None:
  """One line saying what the program is doing (a phase that takes seconds)."""
  print(message, flush=True)


def _program() -> str:
  """How the running program is invoked, e.g. "python -m gmg_jax.main"."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  return f"python -m {spec.name}" if spec is not None else os.path.basename(sys.argv[0])


def _argument(argv: list[str], name: str) -> str | None:
  """The value given to flag `--name` in `argv` (`--name=V` or `--name V`), the last one wins."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _overrides(argv: list[str], name: str) -> list[str]:
  """The dotted fields that `--name.<field>=V` arguments override, in order."""
  prefix = f"--{name}."
  return [arg[len(prefix) :].split("=", 1)[0] for arg in argv if arg.startswith(prefix)]


def _config_flags() -> list[str]:
  """Names of the flags that hold a config (`config_flags.DEFINE_config_file`)."""
  return sorted(
    {name for name in flags.FLAGS if config_flags_lib.is_config_flag(flags.FLAGS[name])}
  )


def _missing_file(spec: str, name: str) -> str | None:
  """The message for a `--name=FILE[:variants]` whose file does not exist (None if it does)."""
  path = spec.split(":", 1)[0]
  if os.path.isfile(path):
    return None
  known = ""
  if os.path.isdir(_CONFIGS_DIR):
    files = sorted(f for f in os.listdir(_CONFIGS_DIR) if f.endswith(".py"))
    known = f"; the config files are {', '.join(os.path.join(_CONFIGS_DIR, f) for f in files)}"
  return f"--{name}={spec}: no file {path!r} (from {os.getcwd()}){known}."


def _unknown_field(config: Any, field: str, name: str) -> str | None:
  """The message for an override `--name.<field>` that names no field of `config` (or None)."""
  node, walked = config, []
  for part in field.split("."):
    where = ".".join(walked) or "the config"
    if not hasattr(node, "keys"):
      return f"--{name}.{field}: {where} is a value, not a group of fields"
    keys = list(node.keys())
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=1)
      rest = field.split(".")[len(walked) + 1 :]
      fix = (
        f"did you mean --{name}.{'.'.join([*walked, close[0], *rest])}?"
        if close
        else f"the fields of {where}: {', '.join(sorted(keys))}."
      )
      return f"--{name}.{field}: {where} has no field {part!r}; {fix}"
    node, walked = node[part], [*walked, part]
  return None


def _deepest(
  error: BaseException | None, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
  """The last exception of type `kind` in the chain `error` was raised from (the original one,
  where a library re-raised it with more text)."""
  found = None
  while error is not None:
    if isinstance(error, kind):
      found = error
    error = error.__cause__ or error.__context__
  return found


def _where(error: BaseException) -> str:
  """The file and line where `error` was raised."""
  frame = error.__traceback__
  while frame is not None and frame.tb_next is not None:
    frame = frame.tb_next
  return "" if frame is None else f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}"


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def flag_error(error: BaseException, argv: list[str]) -> str:
  """One line naming what is wrong with the command line `argv` (that raised `error`) and the
  fix, in the program's own syntax."""
  for name in _config_flags():
    spec = _argument(argv, name)
    if spec is None:
      continue
    missing = _missing_file(spec, name)
    if missing:
      return missing
    variant = _deepest(error, config_lib.ConfigError)
    if variant is not None:
      return f"--{name}={spec}: {variant}"
    raised = _deepest(error.__context__, (TypeError, ValueError))
    if raised is not None and "Error whilst parsing config file" in str(error):
      # The config file's get_config raised it; config_flags re-raised it with its traceback.
      return f"--{name}={spec}: {type(raised).__name__}: {_one_line(raised)} ({_where(raised)})"
    if isinstance(error, (KeyError, AttributeError)):
      try:
        config = flags.FLAGS[name].parser.parse(spec)
      except Exception:  # noqa: BLE001 (the original error is reported below)
        config = None
      for field in _overrides(argv, name) if config is not None else ():
        unknown = _unknown_field(config, field, name)
        if unknown:
          return f"{unknown} (every field: gmg_jax/config.py)"
  text = _one_line(error.args[0] if isinstance(error, KeyError) and error.args else error)
  if isinstance(error, flags.UnrecognizedFlagError):
    text += f" ({_program()} --help lists its flags)"
  return text


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake it finds (an unknown flag or config field, a config
  file that does not load, an unknown variant, a value of the wrong type, a missing flag, a
  stray argument) printed as one line on stderr, exit status 2; nothing runs."""
  try:
    rest = flags.FLAGS(argv)
    for name in _config_flags():
      config = flags.FLAGS[name].value
      if config is not None:
        config.keys()  # A config file that did not load raises its error on first access.
  except (flags.Error, KeyError, AttributeError, OSError, TypeError, ValueError) as e:
    print(f"Error: {flag_error(e, argv)}", file=sys.stderr)
    sys.exit(EXIT_ERROR)
  if len(rest) > 1:
    print(
      f"Error: unexpected arguments {rest[1:]}; flags are written --name=value "
      f"({_program()} --help lists them).",
      file=sys.stderr,
    )
    sys.exit(EXIT_ERROR)
  return rest


def run(main: Callable[[list[str]], None], doc: str, module_name: str, notes: str = "") -> None:
  """`absl.app.run(main)` with `--help` exiting 0 (the docstring, flags and `notes`), mistakes
  on the command line answered in one line (`parse_flags`), absl/Orbax INFO quiet unless
  --verbosity is given, and the run's known failures printed as one message with a documented
  exit status."""
  if any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
    print(usage(doc, module_name, notes))
    sys.exit(0)

  def quiet_main(argv: list[str]) -> None:
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except errors.Preempted as e:
      print(e, file=sys.stderr)
      sys.exit(EXIT_PREEMPTED)
    except errors.Diverged as e:
      print(f"Diverged: {e}", file=sys.stderr)
      sys.exit(EXIT_DIVERGED)
    except (errors.ConfigError, errors.DataFileError, FileNotFoundError) as e:
      print(f"Error: {e}", file=sys.stderr)
      sys.exit(EXIT_ERROR)

  app.run(quiet_main, flags_parser=parse_flags)
