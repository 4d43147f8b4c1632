"""preprocessing_fn: raw joined columns -> model-ready ids, for tf.Transform.

Pure and top-level: no I/O; the pipeline binds a spec with
`functools.partial(preprocessing_fn, spec=spec)` (picklable, so it ships to
Dataflow and Flink workers).

Output contract (what the trainer reads):
  * a single-valued categorical feature -> int64 [batch] ids in [0, size);
  * a multi-valued one (tokens, or a cross with a tokens member) -> int64
    SparseTensor [batch, None];
  * numeric -> float32 [batch] z-scores;
  * LABEL_KEY -> float32 [batch].
"""

from typing import Dict, Mapping, Union

import tensorflow as tf
import tensorflow_transform as tft

from transforms import spec as spec_lib

LABEL_KEY = "label"
CROSS_SEPARATOR = "_X_"

_SECONDS_PER_DAY = 86400
_SECONDS_PER_HOUR = 3600
# 1970-01-01 was a Thursday; with Monday = 0 it is day 3.
_EPOCH_WEEKDAY = 3

TensorLike = Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]


def day_of_week(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> day of week, Monday = 0 .. Sunday = 6, int64."""
  days = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_DAY)
  return tf.math.floormod(days + _EPOCH_WEEKDAY, 7)


def hour_of_day(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> hour of day 0..23, int64."""
  hours = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_HOUR)
  return tf.math.floormod(hours, 24)


def _as_string(x: tf.Tensor) -> tf.Tensor:
  return x if x.dtype == tf.string else tf.strings.as_string(x)


def _tokens(feature: spec_lib.Feature,
            inputs: Mapping[str, tf.Tensor]) -> tf.RaggedTensor:
  """The feature's tokens per row, empty tokens dropped."""
  if feature.flag_columns:
    flags = tf.stack([tf.cast(inputs[column], tf.int64) > 0
                      for column, _ in feature.flag_columns], axis=1)
    names = tf.constant([token for _, token in feature.flag_columns])
    names = tf.broadcast_to(names, tf.shape(flags))
    return tf.ragged.boolean_mask(names, flags)
  pieces = tf.strings.split(inputs[feature.source], sep=feature.delimiter)
  pieces = tf.strings.strip(pieces)
  return tf.ragged.boolean_mask(pieces, tf.strings.length(pieces) > 0)


def _learned_vocabulary(feature: spec_lib.Feature, x: TensorLike) -> TensorLike:
  return tft.compute_and_apply_vocabulary(
      x, top_k=feature.top_k, frequency_threshold=feature.frequency_threshold,
      num_oov_buckets=feature.num_oov_buckets, vocab_filename=feature.name,
      name=f"vocabulary_{feature.name}")


def _cross_inputs(feature: spec_lib.Feature,
                  cross_values: Mapping[str, TensorLike]):
  """Members as rank-2 tensors, the form tf.sparse.cross* expects."""
  members = []
  for member in feature.features:
    value = cross_values[member]
    if isinstance(value, tf.RaggedTensor):
      members.append(value.to_sparse())
    else:
      members.append(tf.expand_dims(value, axis=1))
  return members


def _single_value(ids: tf.SparseTensor) -> tf.Tensor:
  """A [batch, 1] SparseTensor with one value per row -> dense [batch]."""
  return tf.reshape(tf.sparse.to_dense(ids), [-1])


def hashed_cross(members, num_buckets: int) -> tf.SparseTensor:
  """The Cartesian product of members, hashed into [0, num_buckets).

  Exactly `tf.sparse.cross_hashed` with its default key, which is also what
  `tf.keras.layers.HashedCrossing(num_bins=num_buckets)` computes, so a
  serving-side Keras layer gives the ids the pipeline wrote.

  Args:
    members: rank-2 dense or sparse tensors, int64 or string.
    num_buckets: the table size.

  Returns:
    int64 SparseTensor [batch, product of member counts].
  """
  return tf.sparse.cross_hashed(inputs=list(members), num_buckets=num_buckets)


def preprocessing_fn(inputs: Mapping[str, tf.Tensor],
                     spec: spec_lib.FeatureSpec) -> Dict[str, TensorLike]:
  """Maps raw columns to ids, z-scores and the label, per the spec.

  Args:
    inputs: raw column name -> dense [batch] tensor (string, int64 or
      float32), as declared by `spec.raw_column_types()`.
    spec: the feature spec.

  Returns:
    Transformed feature name -> tensor (see the module docstring).
  """
  outputs: Dict[str, TensorLike] = {}
  # What each feature contributes to a cross: its raw value (vocabulary and
  # hash kinds) or its bucket id (bucketized, identity, time), per row.
  cross_values: Dict[str, TensorLike] = {}
  for feature in spec.features:
    kind = feature.kind
    if kind == spec_lib.VOCABULARY:
      value = _as_string(inputs[feature.source])
      outputs[feature.name] = _learned_vocabulary(feature, value)
      cross_values[feature.name] = value
    elif kind == spec_lib.IDENTITY:
      value = tf.cast(inputs[feature.source], tf.int64)
      in_range = (value >= 0) & (value < feature.num_buckets)
      ids = tf.where(in_range, value,
                     tf.constant(feature.num_buckets, tf.int64))
      outputs[feature.name] = ids
      cross_values[feature.name] = ids
    elif kind == spec_lib.HASH:
      value = _as_string(inputs[feature.source])
      outputs[feature.name] = tf.strings.to_hash_bucket_fast(
          value, feature.hash_bucket_size)
      cross_values[feature.name] = value
    elif kind == spec_lib.BUCKETIZED:
      ids = tft.bucketize(tf.cast(inputs[feature.source], tf.float32),
                          feature.num_buckets, name=f"bucketize_{feature.name}")
      ids = tf.cast(ids, tf.int64)
      outputs[feature.name] = ids
      cross_values[feature.name] = ids
    elif kind == spec_lib.NUMERIC:
      outputs[feature.name] = tft.scale_to_z_score(
          tf.cast(inputs[feature.source], tf.float32),
          name=f"z_score_{feature.name}")
    elif kind == spec_lib.TOKENS:
      tokens = _tokens(feature, inputs)
      ids = _learned_vocabulary(feature, tokens.to_sparse())
      outputs[feature.name] = ids
      cross_values[feature.name] = tokens
    elif kind in spec_lib.TIME_KINDS:
      to_id = day_of_week if kind == spec_lib.DAY_OF_WEEK else hour_of_day
      ids = to_id(inputs[feature.source])
      outputs[feature.name] = ids
      cross_values[feature.name] = ids
    elif kind == spec_lib.CROSS:
      members = _cross_inputs(feature, cross_values)
      multivalent = spec.is_multivalent(feature.name)
      if feature.vocabulary:
        crossed = tf.sparse.cross(members, separator=CROSS_SEPARATOR)
        ids = _learned_vocabulary(feature, crossed)
      else:
        ids = hashed_cross(members, feature.hash_bucket_size)
      outputs[feature.name] = ids if multivalent else _single_value(ids)
      cross_values[feature.name] = (
          tf.RaggedTensor.from_sparse(crossed if feature.vocabulary else ids)
          if multivalent else outputs[feature.name])
    else:
      raise ValueError(f"feature {feature.name!r}: unknown kind {kind!r}")
  outputs[LABEL_KEY] = tf.cast(inputs[spec.label.column], tf.float32)
  return outputs
