"""The package's shape: no import circle, no module over 600 lines, no import of a CLI module."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "gmg_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """The package modules `path` imports (at any depth of the file, lazy imports included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from gmg_jax import data` imports the module gmg_jax.data; `from gmg_jax.x import f`
      # imports gmg_jax.x. (A package's own __init__, run on the way to a submodule, is not an
      # edge: a package that re-exports its submodules is not a circle.)
      subs = [f"{node.module}.{alias.name}" for alias in node.names]
      names = [n for n in subs if n in modules] or [node.module]
    else:
      continue
    found.update(n for n in names if n in modules)
  return found


def _paths() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
  paths = _paths()
  return {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}


def test_the_import_graph_has_no_circle():
  graph = _graph()
  state: dict[str, int] = {}  # 1: on the current path, 2: done.

  def visit(node, path):
    state[node] = 1
    for child in sorted(graph[node]):
      if state.get(child) == 1:
        pytest.fail("import circle: " + " -> ".join([*path, node, child]))
      if child not in state:
        visit(child, [*path, node])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])


def test_no_package_module_imports_a_command_line_program():
  graph = _graph()
  programs = {name for name, path in _paths().items() if "def main(" in path.read_text()}
  assert {"gmg_jax.main", "gmg_jax.evaluate"} <= programs
  importers = {name: sorted(graph[name] & programs) for name in graph if graph[name] & programs}
  assert importers == {}


def test_no_module_is_over_600_lines():
  long = {p.name: n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
  assert long == {}


def test_the_graph_sees_known_edges():  # The AST walk finds real imports (the checks above bite).
  graph = _graph()
  assert "gmg_jax.evaluation" in graph["gmg_jax.train"]
  assert "gmg_jax.gmg" in graph["gmg_jax.losses.regularizers"]
  assert "gmg_jax.losses.registry" in graph["gmg_jax.config"]
  assert "gmg_jax.data" in graph["gmg_jax.saved_runs"]
  assert "gmg_jax.saved_runs" in graph["gmg_jax.evaluate"]


# The modules that run a loss without knowing which: the loop, the step, the evaluation, the
# checks, sharding and the K-run.
_LOSS_BLIND = ("train", "train_step", "evaluation", "checks", "sharding", "replicas")


def _loss_names() -> set[str]:
  from gmg_jax import losses

  return set(losses.regularizer_specs()) | set(losses.objective_specs())


def _string_constants(path: pathlib.Path) -> set[str]:
  """Every string constant of the code (docstrings and comments are not code)."""
  tree = ast.parse(path.read_text())
  docstrings = {
    id(node.body[0].value)
    for node in ast.walk(tree)
    if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
    and node.body
    and isinstance(node.body[0], ast.Expr)
    and isinstance(node.body[0].value, ast.Constant)
  }
  return {
    node.value
    for node in ast.walk(tree)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
  }


def test_the_loop_step_evaluation_checks_and_sharding_name_no_loss():
  names = _loss_names()
  assert {"gmg", "dst", "jacobian", "beta_vae", "factor_vae", "decoder_free"} <= names
  found = {}
  for module in _LOSS_BLIND:
    words = set()
    for constant in _string_constants(PACKAGE / f"{module}.py"):
      words |= set(constant.replace("'", " ").replace('"', " ").replace(".", " ").split())
    if words & names:
      found[module] = sorted(words & names)
  assert found == {}
  # The check bites: the losses' own modules do name them.
  assert "factor_vae" in _string_constants(PACKAGE / "losses" / "objectives.py")


def test_sharding_does_not_depend_on_a_loss():
  graph = _graph()
  assert not {m for m in graph["gmg_jax.sharding"] if m.startswith("gmg_jax.losses")}
  assert "gmg_jax.sharding" in graph["gmg_jax.losses.maps"]  # the dependency runs this way


def test_registering_a_loss_and_building_a_config_import_no_jax():
  import subprocess
  import sys

  code = (
    "import sys; from gmg_jax.losses import register_regularizer; import gmg_jax.config as c; "
    "c.get_config('runlocal'); "
    "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax'))))"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
