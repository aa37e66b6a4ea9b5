"""Tests for notebooks/: valid notebooks whose code compiles; the CPU ones run top to bottom.

quickstart.ipynb and gmg_explained.ipynb are executed with nbclient at tiny settings: the cell
tagged "parameters" gets assignments appended that shrink the run. real_data.ipynb needs the
network and an accelerator, so it is only checked for structure and syntax.
"""

import os
import sys

import nbformat
import pytest
from conftest import ROOT

NOTEBOOKS = os.path.join(ROOT, "notebooks")
ALL = ("quickstart.ipynb", "gmg_explained.ipynb", "real_data.ipynb")


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def _parameter_cell(notebook):
  cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, "exactly one cell tagged 'parameters'"
  return cells[0]


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_valid_installs_first_and_compiles(name):
  from IPython.core.inputtransformer2 import TransformerManager

  notebook = _read(name)
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  first = code[0].source
  assert 'pip install -q "gmg_jax @ git+' in first
  # Installs only where the package is neither importable nor in the checkout around the
  # notebook; then it asks for the repository's URL. Nothing is cloned (configs are in gmg_jax).
  assert 'if importlib.util.find_spec("gmg_jax") is None:' in first
  assert '"../gmg_jax/__init__.py"' in first and "git clone" not in first
  _parameter_cell(notebook)
  transformer = TransformerManager()
  for index, cell in enumerate(code):
    compile(transformer.transform_cell(cell.source), f"{name}[{index}]", "exec")
  assert all(not c.get("outputs") for c in code), "commit notebooks without outputs"


def _execute(name, overrides, tmp_path):
  from nbclient import NotebookClient

  notebook = _read(name)
  cell = _parameter_cell(notebook)
  cell.source += "\n# test overrides\n" + "\n".join(overrides)
  client = NotebookClient(
    notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
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
  return notebook


def _outputs_text(notebook):
  return "\n".join(
    o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
  )


@pytest.mark.slow
def test_quickstart_runs_at_tiny_settings(tmp_path):
  workdir = tmp_path / "run"
  notebook = _execute(
    "quickstart.ipynb",
    ["NUM_STEPS = 6", "IMAGE_SIZE = 16", "EVAL_POINTS = 200", f"WORKDIR = {str(workdir)!r}"],
    tmp_path,
  )
  assert (workdir / "metrics.json").exists()
  assert "disentanglement" in _outputs_text(notebook)
  images = [
    o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
  ]
  assert len(images) >= 2  # training curves and the traversal


@pytest.mark.slow
def test_gmg_explained_runs_at_tiny_settings(tmp_path):
  notebook = _execute("gmg_explained.ipynb", ["N = 32"], tmp_path)
  text = _outputs_text(notebook)
  assert "rotation (isometry)" in text and "epsilon_0=" in text


def test_kernel_is_this_python():
  from jupyter_client.kernelspec import KernelSpecManager

  spec = KernelSpecManager().get_kernel_spec("python3")
  # nbclient must start a kernel that can import gmg_jax, i.e. this environment's python.
  assert spec.argv[0] in (sys.executable, "python", "python3") or os.path.samefile(
    spec.argv[0], sys.executable
  )
