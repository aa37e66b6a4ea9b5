"""One way to write a file so that no reader, and no run killed mid-write, sees half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, text: bool) -> str:
  """Calls `write(file)` on a temporary file next to `path`, then renames it onto `path`.

  The temporary file is in the same directory (a rename within one file system is atomic) and is
  removed if `write` fails, so `path` holds either its old content or the whole new one.

  Args:
    path: the file to write; its directory is created if needed.
    write: writes the content to the open file.
    text: open the file in text mode (UTF-8) rather than binary.

  Returns:
    `path`.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path
