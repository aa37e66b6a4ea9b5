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
  assert "gmg_jax.gmg" in graph["gmg_jax.regularizers"]
  assert "gmg_jax.data" in graph["gmg_jax.saved_runs"]
  assert "gmg_jax.saved_runs" in graph["gmg_jax.evaluate"]
