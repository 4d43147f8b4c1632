"""Read-only commands start without TensorFlow; their parsers answer --help."""

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

from core import artifacts
from retrieval import clustering
from retrieval import digits
from retrieval import neighbors
from retrieval import projector
from retrieval import recommend
from workflows import recommend_batch_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tf_keras", "tensorflow_transform", "apache_beam")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  root = tmp_path_factory.mktemp("startup") / "export"
  rng = np.random.default_rng(2)
  for name, size in (("user", 6), ("movie", 8)):
    tokens = [f"{name[0]}{i}" for i in range(size)] + ["[OOV_0]"]
    artifacts.EmbeddingTable(
        name, rng.standard_normal((size + 1, 3)), tokens,
        {"vocabulary_size": size, "num_oov_buckets": 1},
        counts=[10] * size + [0]).save(str(root / name))
  return str(root)


def _modules_after(module: str, argv, cwd: str):
  """Runs `module.run(argv)` in a fresh interpreter; the heavy modules then."""
  code = (f"import sys\nfrom retrieval import {module}\n"
          f"{module}.run({list(argv)!r})\n"
          f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=cwd, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.splitlines()[-1]


@pytest.mark.parametrize("module,argv", [
    ("neighbors", ["--item", "m1", "-k", "2"]),
    ("recommend", ["--users", "u1", "-k", "2"]),
    ("clustering", ["-k", "2"]),
    ("projector", ["--output", "{tmp}/projector"]),
])
def test_read_only_commands_import_no_tensorflow(export, tmp_path, module,
                                                 argv):
  argv = ["--embeddings", export] + [a.replace("{tmp}", str(tmp_path))
                                     for a in argv]
  assert _modules_after(module, argv, REPO) == "[]"


def test_projector_writes_tensor_tsv_by_default(export, tmp_path):
  written = projector.run(["--embeddings", export, "--output",
                           str(tmp_path)])
  assert sorted(os.listdir(tmp_path)) == [
      "movie_map.png", "movie_metadata.tsv", "movie_tensor.tsv",
      "projector_config.pbtxt"]
  assert written["config"] == str(tmp_path / "projector_config.pbtxt")
  with open(tmp_path / "movie_metadata.tsv", encoding="utf-8") as handle:
    lines = handle.read().splitlines()
  # No groups in the export: the map and a column show k-means clusters.
  assert lines[0] == "token\tcount\tkmeans_cluster"
  assert [line.split("\t")[:2] for line in lines[1:]] == [
      [f"m{i}", "10"] for i in range(8)]


PARSERS = [
    ("neighbors", neighbors.flag_parser),
    ("recommend", recommend.flag_parser),
    ("cluster", clustering.flag_parser),
    ("projector", projector.flag_parser),
    ("digits", digits.flag_parser),
    ("recommend-batch", recommend_batch_options.flag_parser),
]


@pytest.mark.parametrize("command,make", PARSERS)
def test_flag_parsers_name_the_command_and_help_every_flag(command, make):
  parser = make()
  assert parser.prog == f"embeddings {command}"
  assert parser.format_usage().startswith(f"usage: embeddings {command} ")
  # pylint: disable-next=protected-access
  for action in parser._actions:
    assert action.help, action.dest
  if command != "recommend-batch":
    assert issubclass(parser.formatter_class,
                      argparse.ArgumentDefaultsHelpFormatter)


@pytest.mark.parametrize("module", [
    "retrieval.neighbors", "retrieval.recommend", "retrieval.clustering",
    "retrieval.projector", "retrieval.digits",
    "workflows.recommend_batch_options"])
def test_flags_modules_import_nothing_heavy(module):
  code = (f"import sys\nimport {module}\n"
          f"print(sorted(m for m in {HEAVY + ('sklearn', 'matplotlib')!r}"
          f" if m in sys.modules))\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, check=True)
  assert done.stdout.strip() == "[]"
