"""Embedding layers whose gradients stay sparse.

`EmbeddingLookup` is one table per feature (layer `embedding_<feature>`,
weight `embedding_<feature>/embeddings`). Three choices keep a step's cost
proportional to the batch, not to the table:

* lookups are gathers, so the table's gradient is a tf.IndexedSlices over
  the rows in the batch;
* L2 is applied to the looked-up rows, per example, as Surprise's SVD does
  per rating, instead of a table regularizer (whose gradient touches every
  row and makes the update dense);
* row freezing masks the gradient of the frozen rows inside the lookup, so
  no dense mask is ever applied to the table.

A table may start from given values (`PretrainedTable`, the hook the warm
start and frozen transfer code uses), be frozen whole (`trainable=False`,
not a trainable variable at all), or freeze only some rows.

The layer classes are registered with Keras (package `embeddings`), so
keras.models.load_model revives a saved model without custom_objects.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

EMBEDDING_LAYER_PREFIX = "embedding_"
BIAS_LAYER_PREFIX = "bias_"
EMBEDDING_WEIGHT = "embeddings"
# The Keras registration package: classes are saved as `embeddings>Name`.
SERIALIZATION_PACKAGE = "embeddings"


def embedding_layer_name(feature: str) -> str:
  """The name of the layer holding `feature`'s embedding table."""
  return f"{EMBEDDING_LAYER_PREFIX}{feature}"


def bias_layer_name(feature: str) -> str:
  """The name of the layer holding `feature`'s per-row bias."""
  return f"{BIAS_LAYER_PREFIX}{feature}"


@dataclasses.dataclass(frozen=True)
class PretrainedTable:
  """Initial values for one embedding table.

  Attributes:
    values: [size, dim] float32, row i for id i.
    trainable: False freezes the whole table (bit-identical after training).
    frozen_rows: optional [size] bool; True rows keep their values while the
      other rows train (warm start: carried-over rows frozen, new rows
      learned). Ignored when trainable is False.
  """
  values: np.ndarray
  trainable: bool = False
  frozen_rows: Optional[np.ndarray] = None

  def __post_init__(self):
    values = np.asarray(self.values)
    if values.ndim != 2:
      raise ValueError(f"PretrainedTable.values must be [size, dim], got "
                       f"shape {values.shape}")
    object.__setattr__(self, "values", values.astype(np.float32, copy=False))
    if self.frozen_rows is not None:
      mask = np.asarray(self.frozen_rows)
      if mask.shape != (values.shape[0],):
        raise ValueError(f"PretrainedTable.frozen_rows must be [size] = "
                         f"[{values.shape[0]}], got shape {mask.shape}")
      object.__setattr__(self, "frozen_rows", mask.astype(bool))

  @property
  def shape(self):
    return tuple(self.values.shape)


@keras.utils.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class EmbeddingLookup(keras.layers.Layer):
  """One feature's embedding table with sparse gradients, as a Keras layer.

  (Its trained values, written as an artifact, are a
  core.artifacts.EmbeddingTable.)

  Called on int64 ids [batch] (one row each) or an int64 SparseTensor
  [batch, None] (rows averaged: the mean combiner; an empty row gives
  zeros). Returns float32 [batch, dim].
  """

  def __init__(self, feature: str, size: int, dim: int, l2: float = 0.0,
               initializer="glorot_uniform",
               initial_value: Optional[np.ndarray] = None,
               frozen_rows: Optional[np.ndarray] = None,
               trainable: bool = True, name: Optional[str] = None,
               **kwargs):
    """Creates the layer.

    Args:
      feature: the feature name (names the layer and the weight).
      size: table rows.
      dim: embedding dimension.
      l2: L2 strength on looked-up rows (added per example, batch-averaged).
      initializer: Keras initializer for rows without an initial value.
      initial_value: optional [size, dim] starting values.
      frozen_rows: optional [size] bool mask of rows that never change.
      trainable: False makes the table a non-trainable weight.
      name: layer name (default embedding_<feature>).
      **kwargs: passed to keras.layers.Layer.
    """
    super().__init__(name=name or embedding_layer_name(feature),
                     trainable=trainable, **kwargs)
    if initial_value is not None:
      initial_value = np.asarray(initial_value, np.float32)
      if initial_value.shape != (size, dim):
        raise ValueError(
            f"feature {feature!r}: initial value has shape "
            f"{initial_value.shape}, the table needs ({size}, {dim})")
    if frozen_rows is not None:
      frozen_rows = np.asarray(frozen_rows, bool)
      if frozen_rows.shape != (size,):
        raise ValueError(f"feature {feature!r}: frozen_rows has shape "
                         f"{frozen_rows.shape}, the table has {size} rows")
    self.feature = feature
    self.size = int(size)
    self.dim = int(dim)
    self.l2 = float(l2)
    self.initializer = keras.initializers.get(initializer)
    self._initial_value = initial_value
    self._frozen_rows = frozen_rows
    self.embeddings = None
    self.trainable_rows = None

  def build(self, input_shape):
    self.embeddings = self.add_weight(
        name=EMBEDDING_WEIGHT, shape=(self.size, self.dim),
        initializer=self.initializer, dtype=tf.float32,
        trainable=self.trainable)
    if self._initial_value is not None:
      # Assigned after creation (not a Constant initializer) so it also works
      # for a table partitioned across parameter servers.
      self.embeddings.assign(self._initial_value)
    if self._frozen_rows is not None:
      self.trainable_rows = self.add_weight(
          name="trainable_rows", shape=(self.size,), dtype=tf.float32,
          initializer="ones", trainable=False)
      self.trainable_rows.assign((~self._frozen_rows).astype(np.float32))
    super().build(input_shape)

  def _rows(self, ids: tf.Tensor) -> tf.Tensor:
    rows = tf.nn.embedding_lookup(self.embeddings, ids)
    if self.trainable_rows is not None:
      # The frozen rows' gradient is zero from the first step, so their
      # optimizer moments stay zero and the update for them is exactly 0.
      keep = tf.nn.embedding_lookup(self.trainable_rows, ids) > 0.5
      rows = tf.where(keep[:, tf.newaxis], rows, tf.stop_gradient(rows))
    return rows

  def _add_l2(self, rows: tf.Tensor, batch: tf.Tensor) -> None:
    if self.l2 > 0 and self.trainable:
      batch = tf.maximum(tf.cast(batch, tf.float32), 1.0)
      self.add_loss(self.l2 * tf.reduce_sum(tf.square(rows)) / batch)

  def call(self, ids):
    if isinstance(ids, tf.SparseTensor):
      batch = ids.dense_shape[0]
      rows = self._rows(ids.values)
      segments = ids.indices[:, 0]
      summed = tf.math.unsorted_segment_sum(rows, segments, batch)
      counts = tf.math.unsorted_segment_sum(
          tf.ones_like(segments, tf.float32), segments, batch)
      self._add_l2(rows, batch)
      return summed / tf.maximum(counts, 1.0)[:, tf.newaxis]
    ids = tf.reshape(ids, [-1])
    rows = self._rows(ids)
    self._add_l2(rows, tf.size(ids))
    return rows

  def get_config(self):
    # The values themselves live in the checkpoint, not in the config.
    config = super().get_config()
    config.update({"feature": self.feature, "size": self.size,
                   "dim": self.dim, "l2": self.l2,
                   "initializer": keras.initializers.serialize(
                       self.initializer)})
    return config


@keras.utils.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class GlobalBias(keras.layers.Layer):
  """Adds one learned scalar (the global mean) to its input."""

  def __init__(self, initial_value: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.initial_value = float(initial_value)
    self.bias = None

  def build(self, input_shape):
    self.bias = self.add_weight(
        name="bias", shape=(), dtype=tf.float32,
        initializer=keras.initializers.Constant(self.initial_value))
    super().build(input_shape)

  def call(self, inputs):
    return inputs + self.bias

  def get_config(self):
    config = super().get_config()
    config["initial_value"] = self.initial_value
    return config


@keras.utils.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ClipAtInference(keras.layers.Layer):
  """Clips predictions to [low, high] at inference; identity in training.

  Clipping during training would zero the gradient of every prediction
  outside the range, so the model learns unclipped and serves clipped (as
  Surprise does for ratings).
  """

  def __init__(self, low: Optional[float], high: Optional[float], **kwargs):
    super().__init__(**kwargs)
    self.low = None if low is None else float(low)
    self.high = None if high is None else float(high)

  def call(self, inputs, training=None):
    if training:
      return inputs
    low = -np.inf if self.low is None else self.low
    high = np.inf if self.high is None else self.high
    return tf.clip_by_value(inputs, low, high)

  def get_config(self):
    config = super().get_config()
    config.update({"low": self.low, "high": self.high})
    return config

