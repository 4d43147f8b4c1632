"""Spec `trainable: new_rows`: carried rows stay frozen, new rows train.

Model A trains on one generated dataset and is exported; model B trains on
a second one whose movies partly differ, its `movie` table loaded from A's
export. Rows are matched by token, so B's carried rows, new rows and A's
dropped rows are known from the two vocabularies.
"""

import json
import logging
import os
import types

import numpy as np
import pytest
import yaml

from core import artifacts
from core import layout
from pipelines import generate
from pipelines import preprocess
from trainer import config as config_lib
from trainer import export
from trainer import models
from trainer import task
from trainer import transfer
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
TRAIN_FLAGS = {"model_type": "mf", "mf_dim": 4, "epochs": 1,
               "batch_size": 128, "verbose": 0, "checkpoint_every": 0,
               "learning_rate": 0.05}


def _spec_with_movie_source(root, name, source):
  with open(SPEC, encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  for feature in raw["features"]:
    if feature["name"] == "movie":
      feature["from_checkpoint"] = source
  path = os.path.join(root, f"{name}.yaml")
  with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(raw, handle)
  return path


def _train(spec_path, data, preprocessed, model_dir):
  spec = loader.load_spec(spec_path, {"DATA_DIR": data})
  config = config_lib.build_config(
      spec, dict(TRAIN_FLAGS), preprocessed_dir=preprocessed,
      model_dir=model_dir, spec_path=spec_path,
      spec_env=(("DATA_DIR", data),))
  return task.train(config, spec)


def _tokens(preprocessed):
  return feature_info_lib.read_vocabulary(preprocessed, "movie") + [
      artifacts.oov_token(0)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("freeze_new_rows"))
  run = types.SimpleNamespace(root=root)
  run.data_a, run.data_b = (os.path.join(root, d) for d in ("a", "b"))
  generate.run(["--output", run.data_a, "--rows", "800", "--seed", "1",
                "--users", "30", "--items", "20"])
  generate.run(["--output", run.data_b, "--rows", "800", "--seed", "2",
                "--users", "30", "--items", "26"])
  run.pre_a, run.pre_b = (os.path.join(root, p) for p in ("pre_a", "pre_b"))
  for data, pre in ((run.data_a, run.pre_a), (run.data_b, run.pre_b)):
    preprocess.run(["--spec", SPEC, "--output", pre,
                    "--env", f"DATA_DIR={data}"])
  _train(SPEC, run.data_a, run.pre_a, os.path.join(root, "model_a"))
  run.export = os.path.join(root, "export_a")
  assert export.run(["--model_dir", os.path.join(root, "model_a"),
                     "--output", run.export]) == 0
  run.movie_a = artifacts.load_tables(run.export)["movie"]
  run.source = {"path": os.path.join(run.export, "movie"),
                "tensor": "movie/embeddings", "trainable": "new_rows"}
  run.result = _train(_spec_with_movie_source(root, "new_rows", run.source),
                      run.data_b, run.pre_b, os.path.join(root, "model_b"))
  return run


def test_carried_rows_stay_bit_identical_and_new_rows_train(run):
  tokens_b = _tokens(run.pre_b)
  old = run.movie_a.row_of()
  carried = np.array([token in old for token in tokens_b])
  assert carried.any() and not carried.all()
  trained = models.embedding_table(run.result.model,
                                   "movie").embeddings.numpy()
  np.testing.assert_array_equal(
      trained[carried],
      run.movie_a.vectors[[old[t] for t in np.array(tokens_b)[carried]]])
  # New rows start at the mean of A's rows; every new movie is in B's
  # training split, so each of them moved.
  mean = run.movie_a.vectors.astype(np.float64).mean(axis=0).astype(
      np.float32)
  assert not np.any(np.all(trained[~carried] == mean, axis=1))


def test_report_json_counts_rows_exactly(run):
  tokens_a, tokens_b = set(_tokens(run.pre_a)), set(_tokens(run.pre_b))
  with open(layout.ModelLayout(run.result.config.model_dir).report,
            encoding="utf-8") as handle:
    movie = json.load(handle)["transfer"]["movie"]
  assert {key: movie[key] for key in ("kept", "new", "dropped", "trainable",
                                      "old_size", "new_size")} == {
      "kept": len(tokens_a & tokens_b), "new": len(tokens_b - tokens_a),
      "dropped": len(tokens_a - tokens_b), "trainable": "new_rows",
      "old_size": len(tokens_a), "new_size": len(tokens_b)}


def test_a_frozen_table_with_new_rows_warns_once(run, caplog):
  path = _spec_with_movie_source(run.root, "frozen",
                                 {**run.source, "trainable": False})
  spec = loader.load_spec(path, {"DATA_DIR": run.data_b})
  new = len(set(_tokens(run.pre_b)) - set(_tokens(run.pre_a)))
  with caplog.at_level(logging.WARNING):
    tables = transfer.pretrained_tables(
        spec, run.pre_b, dimensions={"movie": TRAIN_FLAGS["mf_dim"]})
  assert [record.getMessage() for record in caplog.records
          if record.levelno == logging.WARNING] == [
      f"feature movie: {new} rows new to the vocabulary stay at the mean "
      f"vector (trainable: false); use trainable: new_rows to train them"]
  assert tables["movie"].trainable is False
  assert transfer.table_reports(tables)["movie"]["trainable"] is False


def test_trainable_must_be_true_false_or_new_rows(run):
  path = _spec_with_movie_source(run.root, "bad",
                                 {**run.source, "trainable": "yes"})
  with pytest.raises(spec_lib.SpecError) as error:
    loader.load_spec(path, {"DATA_DIR": run.data_b})
  assert str(error.value) == (
      "feature 'movie': field 'from_checkpoint': field 'trainable' must be "
      "true, false or new_rows, got 'yes'")
