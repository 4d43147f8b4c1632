"""`embeddings export` enriches each table: counts, names, groups, score."""

import collections
import csv
import os
import types

import numpy as np
import pytest

from core import artifacts
from core import layout
from pipelines import generate
from pipelines import preprocess
from pipelines import split as split_lib
from trainer import config as config_lib
from trainer import export
from trainer import task
from transforms import loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
TRAIN_FLAGS = {"epochs": 1, "batch_size": 256, "verbose": 0,
               "checkpoint_every": 0}


def _read_csv(path):
  with open(path, encoding="utf-8", newline="") as handle:
    return list(csv.DictReader(handle))


def _training_ratings(data_dir, spec):
  """The generated ratings that the spec's split puts in train."""
  ratings = _read_csv(os.path.join(data_dir, "ratings.csv"))
  return [row for row in ratings
          if split_lib.eval_fraction_of(
              "\x1f".join(row[c] for c in spec.split.key), spec.split.seed)
          >= spec.split.eval_fraction]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("export_rows"))
  run = types.SimpleNamespace(root=root)
  run.data = os.path.join(root, "data")
  generate.run(["--output", run.data, "--rows", "1200", "--seed", "5"])
  run.preprocessed = os.path.join(root, "preprocessed")
  preprocess.run(["--spec", SPEC, "--output", run.preprocessed,
                  "--env", f"DATA_DIR={run.data}"])
  run.spec = loader.load_spec(SPEC, {"DATA_DIR": run.data})
  # Names as preprocessing writes them for a side table's display column;
  # written by hand so that the expected rows are known here.
  run.items = _read_csv(os.path.join(run.data, "items.csv"))
  named = run.items[:-3]  # The last items have no side row.
  names_path = layout.PreprocessedLayout(run.preprocessed).names("movie")
  os.makedirs(os.path.dirname(names_path), exist_ok=True)
  with open(names_path, "w", encoding="utf-8") as handle:
    handle.write("token\tname\tgroup\n")
    for item in named:
      handle.write(f"{item['item_id']}\t{item['title']}\t"
                   f"{item['genres'].split('|')[0]}\n")
  run.named = {item["item_id"]: item for item in named}
  for model_type in ("mf", "dnn"):
    config = config_lib.build_config(
        run.spec, {**TRAIN_FLAGS, "model_type": model_type},
        preprocessed_dir=run.preprocessed,
        model_dir=os.path.join(root, model_type), spec_path=SPEC,
        spec_env=(("DATA_DIR", run.data),))
    task.train(config, run.spec)
  return run


def _export(run, model_type, capsys):
  output = os.path.join(run.root, f"export_{model_type}")
  assert export.run(["--model_dir", os.path.join(run.root, model_type),
                     "--output", output]) == 0
  return output, capsys.readouterr().out


def test_counts_names_groups_and_the_summary_line(run, capsys):
  output, printed = _export(run, "mf", capsys)
  tables = artifacts.load_tables(output)
  rows = sum(table.size for table in tables.values())
  assert printed == (f"embeddings export: {len(tables)} tables, {rows} rows "
                     f"-> {output}\n")
  movie = tables["movie"]
  train = _training_ratings(run.data, run.spec)
  expected = collections.Counter(row["item_id"] for row in train)
  assert movie.counts.dtype == np.int64
  assert dict(zip(movie.tokens, movie.counts.tolist())) == {
      token: expected.get(token, 0) for token in movie.tokens}
  np.testing.assert_array_equal(tables["bias_movie"].counts, movie.counts)
  for token, name, group in zip(movie.tokens, movie.names, movie.groups):
    if token in run.named:
      item = run.named[token]
      assert (name, group) == (item["title"], item["genres"].split("|")[0])
    else:
      assert (name, group) == (token, "")
  assert movie.names[movie.tokens.index("[OOV_0]")] == "[OOV_0]"
  assert tables["user"].names is None and tables["user"].groups is None
  assert movie.metadata["model_type"] == "mf"
  assert movie.metadata["score"] == artifacts.DOT_SCORE


def test_every_token_of_a_multivalued_row_is_counted(run, capsys):
  output, _ = _export(run, "dnn", capsys)
  genres = artifacts.load_tables(output)["genres"]
  genres_of = {item["item_id"]: item["genres"].split("|")
               for item in run.items}
  expected = collections.Counter(
      genre for row in _training_ratings(run.data, run.spec)
      for genre in genres_of[row["item_id"]])
  assert dict(zip(genres.tokens, genres.counts.tolist())) == {
      token: expected.get(token, 0) for token in genres.tokens}
  assert genres.metadata["model_type"] == "dnn"
  assert genres.metadata["score"] == artifacts.MODEL_SCORE
