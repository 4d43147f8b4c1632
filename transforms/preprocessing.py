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

What a feature contributes to a cross (and so what a serving-side
`HashedCrossing` layer must be fed to reproduce the hashed ids): vocabulary
and hash features their raw value (int64 or string, as read; other dtypes as
their string form), bucketized, identity and time features their int64 bucket
id, tokens features their tokens, vocabulary crosses their crossed string
and hashed crosses their hashed id.
"""

from typing import Dict, Mapping, Union

import tensorflow as tf
import tensorflow_transform as tft

from transforms import spec as spec_lib

LABEL_KEY = spec_lib.LABEL_KEY
CROSS_SEPARATOR = "_X_"

_SECONDS_PER_DAY = 86400
_SECONDS_PER_HOUR = 3600
# 1970-01-01 was a Thursday; with Monday = 0 it is day 3.
_EPOCH_WEEKDAY = 3

TensorLike = Union[tf.Tensor, tf.SparseTensor, tf.RaggedTensor]


def day_of_week(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> day of week, as Python's datetime.weekday().

  Args:
    timestamp: integer unix seconds; before the epoch (negative) works too,
      floor division keeps 1969-12-31 23:59:59 (-1) a Wednesday.

  Returns:
    int64 day of week, Monday = 0 .. Sunday = 6.
  """
  days = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_DAY)
  return tf.math.floormod(days + _EPOCH_WEEKDAY, 7)


def hour_of_day(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> hour of day.

  Args:
    timestamp: integer unix seconds, negative ones included.

  Returns:
    int64 hour of day, 0 .. 23.
  """
  hours = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_HOUR)
  return tf.math.floormod(hours, 24)


def _as_string(x: tf.Tensor) -> tf.Tensor:
  return x if x.dtype == tf.string else tf.strings.as_string(x)


def _raw_cross_member(x: tf.Tensor) -> tf.Tensor:
  """A raw column as a cross member.

  tf.sparse.cross_hashed hashes an int64 by its value, not by its decimal
  string, so an int column must stay int64 for the pipeline's ids to equal
  a Keras HashedCrossing fed the same raw column.
  """
  if x.dtype.is_integer:
    return tf.cast(x, tf.int64)
  return _as_string(x)


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
  return [value if isinstance(value, tf.SparseTensor)
          else tf.expand_dims(value, axis=1)
          for value in (cross_values[member] for member in feature.features)]


def _dense_as_sparse(x: tf.Tensor) -> tf.SparseTensor:
  """A rank-2 dense tensor as a SparseTensor holding every value.

  tf.sparse.from_dense would drop "zero" values (bucket id 0, "").
  """
  indices = tf.where(tf.ones_like(x, dtype=tf.bool))
  return tf.SparseTensor(indices, tf.gather_nd(x, indices),
                         tf.shape(x, out_type=tf.int64))


def _in_given_order(members):
  """Members that tf.sparse.cross* will cross in the order given.

  Those ops put every sparse input before every dense one, whatever the
  order given, and the order changes the hash. So when any member is sparse
  all are made sparse; with none sparse they stay dense, as Keras
  HashedCrossing passes them.
  """
  members = list(members)
  if any(isinstance(m, tf.SparseTensor) for m in members):
    return [m if isinstance(m, tf.SparseTensor) else _dense_as_sparse(m)
            for m in members]
  return members


def _single_value(values: tf.SparseTensor) -> tf.Tensor:
  """A [batch, 1] SparseTensor with one value per row -> dense [batch].

  A cross of single-valued members has exactly one value in every row, so
  no default is ever filled in.
  """
  return tf.reshape(tf.sparse.to_dense(values), [-1])


def hashed_cross(members, num_buckets: int) -> tf.SparseTensor:
  """The Cartesian product of members, hashed into [0, num_buckets).

  `tf.sparse.cross_hashed` with its default key over the members in the
  order given. For dense members that is exactly what
  `tf.keras.layers.HashedCrossing(num_bins=num_buckets)` computes, so a
  serving-side Keras layer gives the ids the pipeline wrote.

  Args:
    members: rank-2 dense or sparse tensors, int64 or string.
    num_buckets: the table size.

  Returns:
    int64 SparseTensor [batch, product of member counts].
  """
  return tf.sparse.cross_hashed(inputs=_in_given_order(members),
                                num_buckets=num_buckets)


def crossed_strings(members) -> tf.SparseTensor:
  """The Cartesian product of members as strings joined by CROSS_SEPARATOR.

  Args:
    members: rank-2 dense or sparse tensors, int64 or string.

  Returns:
    string SparseTensor [batch, product of member counts], members in the
    order given ("doctor_X_Action").
  """
  return tf.sparse.cross(inputs=_in_given_order(members),
                         separator=CROSS_SEPARATOR)


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
  # What each feature contributes to a cross (see the module docstring).
  cross_values: Dict[str, TensorLike] = {}
  for feature in spec.features:
    kind = feature.kind
    if kind == spec_lib.VOCABULARY:
      value = _as_string(inputs[feature.source])
      outputs[feature.name] = _learned_vocabulary(feature, value)
      cross_values[feature.name] = _raw_cross_member(inputs[feature.source])
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
      cross_values[feature.name] = _raw_cross_member(inputs[feature.source])
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
      # SparseTensor, not RaggedTensor: tf.Transform writes a rank-2 sparse
      # output as a VarLenFeature, the multi-valued form of the contract.
      tokens = _tokens(feature, inputs).to_sparse()
      outputs[feature.name] = _learned_vocabulary(feature, tokens)
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
        crossed = crossed_strings(members)
        ids = _learned_vocabulary(feature, crossed)
      else:
        crossed = ids = hashed_cross(members, feature.hash_bucket_size)
      if multivalent:
        outputs[feature.name] = ids
        cross_values[feature.name] = crossed
      else:
        outputs[feature.name] = _single_value(ids)
        cross_values[feature.name] = _single_value(crossed)
    else:
      raise ValueError(f"feature {feature.name!r}: unknown kind {kind!r}")
  outputs[LABEL_KEY] = tf.cast(inputs[spec.label.column], tf.float32)
  return outputs
