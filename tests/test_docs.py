"""The README and docs/ run as written: their runnable shell blocks pass, their links resolve.

A shell block is runnable when the line right above its ```bash fence is `<!-- runnable -->`.
Each such block of README.md and docs/*.md runs with bash (`set -euo pipefail`) from the
repository root, with this Python's directory first on PATH (so `python` and `pytest` are the
ones under test) and every `/tmp/` of its text replaced by the test's own directory, so that
nothing it writes is left behind. Blocks that train (they start `gmg_jax.main`, a launcher or a
study) are marked slow.
"""

import glob
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

MARK = "<!-- runnable -->"
README = os.path.join(ROOT, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
MAX_README_LINES = 300
# A block that starts one of these trains (or may): slow.
_TRAINS = re.compile(r"gmg_jax\.main(?! --help)|launch_multigpu\.sh|sweep\.py .*--run\b")
_FENCE = re.compile(r"^\s*```")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _relative(path):
  return os.path.relpath(path, ROOT)


def _runnable_blocks():
  """(page, line of the fence, block text) of every block marked runnable."""
  blocks = []
  for page in PAGES:
    with open(page, encoding="utf-8") as f:
      lines = f.read().splitlines()
    for i, line in enumerate(lines):
      if line.strip() != MARK:
        continue
      fence = lines[i + 1] if i + 1 < len(lines) else ""
      assert fence.strip() == "```bash", (
        f"{_relative(page)}:{i + 1}: {MARK} must sit right above a ```bash fence"
      )
      indent = len(fence) - len(fence.lstrip())
      end = next(j for j in range(i + 2, len(lines)) if _FENCE.match(lines[j]))
      text = "\n".join(line[indent:] for line in lines[i + 2 : end])
      blocks.append((page, i + 2, text))
  return blocks


BLOCKS = _runnable_blocks()


def _param(page, line, text):
  marks = [pytest.mark.slow] if _TRAINS.search(text) else []
  return pytest.param(text, id=f"{_relative(page)}:{line}", marks=marks)


@pytest.mark.parametrize("text", [_param(*block) for block in BLOCKS])
def test_runnable_block_runs_as_written(text, tmp_path):
  script = "set -euo pipefail\n" + text.replace("/tmp/", f"{tmp_path}/") + "\n"
  env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
  proc = subprocess.run(
    ["bash", "-c", script],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, (
    f"exit status {proc.returncode}\n--- block\n{text}\n--- stdout\n{proc.stdout[-3000:]}\n"
    f"--- stderr\n{proc.stderr[-3000:]}"
  )


def test_readme_test_command_is_there_and_not_run_here():
  # CI runs the README's test command (.ci/run): it is there, in a bash block, and not run here.
  with open(README, encoding="utf-8") as f:
    text = f.read()
  assert "```bash\npytest -q\n```" in text
  assert all(block.strip() != "pytest -q" for _, _, block in BLOCKS)
  assert README in {page for page, _, _ in BLOCKS}


def _links(page):
  """(path, fragment) of every relative link of `page` outside its code, the path resolved."""
  with open(page, encoding="utf-8") as f:
    lines = f.read().splitlines()
  targets, in_code = [], False
  for line in lines:
    if _FENCE.match(line):
      in_code = not in_code
      continue
    if in_code:
      continue
    for target in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        continue  # a URL (http:, mailto:)
      path, _, fragment = target.partition("#")
      path = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
      targets.append((path, fragment))
  return targets


def _anchors(page):
  """The #fragments of a markdown page's headings, as GitHub makes them."""
  with open(page, encoding="utf-8") as f:
    headings = [line.lstrip("#").strip() for line in f if re.match(r"^#{1,6} ", line)]
  return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_relative_links_point_to_files_and_headings(page):
  broken = []
  for path, fragment in _links(page):
    if not os.path.exists(path):
      broken.append(_relative(path))
    elif fragment and path.endswith(".md") and fragment not in _anchors(path):
      broken.append(f"{_relative(path)}#{fragment}")
  assert not broken, f"{_relative(page)} links to what is not there: {broken}"


def test_links_are_found():
  # The link check sees the README's links to the docs pages (a broken regex would pass above).
  paths = {_relative(path) for path, _ in _links(README)}
  assert {"docs/configuration.md", "docs/reliability.md"} <= paths


def test_readme_is_a_front_page():
  with open(README, encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
