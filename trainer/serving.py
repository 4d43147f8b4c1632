"""SavedModel export with the tf.Transform graph attached.

Signatures of the exported model:
  * `serving_default`: serialized *raw* tf.Examples -> the transform graph
    -> the model -> {"predictions": [batch]}. An Example needs only the raw
    columns the model's features read (`serving_columns`): their source
    columns, a cross's through its members, a tokens feature's flag
    columns, a time feature's timestamp; the label is not needed. An `mf`
    model on user_id and item_id takes Examples holding just those two.
    Other columns may be present and are ignored; a needed column that is
    missing fails the call with TensorFlow's "Feature: <column> ... is
    required but could not be found".
  * `serving_transformed`: serialized *transformed* tf.Examples (the rows
    the preprocessing pipeline writes to train/ and eval/) ->
    {"predictions": [batch]}.
The Keras model itself is saved with them: keras.models.load_model revives
it (the trainer's layer classes are registered, trainer/layers.py). Where
the SavedModel goes in a model directory is core.layout's
ModelLayout.saved_model.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from transforms import spec as spec_lib

SERVING_DEFAULT = "serving_default"
SERVING_TRANSFORMED = "serving_transformed"
PREDICTIONS = "predictions"

_DTYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32}


def raw_feature_spec(spec: spec_lib.FeatureSpec, include_label: bool = False
                    ) -> Dict[str, tf.io.FixedLenFeature]:
  """The parse spec of raw serving tf.Examples.

  Args:
    spec: the feature spec.
    include_label: also parse the label column (required then).

  Returns:
    Column -> FixedLenFeature([], dtype) for every column the features read.
  """
  columns = spec.raw_column_types()
  if not include_label:
    columns = {c: t for c, t in columns.items() if c != spec.label.column}
  return {column: tf.io.FixedLenFeature([], _DTYPES[column_type])
          for column, column_type in columns.items()}


def serving_columns(spec: spec_lib.FeatureSpec,
                    feature_names: Sequence[str]) -> Tuple[str, ...]:
  """The raw columns a model's features read, in spec column order.

  Args:
    spec: the feature spec.
    feature_names: the transformed features the model takes.

  Returns:
    Every source column of those features and, for crosses, of their
    members (recursively); never the label.
  """
  needed = set()
  pending = [name for name in feature_names
             if name in {feature.name for feature in spec.features}]
  while pending:
    feature = spec.feature(pending.pop())
    needed.update(feature.source_columns)
    pending.extend(feature.features)
  return tuple(column for column in spec.raw_column_types()
               if column in needed and column != spec.label.column)


def _placeholder(column_type: str, batch_size: tf.Tensor) -> tf.Tensor:
  """A constant column for raw inputs the model does not read.

  The transform graph wants every raw column; what it computes from these
  goes to features the model drops, so the value does not matter.
  """
  dtype = _DTYPES[column_type]
  value = tf.constant("" if dtype == tf.string else 0, dtype)
  return tf.fill([batch_size], value)


def export_saved_model(model: keras.Model, preprocessed_dir: str,
                       spec: spec_lib.FeatureSpec, export_dir: str) -> str:
  """Saves the model with raw- and transformed-Example serving signatures.

  Args:
    model: a trained model from models.build_model.
    preprocessed_dir: the preprocessing output (its transform_fn is
      attached).
    spec: the feature spec.
    export_dir: the SavedModel directory to write.

  Returns:
    export_dir.
  """
  tft_output = tft.TFTransformOutput(preprocessed_dir)
  input_names = list(model.input_names)
  raw_types = {column: column_type
               for column, column_type in spec.raw_column_types().items()
               if column != spec.label.column}
  used_columns = serving_columns(spec, input_names)
  used_spec = {column: parse for column, parse
               in raw_feature_spec(spec).items() if column in used_columns}
  transformed_spec = tft_output.transformed_feature_spec()
  model_spec = {name: transformed_spec[name] for name in input_names}
  # Attached to the model so the SavedModel tracks the transform's assets
  # (vocabulary files) and resources.
  model.tft_layer = tft_output.transform_features_layer()

  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
  def serve_raw(examples):
    parsed = tf.io.parse_example(examples, used_spec)
    batch_size = tf.shape(examples)[0]
    raw = {column: parsed[column] if column in parsed
           else _placeholder(column_type, batch_size)
           for column, column_type in raw_types.items()}
    transformed = model.tft_layer(raw)
    features = {name: transformed[name] for name in input_names}
    return {PREDICTIONS: model(features, training=False)}

  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
  def serve_transformed(examples):
    features = tf.io.parse_example(examples, model_spec)
    return {PREDICTIONS: model(features, training=False)}

  signatures = {
      SERVING_DEFAULT: serve_raw.get_concrete_function(),
      SERVING_TRANSFORMED: serve_transformed.get_concrete_function(),
  }
  model.save(export_dir, save_format="tf", signatures=signatures,
             include_optimizer=False)
  return export_dir


def _feature(value, column_type: str) -> tf.train.Feature:
  if column_type == "string":
    if isinstance(value, str):
      value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  if column_type == "int":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def raw_examples(spec: spec_lib.FeatureSpec,
                 rows: Sequence[Mapping[str, object]],
                 columns: Optional[Sequence[str]] = None) -> np.ndarray:
  """Serializes raw rows (column -> value) as serving tf.Examples.

  Args:
    spec: the feature spec (column types).
    rows: dicts holding at least every column written.
    columns: the columns to write (default: every raw feature column;
      `serving_columns` gives the ones a model needs).

  Returns:
    A [len(rows)] array of serialized tf.Example bytes.

  Raises:
    KeyError: a row lacks a column to write.
  """
  types = {c: t for c, t in spec.raw_column_types().items()
           if c != spec.label.column and (columns is None or c in columns)}
  serialized = []
  for index, row in enumerate(rows):
    features = {}
    for column, column_type in types.items():
      if column not in row:
        raise KeyError(f"raw row {index} has no column {column!r}")
      features[column] = _feature(row[column], column_type)
    serialized.append(tf.train.Example(
        features=tf.train.Features(feature=features)).SerializeToString())
  return np.array(serialized, dtype=object)

