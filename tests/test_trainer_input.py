"""The trainer's TFRecord input and input-mode choice on MovieLens 100K u1.

Reads the pipeline's real output (the `ml100k_preprocessed` session
fixture): shuffling must visit every training example exactly once per
epoch, reproducibly from the seed, and "auto" must load the split into
memory only within its budget.
"""

import collections

import numpy as np

from trainer import data as data_lib

NAMES = ["user", "movie", "genres"]


def _examples(batches):
  """(user, movie, label, genres) per example, in order."""
  rows = []
  for features, labels in batches:
    genres = features["genres"]
    per_row = collections.defaultdict(list)
    for (row, _), value in zip(genres.indices.numpy(), genres.values.numpy()):
      per_row[int(row)].append(int(value))
    for row, (user, movie, label) in enumerate(zip(
        features["user"].numpy(), features["movie"].numpy(), labels.numpy())):
      rows.append((int(user), int(movie), float(label),
                   tuple(per_row[row])))
  return rows


def _stream(preprocessed, **options):
  return data_lib.tfrecord_dataset(
      preprocessed, "train",
      data_lib.InputOptions(batch_size=1000, **options), NAMES)


def test_shuffled_epoch_visits_every_example_once_reproducibly(
    ml100k_preprocessed):
  in_file_order = _examples(_stream(ml100k_preprocessed))
  stream = _stream(ml100k_preprocessed, shuffle=True, shuffle_buffer=20_000,
                   seed=3)
  first, second = _examples(stream), _examples(stream)
  assert len(in_file_order) == data_lib.split_stats(
      data_lib.list_shards(ml100k_preprocessed, "train"))[0]
  assert collections.Counter(first) == collections.Counter(in_file_order)
  assert collections.Counter(second) == collections.Counter(in_file_order)
  assert first != in_file_order and second != first
  # Mixed beyond one block: the first batch draws from across the window.
  positions = {example: index for index, example in enumerate(in_file_order)}
  first_batch = [positions[example] for example in first[:1000]]
  assert max(first_batch) - min(first_batch) > 10_000
  again = _examples(_stream(ml100k_preprocessed, shuffle=True,
                            shuffle_buffer=20_000, seed=3))
  assert again == first


def test_repeated_stream_runs_whole_epochs_back_to_back(ml100k_preprocessed):
  in_file_order = _examples(_stream(ml100k_preprocessed))
  size = len(in_file_order)
  batches = -(-2 * size // 1000)
  # A window that does not divide the split: the last one of an epoch is
  # partial, and epochs still do not mix.
  stream = _stream(ml100k_preprocessed, shuffle=True, shuffle_buffer=30_000,
                   seed=5, repeat=True)
  examples = _examples(stream.take(batches))
  assert [len(labels) for _, labels in stream.take(batches)] == [1000] * batches
  assert collections.Counter(examples[:size]) == collections.Counter(
      in_file_order)
  assert collections.Counter(examples[size:2 * size]) == collections.Counter(
      in_file_order)
  assert examples[:size] != examples[size:2 * size]  # reshuffled per epoch


def test_unshuffled_stream_and_loaded_arrays_hold_the_same_rows(
    ml100k_preprocessed):
  streamed = _examples(_stream(ml100k_preprocessed))
  arrays = data_lib.load_arrays(ml100k_preprocessed, "train", NAMES)
  loaded = _examples(data_lib.numpy_dataset(
      arrays, data_lib.InputOptions(batch_size=1000), NAMES))
  assert loaded == streamed


def test_auto_input_mode_loads_only_within_the_memory_budget(
    ml100k_preprocessed):
  num_examples, _ = data_lib.split_stats(
      data_lib.list_shards(ml100k_preprocessed, "train"))
  estimate = data_lib.in_memory_bytes(ml100k_preprocessed, "train", NAMES,
                                      num_examples)
  arrays = data_lib.load_arrays(ml100k_preprocessed, "train", NAMES)
  actual = sum(column.nbytes for column in arrays.dense.values()) + sum(
      values.nbytes + splits.nbytes - 8
      for values, splits in arrays.sparse.values())
  assert abs(estimate - actual) / actual < 0.1

  def choose(requested, budget, streaming_only=False):
    return data_lib.choose_input_mode(
        requested, ml100k_preprocessed, "train", NAMES, num_examples, budget,
        streaming_only)

  # The loaded arrays and the tensors built from them: twice the columns.
  assert choose("auto", 2 * estimate) == "numpy"
  assert choose("auto", 2 * estimate - 1) == "tfrecord"
  assert choose("auto", 1 << 40, streaming_only=True) == "tfrecord"
  assert choose("numpy", 0) == "numpy"
  assert choose("tfrecord", 1 << 40) == "tfrecord"
  assert np.isclose(arrays.labels.mean(), data_lib.split_stats(
      data_lib.list_shards(ml100k_preprocessed, "train"))[1], atol=1e-6)
