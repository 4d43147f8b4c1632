"""The digits demo: classifier -> penultimate-layer embedding -> projector."""

import json
import os

import numpy as np
import pytest

from retrieval import digits
from retrieval import projector


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  output = str(tmp_path_factory.mktemp("digits"))
  report = digits.run(["--output", output, "--epochs", "40",
                       "--map_method", "pca", "--seed", "1"])
  return output, report


def test_knn_accuracy_in_the_embedding_is_high(demo):
  _, report = demo
  assert report["knn_accuracy"] > 0.9
  assert report["classifier_accuracy"] > 0.9
  assert report["rows"] == 1797 and report["dimension"] == 16


def test_knn_accuracy_counts_votes():
  train_x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], np.float32)
  train_y = np.array([0, 0, 1, 1])
  test_x = np.array([[1, 0.05], [0.05, 1], [1, 0.2]], np.float32)
  assert digits.knn_accuracy(train_x, train_y, test_x, np.array([0, 1, 1]),
                             k=1) == pytest.approx(2 / 3)


def test_projector_files_hold_the_embedding_and_digit_labels(demo):
  import tensorflow as tf
  from google.protobuf import text_format
  from tensorboard.plugins import projector as tb_projector
  output, report = demo
  with open(os.path.join(output, "report.json")) as handle:
    assert json.load(handle) == report
  config = tb_projector.ProjectorConfig()
  with open(os.path.join(output, "projector_config.pbtxt")) as handle:
    text_format.Parse(handle.read(), config)
  [embedding] = config.embeddings
  assert embedding.tensor_name == projector.tensor_name(digits.TABLE)
  assert list(embedding.sprite.single_image_dim) == [8, 8]
  table = tf.train.load_variable(tf.train.latest_checkpoint(output),
                                 embedding.tensor_name)
  assert table.shape == (1797, 16)
  with open(os.path.join(output, embedding.metadata_path)) as handle:
    lines = handle.read().splitlines()
  assert lines[0] == "digit\tsplit"
  from sklearn.datasets import load_digits
  assert [int(line.split("\t")[0]) for line in lines[1:]] == (
      load_digits().target.tolist())
  sprite = tf.io.decode_png(tf.io.read_file(
      os.path.join(output, embedding.sprite.image_path))).numpy()
  # 1797 images tile a 43 x 43 grid of 8 x 8 cells.
  assert sprite.shape[:2] == (43 * 8, 43 * 8)
  assert os.path.getsize(report["map"]) > 1000
