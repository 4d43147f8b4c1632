"""--validation_fraction: rows held out of the training split by a stable
hash (trainer/data.py Holdout), the same rows in both input modes."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import data as data_lib
from trainer import fit_input
from trainer import task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")


def test_the_held_out_rows_depend_only_on_the_bytes_and_the_seed():
  records = tf.constant([f"row {i}".encode() for i in range(4000)])
  mask = data_lib.held_out_mask(records, 0.25, seed=7).numpy()
  again = data_lib.held_out_mask(records, 0.25, seed=7).numpy()
  np.testing.assert_array_equal(mask, again)
  # The same row is held out wherever it sits.
  reversed_mask = data_lib.held_out_mask(records[::-1], 0.25, seed=7)
  np.testing.assert_array_equal(reversed_mask.numpy()[::-1], mask)
  assert abs(mask.mean() - 0.25) < 0.03
  other_seed = data_lib.held_out_mask(records, 0.25, seed=8).numpy()
  assert (mask != other_seed).any()
  assert not data_lib.held_out_mask(records, 0.0, seed=7).numpy().any()
  # A larger fraction holds out a superset: the buckets below it.
  larger = data_lib.held_out_mask(records, 0.5, seed=7).numpy()
  assert (larger | ~mask).all()


def test_validation_fraction_is_checked():
  with pytest.raises(config_lib.ConfigError, match="validation_fraction"):
    config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                             spec_path="s", validation_fraction=1.0)
  config = config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                                    spec_path="s", validation_fraction=0.2,
                                    early_stopping_patience=3)
  assert config.early_stopping_patience == 3


def _pairs(dataset):
  """(user, movie, label) of every row, sorted: a rating is unique per pair."""
  rows = []
  for features, label in dataset:
    rows += zip(features["user"].numpy().tolist(),
                features["movie"].numpy().tolist(), label.numpy().tolist())
  return sorted(rows)


def _config(preprocessed, ml100k_dir, **fields):
  args = config_lib.flag_parser().parse_args([
      "--spec", SPEC, "--preprocessed", preprocessed, "--model_dir", "m",
      "--env", f"ML100K_DIR={ml100k_dir}"])
  return dataclasses.replace(task.config_from_args(args), **fields)


def test_both_input_modes_train_and_validate_on_the_same_rows(
    ml100k_preprocessed, ml100k_dir):
  config = _config(ml100k_preprocessed, ml100k_dir, validation_fraction=0.1,
                   shuffle=False)
  spec = task.load_spec(config)
  strategy = tf.distribute.get_strategy()
  in_memory = fit_input.read_training_split(
      dataclasses.replace(config, input_mode="numpy"), spec, strategy)
  streamed = fit_input.read_training_split(
      dataclasses.replace(config, input_mode="tfrecord"), spec, strategy)
  assert in_memory.num_examples == streamed.num_examples
  assert in_memory.validation_examples == streamed.validation_examples
  assert in_memory.num_examples + in_memory.validation_examples == 80000
  assert 7000 < in_memory.validation_examples < 9000
  assert in_memory.arrays.num_examples == in_memory.num_examples

  names = ["user", "movie"]
  options = dataclasses.replace(fit_input.input_options(config, train=True),
                                repeat=False)
  trained_streamed = _pairs(data_lib.tfrecord_dataset(
      ml100k_preprocessed, "train", options, names))
  trained_in_memory = _pairs(data_lib.numpy_dataset(
      in_memory.arrays, options, names))
  assert trained_streamed == trained_in_memory
  assert len(trained_streamed) == in_memory.num_examples
  assert np.mean([r[2] for r in trained_streamed]) == pytest.approx(
      in_memory.label_mean, abs=1e-5)

  validation = _pairs(fit_input.validation_dataset(config, names))
  assert len(validation) == in_memory.validation_examples
  assert not set(validation) & set(trained_streamed)
  everything = _pairs(data_lib.tfrecord_dataset(
      ml100k_preprocessed, "train", data_lib.InputOptions(batch_size=4096),
      names))
  assert sorted(validation + trained_streamed) == everything
  # Every run holds out the same rows.
  assert _pairs(fit_input.validation_dataset(config, names)) == validation
  # Without a fraction, epochs are validated on the eval split.
  eval_rows = _pairs(fit_input.validation_dataset(
      dataclasses.replace(config, validation_fraction=0.0), names))
  assert len(eval_rows) == 20000
