"""Train/eval split and the hand-over to tf.Transform's TFXIO format.

The split is a pure function of the split key's text and the spec's seed:
blake2b (a fixed, platform-independent hash, unlike Python's `hash()`, which
is salted per process) of "<seed>:<key>", read as a number in [0, 1); rows
below `eval_fraction` go to eval. Every row with the same key lands on the
same side on every run, runner and machine.

A table with `eval_path` is split by file instead: the parser stamps each
row with SPLIT_COLUMN (0 train, 1 eval).
"""

import hashlib
from typing import Dict, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from core import layout
from pipelines import rows as rows_lib

_SPLIT_IDS = {layout.TRAIN: 0, layout.EVAL: 1}
# Split decisions remembered per worker; bounds memory at many keys.
_CACHE_LIMIT = 1 << 20

# tf dtype of each spec column type, as TFXIO Arrow value types.
TFXIO_TYPES = {"string": pa.binary(), "int": pa.int64(),
               "float": pa.float32()}


def split_id(name: str) -> int:
  """The SPLIT_COLUMN value of a split name.

  Args:
    name: layout.TRAIN or layout.EVAL.

  Returns:
    0 for train, 1 for eval.
  """
  return _SPLIT_IDS[name]


def eval_fraction_of(key: str, seed: int) -> float:
  """Where a split key falls in [0, 1): below eval_fraction means eval.

  Args:
    key: the split key's value as text.
    seed: the spec's split seed.

  Returns:
    A number in [0, 1), the same on every machine and run.
  """
  digest = hashlib.blake2b(f"{seed}:{key}".encode("utf-8"),
                           digest_size=8).digest()
  return int.from_bytes(digest, "big") / float(1 << 64)


def split_keys(batch: pa.RecordBatch, columns: Sequence[str]) -> pa.Array:
  """The split key of each row: one column as is, several joined by US.

  Args:
    batch: joined rows.
    columns: the spec's split key columns.

  Returns:
    One value per row; the unit separator (\x1f) cannot occur in a parsed
    key, so distinct column tuples give distinct keys.
  """
  if len(columns) == 1:
    return batch.column(columns[0])
  parts = [pc.cast(batch.column(column), pa.string()) for column in columns]
  return pc.binary_join_element_wise(*parts, "\x1f")


def eval_mask(keys: pa.Array, eval_fraction: float, seed: int,
              cache: Optional[Dict[str, bool]] = None) -> np.ndarray:
  """Which rows of a batch go to eval, hashing each distinct key once.

  Args:
    keys: the split key column.
    eval_fraction: the share of keys that go to eval.
    seed: the spec's split seed.
    cache: key -> in eval, reused across batches (filled up to
      _CACHE_LIMIT keys).

  Returns:
    A boolean numpy array, True for eval rows.
  """
  if not pa.types.is_string(keys.type):
    keys = pc.cast(keys, pa.string())
  cache = {} if cache is None else cache
  encoded = pc.dictionary_encode(keys)
  in_eval = []
  for value in encoded.dictionary.to_pylist():
    side = cache.get(value)
    if side is None:
      side = eval_fraction_of(value, seed) < eval_fraction
      if len(cache) < _CACHE_LIMIT:
        cache[value] = side
    in_eval.append(side)
  return np.array(in_eval, dtype=bool)[
      encoded.indices.to_numpy(zero_copy_only=False)]


def tfxio_schema(column_types: Mapping[str, str]) -> pa.Schema:
  """Arrow schema of the batches tf.Transform reads: one-value lists.

  Args:
    column_types: spec.raw_column_types().

  Returns:
    One list column per raw column, of its TFXIO value type.
  """
  return pa.schema([(name, pa.list_(TFXIO_TYPES[column_type]))
                    for name, column_type in column_types.items()])


def tensor_adapter_config(column_types: Mapping[str, str]
                         ) -> tfxio.TensorAdapterConfig:
  """Every raw column as a dense FixedLenFeature([]) tensor.

  Args:
    column_types: spec.raw_column_types().

  Returns:
    The TensorAdapterConfig for tft_beam.AnalyzeDataset/TransformDataset.
  """
  representations = {
      name: schema_pb2.TensorRepresentation(
          dense_tensor=schema_pb2.TensorRepresentation.DenseTensor(
              column_name=name, shape=schema_pb2.FixedShape()))
      for name in column_types}
  return tfxio.TensorAdapterConfig(tfxio_schema(column_types),
                                   representations)


def to_tfxio_batch(batch: pa.RecordBatch, column_types: Mapping[str, str],
                   schema: pa.Schema) -> pa.RecordBatch:
  """Keeps the raw columns and wraps each value in a one-element list.

  Args:
    batch: a joined batch (parsed column types).
    column_types: spec.raw_column_types().
    schema: tfxio_schema(column_types).

  Returns:
    A RecordBatch with `schema`.
  """
  offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32))
  arrays = []
  for name, column_type in column_types.items():
    values = batch.column(name)
    target = TFXIO_TYPES[column_type]
    if values.type != target:
      values = pc.cast(values, target)
    arrays.append(pa.ListArray.from_arrays(offsets, values))
  return pa.RecordBatch.from_arrays(arrays, schema=schema)


class SplitAndConvert(beam.DoFn):
  """Joined batches -> TFXIO batches tagged layout.TRAIN or layout.EVAL."""

  def __init__(self, column_types: Mapping[str, str],
               split_key: Optional[Sequence[str]],
               eval_fraction: float, seed: int):
    """Builds the DoFn.

    Args:
      column_types: spec.raw_column_types().
      split_key: the split key columns, or None to split by SPLIT_COLUMN.
      eval_fraction: share of split keys that go to eval.
      seed: the spec's split seed.
    """
    self._column_types = dict(column_types)
    self._split_key = tuple(split_key) if split_key else None
    self._eval_fraction = eval_fraction
    self._seed = seed
    self._schema = tfxio_schema(self._column_types)
    self._cache: Dict[str, bool] = {}

  def process(self, batch: pa.RecordBatch):
    if self._split_key is None:
      in_eval = batch.column(rows_lib.SPLIT_COLUMN).to_numpy(
          zero_copy_only=False) == split_id(layout.EVAL)
    else:
      in_eval = eval_mask(split_keys(batch, self._split_key),
                          self._eval_fraction,
                          self._seed, self._cache)
    # Only the raw columns travel on; the rest is dropped before filtering.
    batch = batch.select(list(self._column_types))
    for name, mask in ((layout.TRAIN, ~in_eval), (layout.EVAL, in_eval)):
      if not mask.any():
        continue
      part = batch if mask.all() else batch.filter(pa.array(mask))
      yield beam.pvalue.TaggedOutput(
          name, to_tfxio_batch(part, self._column_types, self._schema))
