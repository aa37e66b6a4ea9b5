"""Tests for notebooks/: valid notebooks whose code compiles; the CPU ones run top to bottom.

The first cell of each notebook makes gmg_jax importable; it is run on its own in a subprocess
(IPython's `!` shell escape replaced by a recorder) to check that it installs nothing where the
package is importable. quickstart.ipynb and gmg_explained.ipynb are executed with nbclient at
tiny settings (the cell tagged "parameters" gets assignments appended), then one more cell reports
the notebook's own results as JSON. real_data.ipynb needs the network and an accelerator, so it
is only checked for structure and syntax.
"""

import json
import os
import subprocess
import sys
import sysconfig

import nbformat
import pytest
from conftest import ROOT

NOTEBOOKS = os.path.join(ROOT, "notebooks")
ALL = ("quickstart.ipynb", "gmg_explained.ipynb", "real_data.ipynb")

# Runs a notebook cell as a script: `!cmd` lines become `get_ipython().system(cmd)`, recorded
# and reported on stdout instead of run; the script's last line says where gmg_jax came from.
_SHELL_RECORDER = """
import json, sys
calls = []
class _Shell:
  def system(self, cmd):
    calls.append(cmd)
def get_ipython():
  return _Shell()
try:
  exec(compile(sys.stdin.read(), "first_cell", "exec"))
finally:
  import importlib.util
  spec = importlib.util.find_spec("gmg_jax")
  print(json.dumps({"shell": calls, "gmg_jax": spec and spec.origin}))
"""


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def _code_cells(notebook):
  return [c for c in notebook.cells if c.cell_type == "code"]


def _parameter_cell(notebook):
  cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, "exactly one cell tagged 'parameters'"
  return cells[0]


def _as_python(source):
  from IPython.core.inputtransformer2 import TransformerManager

  return TransformerManager().transform_cell(source)


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_valid_has_parameters_and_every_code_cell_compiles(name):
  notebook = _read(name)
  nbformat.validate(notebook)
  cell = _parameter_cell(notebook)
  assert cell.cell_type == "code"
  for index, code in enumerate(_code_cells(notebook)):
    compile(_as_python(code.source), f"{name}[{index}]", "exec")
  assert all(not c.get("outputs") for c in _code_cells(notebook)), "commit without outputs"


def _run_first_cell(name, cwd, isolated):
  """Runs `name`'s first code cell in `cwd`; `isolated`: without the installed gmg_jax."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-c", _SHELL_RECORDER]
  if isolated:
    # -S skips the site .pth files (the editable install of gmg_jax) but keeps its dependencies.
    cmd.insert(1, "-S")
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
  proc = subprocess.run(
    cmd,
    input=_as_python(_code_cells(_read(name))[0].source),
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
  return proc, report


@pytest.mark.parametrize("name", ALL)
def test_first_cell_installs_nothing_where_gmg_jax_is_importable(name):
  proc, report = _run_first_cell(name, NOTEBOOKS, isolated=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert report["shell"] == [] and report["gmg_jax"] is not None


def test_first_cell_in_a_checkout_uses_it_and_elsewhere_asks_for_the_repository(tmp_path):
  # A checkout whose package is not installed: the cell puts the checkout on the path.
  proc, report = _run_first_cell("quickstart.ipynb", NOTEBOOKS, isolated=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert report["shell"] == []
  assert report["gmg_jax"] == os.path.join(ROOT, "gmg_jax", "__init__.py")
  # Neither installed nor in a checkout, and no REPO given: an error that says what to do.
  proc, report = _run_first_cell("quickstart.ipynb", tmp_path, isolated=True)
  assert proc.returncode != 0 and "ValueError" in proc.stderr
  assert "pip install -e ." in proc.stderr and "REPO" in proc.stderr
  assert report == {"shell": [], "gmg_jax": None}


def _execute(name, overrides, report_expression):
  """Runs the notebook with `overrides` appended to its parameters; returns the report's value.

  `report_expression` is evaluated in the notebook's namespace after its last cell and must be
  JSON-serializable.
  """
  from nbclient import NotebookClient

  notebook = _read(name)
  cell = _parameter_cell(notebook)
  cell.source += "\n# test overrides\n" + "\n".join(overrides)
  notebook.cells.append(
    nbformat.v4.new_code_cell(f"import json as _json\nprint(_json.dumps({report_expression}))")
  )
  # A cell's output can reach the client after the cell's reply; nbclient waits iopub_timeout
  # (4 s by default) for it and then drops it silently, which on 2 busy cores lost the report
  # cell's output once (an empty outputs list). Wait longer, and fail loudly if it never comes.
  client = NotebookClient(
    notebook,
    timeout=600,
    iopub_timeout=120,
    raise_on_iopub_timeout=True,
    kernel_name="python3",
    resources={"metadata": {"path": NOTEBOOKS}},
  )
  env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    client.execute()  # raises CellExecutionError naming the failing cell
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  images = [
    o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
  ]
  report = notebook.cells[-1].outputs[-1]["text"]
  return json.loads(report.strip().splitlines()[-1]), len(images)


@pytest.mark.slow
def test_quickstart_runs_at_tiny_settings(tmp_path):
  workdir = tmp_path / "run"
  report, num_images = _execute(
    "quickstart.ipynb",
    [
      "NUM_STEPS = 6",
      "IMAGE_SIZE = 16",
      'VARIANT = "runlocal,tiny,gmg_cos_decoder"',
      "EVAL_POINTS = 200",
      f"WORKDIR = {str(workdir)!r}",
    ],
    "{'step': int(state.step), 'keys': keys, 'dci': scores['dci'], 'grid': list(grid.shape)}",
  )
  assert report["step"] == 6
  with open(workdir / "metrics.json") as f:
    evaluation = json.load(f)
  assert evaluation["step"] == 6
  # The curves it drew: the loss, its terms and the regularizer's.
  assert {"loss", "reconstruction", "kl"} <= set(report["keys"])
  assert any(key.startswith("regularizer/gmg") for key in report["keys"]), report["keys"]
  assert report["dci"] and all(0.0 <= v <= 1.0 for v in report["dci"].values()), report
  assert report["grid"][-1] == 3 and len(report["grid"]) == 3  # an RGB traversal picture
  assert num_images == 2  # training curves and the traversal


@pytest.mark.slow
def test_gmg_explained_runs_at_tiny_settings():
  report, num_images = _execute(
    "gmg_explained.ipynb",
    ["N = 32"],
    "{name: [float(results[name, c][0]) for c in costs] for name in maps}"
    " | {'recovered': float(recovered), 'n': len(x)}",
  )
  assert report["n"] == 32
  # An isometry has no gap under the squared Euclidean costs; tearing the cloud does.
  assert max(report["rotation (isometry)"][:2]) < 1e-3, report
  assert min(report["tear"]) > 1e-3, report
  assert report["recovered"] >= 0.9  # the matching order undoes the shuffle
  assert num_images == 3
