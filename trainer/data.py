"""Training input: tf.data over the pipeline's TFRecords, or NumPy in memory.

Both paths yield the same batches: `(features, label)` where a single-valued
feature is int64/float32 [batch], a multi-valued one an int64 SparseTensor
[batch, None], and the label float32 [batch]. The NumPy path is loaded by
reading the TFRecords once in file order, so with shuffling off both paths
feed a model the same examples in the same order and train the same weights.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

# The check lives with the code that writes _SUCCESS; re-exported here so
# trainer modules need one import.
from pipelines.outputs import SUCCESS_FILE  # pylint: disable=unused-import
from pipelines.outputs import UnfinishedOutputError  # pylint: disable=unused-import
from pipelines.outputs import require_finished_output  # pylint: disable=unused-import
from transforms.preprocessing import LABEL_KEY

SHARD_PATTERN = "part-*.tfrecord.gz"


class PreprocessedDataError(ValueError):
  """The preprocessing output lacks a split, a feature or examples."""


def list_shards(preprocessed_dir: str, split: str) -> Tuple[str, ...]:
  """The split's gzipped TFRecord shards, sorted by name.

  Args:
    preprocessed_dir: a finished preprocessing output directory.
    split: "train" or "eval".

  Returns:
    The shard paths.

  Raises:
    PreprocessedDataError: the split has no shards.
  """
  pattern = os.path.join(preprocessed_dir, split, SHARD_PATTERN)
  files = tuple(sorted(tf.io.gfile.glob(pattern)))
  if not files:
    raise PreprocessedDataError(
        f"no TFRecord shards match {pattern!r}: split {split!r} is missing "
        f"from the preprocessing output")
  return files


def transformed_feature_spec(preprocessed_dir: str
                            ) -> Dict[str, tf.io.FixedLenFeature]:
  """The parse spec of the transformed tf.Examples, from the transform output.

  Args:
    preprocessed_dir: a finished preprocessing output directory.

  Returns:
    Transformed feature name -> FixedLenFeature / VarLenFeature.
  """
  return tft.TFTransformOutput(preprocessed_dir).transformed_feature_spec()


def _select(feature_spec: Mapping[str, object],
            feature_names: Optional[Sequence[str]]) -> Dict[str, object]:
  if feature_names is None:
    return dict(feature_spec)
  missing = sorted(set(feature_names) - set(feature_spec))
  if missing:
    raise PreprocessedDataError(
        f"features {missing} are not in the transformed data; it has "
        f"{sorted(feature_spec)}")
  names = list(feature_names) + [LABEL_KEY]
  return {name: feature_spec[name] for name in names}


def split_stats(files: Sequence[str], batch_size: int = 8192
               ) -> Tuple[int, float]:
  """Counts a split's examples and averages its label in one pass.

  Only the label is parsed, so this costs a fraction of an epoch.

  Args:
    files: the split's shards.
    batch_size: read granularity (does not affect the result).

  Returns:
    (number of examples, mean label; 0.0 when empty).
  """
  spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.float32)}
  dataset = tf.data.TFRecordDataset(list(files), compression_type="GZIP",
                                    num_parallel_reads=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size).map(
      lambda records: tf.io.parse_example(records, spec)[LABEL_KEY],
      num_parallel_calls=tf.data.AUTOTUNE)
  count, total = dataset.reduce(
      (np.int64(0), np.float64(0)),
      lambda acc, y: (acc[0] + tf.size(y, out_type=tf.int64),
                      acc[1] + tf.reduce_sum(tf.cast(y, tf.float64))))
  count = int(count.numpy())
  return count, (float(total.numpy()) / count if count else 0.0)


def _split_label(features: Dict[str, tf.Tensor]):
  features = dict(features)
  label = features.pop(LABEL_KEY)
  return features, label


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """How a split is read.

  Attributes:
    batch_size: examples per batch.
    shuffle: shuffle the shard order and the examples (with `seed`).
    shuffle_buffer: examples in the shuffle buffer.
    seed: makes shuffling reproducible.
    repeat: repeat forever (training with steps_per_epoch).
    cycle_length: shards read concurrently.
  """
  batch_size: int
  shuffle: bool = False
  shuffle_buffer: int = 10_000
  seed: int = 0
  repeat: bool = False
  cycle_length: int = 4


def tfrecord_dataset(preprocessed_dir: str, split: str,
                     options: InputOptions,
                     feature_names: Optional[Sequence[str]] = None,
                     files: Optional[Sequence[str]] = None,
                     input_context: Optional[tf.distribute.InputContext] = None
                    ) -> tf.data.Dataset:
  """Streams a split's TFRecords as batches of parsed (features, label).

  Shards are interleaved; with shuffling off the interleave is deterministic
  (same order on every read). Examples are batched before parsing so
  tf.io.parse_example works on whole batches.

  Args:
    preprocessed_dir: a finished preprocessing output directory.
    split: "train" or "eval".
    options: batching, shuffling and repetition.
    feature_names: the model's inputs (None: every transformed feature).
    files: the shards to read (default: all of the split's).
    input_context: under a distribution strategy that shards input per
      worker (parameter servers), this worker's slice of the shards.

  Returns:
    A tf.data.Dataset of (features dict, label).
  """
  files = list(files or list_shards(preprocessed_dir, split))
  parse_spec = _select(transformed_feature_spec(preprocessed_dir),
                       feature_names)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context is not None and input_context.num_input_pipelines > 1:
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  if options.shuffle:
    dataset = dataset.shuffle(len(files), seed=options.seed,
                              reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
      cycle_length=min(options.cycle_length, len(files)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if options.shuffle:
    dataset = dataset.shuffle(options.shuffle_buffer, seed=options.seed,
                              reshuffle_each_iteration=True)
  if options.repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(options.batch_size)
  dataset = dataset.map(lambda records: tf.io.parse_example(records,
                                                            parse_spec),
                        num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  dataset = dataset.map(_split_label)
  return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class InMemorySplit:
  """A split held in NumPy arrays.

  Attributes:
    dense: feature (and label) name -> [n] array.
    sparse: multi-valued feature name -> (values [m] int64, row_splits
      [n + 1] int64), the ragged layout of the ids per example.
  """
  dense: Mapping[str, np.ndarray]
  sparse: Mapping[str, Tuple[np.ndarray, np.ndarray]]

  @property
  def num_examples(self) -> int:
    return int(len(self.dense[LABEL_KEY]))

  @property
  def labels(self) -> np.ndarray:
    return self.dense[LABEL_KEY]


def load_arrays(preprocessed_dir: str, split: str,
                feature_names: Optional[Sequence[str]] = None,
                batch_size: int = 8192) -> InMemorySplit:
  """Reads a whole split into NumPy arrays, in file order.

  Args:
    preprocessed_dir: a finished preprocessing output directory.
    split: "train" or "eval".
    feature_names: the features to keep (None: all).
    batch_size: read granularity (does not affect the result).

  Returns:
    The split in memory.
  """
  dataset = tfrecord_dataset(preprocessed_dir, split,
                             InputOptions(batch_size=batch_size),
                             feature_names)
  dense: Dict[str, list] = {}
  sparse_values: Dict[str, list] = {}
  sparse_lengths: Dict[str, list] = {}
  for features, label in dataset:
    dense.setdefault(LABEL_KEY, []).append(label.numpy())
    for name, value in features.items():
      if isinstance(value, tf.SparseTensor):
        rows = tf.RaggedTensor.from_sparse(value)
        # from_sparse drops trailing empty rows; pad lengths to the batch.
        lengths = np.zeros(int(value.dense_shape[0]), np.int64)
        got = rows.row_lengths().numpy()
        lengths[:len(got)] = got
        sparse_values.setdefault(name, []).append(rows.flat_values.numpy())
        sparse_lengths.setdefault(name, []).append(lengths)
      else:
        dense.setdefault(name, []).append(value.numpy())
  dense_arrays = {name: np.concatenate(parts) for name, parts in dense.items()}
  sparse_arrays = {}
  for name, parts in sparse_values.items():
    lengths = np.concatenate(sparse_lengths[name])
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    sparse_arrays[name] = (np.concatenate(parts).astype(np.int64), splits)
  return InMemorySplit(dense=dense_arrays, sparse=sparse_arrays)


def numpy_dataset(data: InMemorySplit, options: InputOptions,
                  feature_names: Optional[Sequence[str]] = None
                 ) -> tf.data.Dataset:
  """Batches an in-memory split the way tfrecord_dataset does.

  Args:
    data: from load_arrays.
    options: batching, shuffling and repetition (cycle_length unused).
    feature_names: the model's inputs (None: all loaded features).

  Returns:
    A tf.data.Dataset of (features dict, label).
  """
  names = list(feature_names) if feature_names is not None else [
      name for name in list(data.dense) + list(data.sparse)
      if name != LABEL_KEY]
  columns = {}
  for name in names:
    if name in data.sparse:
      values, splits = data.sparse[name]
      columns[name] = tf.RaggedTensor.from_row_splits(values, splits)
    elif name in data.dense:
      columns[name] = data.dense[name]
    else:
      raise PreprocessedDataError(f"feature {name!r} was not loaded; loaded: "
                                  f"{sorted(set(data.dense) | set(data.sparse))}")
  columns[LABEL_KEY] = data.dense[LABEL_KEY]
  columns = {name: value if isinstance(value, tf.RaggedTensor)
             else tf.constant(value) for name, value in columns.items()}
  # Shuffle and batch row indices, then gather whole batches: the same
  # batches as slicing rows one by one (shuffling range(n) with the same seed
  # and buffer gives the same order), at a fraction of the per-row cost.
  indices = tf.data.Dataset.range(data.num_examples)
  if options.shuffle:
    indices = indices.shuffle(min(options.shuffle_buffer, data.num_examples),
                              seed=options.seed, reshuffle_each_iteration=True)
  if options.repeat:
    indices = indices.repeat()
  indices = indices.batch(options.batch_size)

  def to_model_input(batch_indices):
    batch = {}
    for name, value in columns.items():
      rows = tf.gather(value, batch_indices)
      batch[name] = rows.to_sparse() if isinstance(rows, tf.RaggedTensor) else rows
    return _split_label(batch)

  return indices.map(to_model_input).prefetch(tf.data.AUTOTUNE)
