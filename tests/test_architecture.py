"""The layers import only downward (README, "Architecture").

Every import of a project module counts, at module level or inside a
function; only the CLI's dispatch (embeddings_cli.py) imports lazily.
"""

import ast
import os

import pytest

import embeddings_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Folder -> the project folders it may import.
ALLOWED = {
    "core": set(),
    "transforms": {"core"},
    "pipelines": {"core", "transforms"},
    "trainer": {"core", "transforms"},
    "retrieval": {"core", "transforms"},
    "workflows": {"core", "transforms", "pipelines", "trainer", "retrieval"},
    "deploy": {"core", "transforms", "pipelines", "trainer", "retrieval",
               "workflows"},
    # The notebook API sits at the top, beside the command line.
    "embeddings": {"core", "transforms", "pipelines", "trainer", "retrieval",
                   "workflows"},
}


def _imports(path):
  """(imported top-level name, inside a function?) of every import."""
  with open(path, encoding="utf-8") as handle:
    tree = ast.parse(handle.read(), path)
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        found.extend((alias.name.split(".")[0], in_function)
                     for alias in child.names)
      elif isinstance(child, ast.ImportFrom) and child.level == 0:
        found.append((child.module.split(".")[0], in_function))
      visit(child, nested)

  visit(tree, False)
  return found


def _project_files():
  for folder in ALLOWED:
    for root, _, names in os.walk(os.path.join(REPO, folder)):
      for name in names:
        if name.endswith(".py"):
          yield folder, os.path.join(root, name)


def test_every_folder_imports_only_the_layers_below_it():
  wrong = []
  for folder, path in _project_files():
    for target, _ in _imports(path):
      if target in ALLOWED and target != folder and (
          target not in ALLOWED[folder]):
        wrong.append(f"{os.path.relpath(path, REPO)} imports {target}")
  assert not wrong, wrong


def test_no_project_module_is_imported_inside_a_function():
  hidden = [os.path.relpath(path, REPO)
            for folder, path in _project_files()
            for target, in_function in _imports(path)
            if in_function and target in ALLOWED]
  assert not hidden, hidden


@pytest.mark.parametrize("name", sorted(embeddings_cli.SUBCOMMANDS))
def test_every_subcommand_dispatches_to_its_module(name, capsys):
  assert embeddings_cli.SUBCOMMANDS[name][0].split(".")[0] in ALLOWED
  with pytest.raises(SystemExit) as done:
    embeddings_cli.main([name, "--help"])
  assert done.value.code == 0
  assert capsys.readouterr().out.startswith("usage: ")
