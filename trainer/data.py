"""Training input: tf.data over the pipeline's TFRecords, or NumPy in memory.

A split may be cut in two by a stable hash of each serialized record
(`Holdout`): the training split's held-out rows validate the epochs, the
rest train, and which rows are which depends only on the record's bytes and
the seed, so both input modes and every strategy see the same rows.

Both paths yield the same batches: `(features, label)` where a single-valued
feature is int64/float32 [batch], a multi-valued one an int64 SparseTensor
[batch, None], and the label float32 [batch]. The NumPy path is loaded by
reading the TFRecords once in file order, so with shuffling off both paths
feed a model the same examples in the same order and train the same weights.

The two paths share this module (past 400 lines) because that contract
binds them: the batch layout one builds is the layout the other must
match, and reading them side by side is how a change to either is checked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from core import layout
from transforms.spec import LABEL_KEY


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
  pattern = layout.PreprocessedLayout(preprocessed_dir).shard_pattern(split)
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


def _split_label(features: Dict[str, tf.Tensor]):
  features = dict(features)
  label = features.pop(LABEL_KEY)
  return features, label


# Hash buckets a record falls into; a fraction f holds out buckets < f * this.
HOLDOUT_BUCKETS = 1 << 30
# The second half of the hash key (the first is the seed): keeps the held-out
# rows independent of anything else the seed draws.
_HOLDOUT_SALT = 0x686f6c646f7574


@dataclasses.dataclass(frozen=True)
class Holdout:
  """Rows held out of a split by a stable hash of their serialized record.

  Attributes:
    fraction: the share of rows held out, in [0, 1).
    seed: salts the hash (another seed holds out other rows).
    held_out: keep the held-out rows (validation) instead of the others.
  """
  fraction: float
  seed: int
  held_out: bool = False


def held_out_mask(records: tf.Tensor, fraction: float, seed: int
                 ) -> tf.Tensor:
  """Which serialized records a Holdout of `fraction` holds out.

  Args:
    records: [n] serialized tf.Examples.
    fraction: the share held out.
    seed: salts the hash.

  Returns:
    [n] bool, the same for the same bytes and seed on every run.
  """
  buckets = tf.strings.to_hash_bucket_strong(
      records, HOLDOUT_BUCKETS,
      key=[seed & 0x7FFF_FFFF_FFFF_FFFF, _HOLDOUT_SALT])
  return buckets < int(round(fraction * HOLDOUT_BUCKETS))


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """How a split is read.

  Attributes:
    batch_size: examples per batch.
    shuffle: shuffle the shard order and the examples (with `seed`).
    shuffle_buffer: examples mixed together: blocks are shuffled through a
      buffer of this many examples, then each window of this many examples
      is permuted whole.
    seed: makes shuffling reproducible.
    shuffle_shards: with `shuffle`, also shuffle the order shards are read
      in. Off where the tf.data service hands shards out one at a time
      (a shuffle buffer of every shard would let one reader claim them all).
    repeat: repeat forever (training with steps_per_epoch).
    cycle_length: shards read (and decompressed) concurrently.
    block_size: consecutive records of one shard read as one element.
    holdout: read only one side of a hash split of the rows (None: all).
  """
  batch_size: int
  shuffle: bool = False
  shuffle_buffer: int = 10_000
  seed: int = 0
  shuffle_shards: bool = True
  repeat: bool = False
  cycle_length: int = 4
  block_size: int = 512
  holdout: Optional[Holdout] = None


def _record_blocks(files: Sequence[str], options: InputOptions,
                   input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
  """The shards' serialized records as [<= block_size] string vectors.

  tf.data's per-element cost (a parallel interleave of single records is
  an order of magnitude slower than the gzip reader alone) is paid per
  block, not per record. `cycle_length` shards are read in parallel.
  """
  shards = tf.data.Dataset.from_tensor_slices(list(files))
  if input_context is not None and input_context.num_input_pipelines > 1:
    shards = shards.shard(input_context.num_input_pipelines,
                          input_context.input_pipeline_id)
  if options.shuffle and options.shuffle_shards:
    shards = shards.shuffle(len(files), seed=options.seed,
                            reshuffle_each_iteration=True)

  @tf.autograph.experimental.do_not_convert
  def read_blocks(path):
    return tf.data.TFRecordDataset(
        path, compression_type="GZIP").batch(options.block_size)

  blocks = shards.interleave(
      read_blocks,
      cycle_length=max(1, min(options.cycle_length, len(files))),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  holdout = options.holdout
  if holdout is None:
    return blocks

  @tf.autograph.experimental.do_not_convert
  def keep(records):
    mask = held_out_mask(records, holdout.fraction, holdout.seed)
    return tf.boolean_mask(records, mask if holdout.held_out else ~mask)

  # Filtered block by block, before any shuffling: the rows kept do not
  # depend on the order they are read in.
  return blocks.map(keep, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)


def split_stats(files: Sequence[str], batch_size: int = 8192,
                holdout: Optional[Holdout] = None) -> Tuple[int, float]:
  """Counts a split's examples and averages its label in one pass.

  Only the label is parsed, so this costs a fraction of an epoch.

  Args:
    files: the split's shards.
    batch_size: read granularity (does not affect the result).
    holdout: count only one side of a hash split (None: every row).

  Returns:
    (number of examples, mean label; 0.0 when empty).
  """
  spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.float32)}
  dataset = _record_blocks(files, InputOptions(batch_size=batch_size,
                                               block_size=batch_size,
                                               holdout=holdout))
  dataset = dataset.map(
      tf.autograph.experimental.do_not_convert(
          lambda records: tf.io.parse_example(records, spec)[LABEL_KEY]),
      num_parallel_calls=tf.data.AUTOTUNE)
  count, total = dataset.reduce(
      (np.int64(0), np.float64(0)),
      lambda acc, y: (acc[0] + tf.size(y, out_type=tf.int64),
                      acc[1] + tf.reduce_sum(tf.cast(y, tf.float64))))
  count = int(count.numpy())
  return count, (float(total.numpy()) / count if count else 0.0)


def _permute_windows(windows: tf.data.Dataset, seed: int) -> tf.data.Dataset:
  """Permutes each window of records whole, reproducibly from `seed`.

  Each window takes its own stateless seed from a seeded random stream, so
  a rerun with the same seed sees the same permutations, and the stream is
  rerandomized when the dataset is iterated again (a new epoch).
  """
  seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

  @tf.autograph.experimental.do_not_convert
  def permute(records, seed_pair):
    return tf.random.experimental.stateless_shuffle(records, seed=seed_pair)

  return tf.data.Dataset.zip(windows, seeds.batch(2)).map(permute)


def tfrecord_dataset(preprocessed_dir: str, split: str,
                     options: InputOptions,
                     feature_names: Optional[Sequence[str]] = None,
                     files: Optional[Sequence[str]] = None,
                     input_context: Optional[tf.distribute.InputContext] = None
                    ) -> tf.data.Dataset:
  """Streams a split's TFRecords as batches of parsed (features, label).

  Records move through tf.data in blocks, never one by one: `cycle_length`
  shards are read (and gunzipped) in parallel, each yielding blocks of
  `block_size` consecutive records. Shuffling mixes at two levels: the
  blocks pass through a buffer of `shuffle_buffer` examples, then each
  window of `shuffle_buffer` records is permuted whole. Batches are parsed
  with tf.io.parse_example, in parallel. Without shuffling the order is
  deterministic (the same on every read).

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
  dataset = _record_blocks(files, options, input_context)
  if options.shuffle:
    dataset = dataset.shuffle(
        max(1, options.shuffle_buffer // options.block_size),
        seed=options.seed, reshuffle_each_iteration=True)
    dataset = _permute_windows(dataset.rebatch(options.shuffle_buffer),
                               options.seed)
  if options.repeat:
    # After shuffling, so each epoch holds every example once; batches run
    # on across the epoch boundary.
    dataset = dataset.repeat()
  dataset = dataset.rebatch(options.batch_size)
  parse = tf.autograph.experimental.do_not_convert(
      lambda records: tf.io.parse_example(records, parse_spec))
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  dataset = dataset.map(_split_label)
  return dataset.prefetch(tf.data.AUTOTUNE)


def in_memory_bytes(preprocessed_dir: str, split: str,
                    feature_names: Optional[Sequence[str]],
                    num_examples: int, sample: int = 4096) -> int:
  """Estimates what load_arrays would hold for a split, from a sample.

  Args:
    preprocessed_dir: a finished preprocessing output directory.
    split: "train" or "eval".
    feature_names: the features to load (None: all).
    num_examples: the split's size (from split_stats).
    sample: examples parsed for the estimate (the first ones).

  Returns:
    Estimated bytes of the loaded columns (label included).
  """
  batch = next(iter(tfrecord_dataset(
      preprocessed_dir, split, InputOptions(batch_size=sample),
      feature_names)), None)
  if batch is None:
    return 0
  features, label = batch
  total = label.numpy().nbytes
  for value in features.values():
    if isinstance(value, tf.SparseTensor):
      # Stored as int64 values plus one int64 row split per example.
      total += value.values.numpy().nbytes + 8 * int(label.shape[0])
    else:
      total += value.numpy().nbytes
  return int(math.ceil(total / int(label.shape[0]) * num_examples))


def choose_input_mode(requested: str, preprocessed_dir: str, split: str,
                      feature_names: Optional[Sequence[str]],
                      num_examples: int, max_memory_bytes: int,
                      streaming_only: bool = False) -> str:
  """Resolves the "auto" input mode.

  A split whose model inputs fit in `max_memory_bytes` (counted twice: the
  loaded arrays and their tensors) is loaded into memory once ("numpy"):
  every later epoch then costs no decompression or parsing, which on CPU
  is several times the step of a small model.
  Anything larger is streamed ("tfrecord").

  Args:
    requested: "auto", "tfrecord" or "numpy".
    preprocessed_dir: a finished preprocessing output directory.
    split: the split to read.
    feature_names: the model's inputs.
    num_examples: the split's size.
    max_memory_bytes: the most the loaded columns may take.
    streaming_only: the input must be streamed (parameter-server workers
      build their own datasets from the shards).

  Returns:
    "tfrecord" or "numpy".
  """
  if requested != "auto":
    return requested
  if streaming_only:
    return "tfrecord"
  # Held about twice while training: the loaded NumPy columns and the
  # tensors numpy_dataset builds from them (multi-valued ones padded, at
  # most MAX_PADDING_GROWTH times their ragged size).
  needed = 2 * in_memory_bytes(preprocessed_dir, split, feature_names,
                               num_examples)
  return "numpy" if needed <= max_memory_bytes else "tfrecord"


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
                batch_size: int = 8192,
                holdout: Optional[Holdout] = None) -> InMemorySplit:
  """Reads a whole split into NumPy arrays, in file order.

  Args:
    preprocessed_dir: a finished preprocessing output directory.
    split: "train" or "eval".
    feature_names: the features to keep (None: all).
    batch_size: read granularity (does not affect the result).
    holdout: load only one side of a hash split (None: every row).

  Returns:
    The split in memory.
  """
  dataset = tfrecord_dataset(preprocessed_dir, split,
                             InputOptions(batch_size=batch_size,
                                          holdout=holdout),
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


# Multi-valued columns are held padded (-1 past each row's ids) when that
# takes at most this many times the ragged layout: a batch is then a plain
# row gather, faster than a ragged one.
MAX_PADDING_GROWTH = 1.5


def _multivalued_rows(values: np.ndarray, row_splits: np.ndarray):
  """A multi-valued column as a padded [n, width] tensor or a RaggedTensor."""
  lengths = np.diff(row_splits)
  width = int(lengths.max()) if lengths.size else 0
  ragged_bytes = values.nbytes + row_splits.nbytes
  # -1 marks padding, so only ids that are never negative can be padded.
  if (width and values.min() >= 0
      and lengths.size * width * 8 <= MAX_PADDING_GROWTH * ragged_bytes):
    padded = np.full((lengths.size, width), -1, np.int64)
    padded[np.arange(width) < lengths[:, None]] = values
    return tf.constant(padded)
  return tf.RaggedTensor.from_row_splits(values, row_splits)


def _sparse_batch(rows, batch_indices: tf.Tensor) -> tf.SparseTensor:
  """The batch's ids as tf.io.parse_example lays them out: [batch, longest]."""
  if isinstance(rows, tf.RaggedTensor):
    return tf.gather(rows, batch_indices).to_sparse()
  padded = tf.gather(rows, batch_indices)
  indices = tf.where(padded >= 0)
  longest = tf.reduce_max(tf.concat([indices[:, 1] + 1, [0]], axis=0))
  return tf.SparseTensor(
      indices, tf.gather_nd(padded, indices),
      tf.stack([tf.shape(padded, out_type=tf.int64)[0], longest]))


def numpy_dataset(data: InMemorySplit, options: InputOptions,
                  feature_names: Optional[Sequence[str]] = None
                 ) -> tf.data.Dataset:
  """Batches an in-memory split into the same (features, label) batches.

  Without shuffling the batches equal tfrecord_dataset's on the same split.
  With shuffling each epoch is a full permutation of the split (a streamed
  read can only mix within its shuffle buffer).

  Args:
    data: from load_arrays.
    options: batching, shuffling and repetition (shuffle_buffer,
      cycle_length and block_size unused).
    feature_names: the model's inputs (None: all loaded features).

  Returns:
    A tf.data.Dataset of (features dict, label).
  """
  names = list(feature_names) if feature_names is not None else [
      name for name in list(data.dense) + list(data.sparse)
      if name != LABEL_KEY]
  unknown = [name for name in names
             if name not in data.sparse and name not in data.dense]
  if unknown:
    raise PreprocessedDataError(
        f"features {unknown} were not loaded; loaded: "
        f"{sorted(set(data.dense) | set(data.sparse))}")
  multivalued = {name: _multivalued_rows(*data.sparse[name])
                 for name in names if name in data.sparse}
  # Single-valued columns of one dtype sit side by side in one [n, k]
  # matrix, so a batch is one gather per dtype instead of one per column.
  by_dtype: Dict[np.dtype, List[str]] = {}
  for name in [name for name in names if name in data.dense] + [LABEL_KEY]:
    by_dtype.setdefault(data.dense[name].dtype, []).append(name)
  matrices = [(group, tf.constant(np.stack(
      [data.dense[name] for name in group], axis=1)))
              for group in by_dtype.values()]
  # Whole batches of row numbers, gathered at once: per-row tf.data work (a
  # shuffle buffer over row numbers) would cost more than the step.
  # Shuffling draws a full permutation per epoch.
  num_examples = data.num_examples
  if options.shuffle:
    # One stateless seed per epoch from a seeded stream: reruns repeat the
    # permutations, each epoch (and each new iteration) gets a new one.
    seeds = tf.data.Dataset.random(seed=options.seed,
                                   rerandomize_each_iteration=True).batch(2)
    epochs = seeds if options.repeat else seeds.take(1)
    indices = epochs.map(tf.autograph.experimental.do_not_convert(
        lambda seed: tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=seed)))
  else:
    epoch = tf.data.Dataset.from_tensors(tf.range(num_examples,
                                                  dtype=tf.int64))
    indices = epoch.repeat() if options.repeat else epoch
  indices = indices.rebatch(options.batch_size)

  @tf.autograph.experimental.do_not_convert
  def to_model_input(batch_indices):
    batch = {}
    for group, matrix in matrices:
      rows = tf.gather(matrix, batch_indices)
      batch.update({name: rows[:, k] for k, name in enumerate(group)})
    for name, rows in multivalued.items():
      batch[name] = _sparse_batch(rows, batch_indices)
    return _split_label(batch)

  return indices.map(to_model_input).prefetch(tf.data.AUTOTUNE)
