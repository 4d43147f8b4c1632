"""Keras models built from the feature spec and the transform output.

* `mf`: user . item + user bias + item bias + global mean (biased matrix
  factorisation, the classic Keras recipe), glorot-uniform tables, separate
  L2 strengths for users and items. Optionally side features' embeddings
  are added to the user and item vectors (SVDFeature).
* `dnn`: an embedding per categorical feature (tokens and multi-valued
  crosses averaged), numeric features as they are, concatenated into ReLU
  hidden layers, plus an item bias and the global mean at the output; with
  `hybrid` also the MF dot product and a user bias.

Sizes come from `feature_info.json` (never recomputed), dimensions from
TrainerConfig.table_dims (transforms/dims.py's one rule: feature_info's
dimension, config.embedding_dims and config.mf_dim). Every table is a
`layers.EmbeddingLookup`, so `pretrained` values (warm start, frozen
transfer) plug in by feature name.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import tensorflow as tf
import tf_keras as keras

from trainer import config as config_lib
from trainer import layers
from transforms import feature_info as feature_info_lib
from transforms import spec as spec_lib

PREDICTION = "prediction"

# The compiled metric that equals each task's loss before the L2 penalty:
# Keras's loss is this plus the penalty, so the penalty is their difference
# (trainer/callbacks.py prints the three apart).
DATA_LOSS_METRIC = {"regression": "mse", "binary": "log_loss"}


def model_features(config: config_lib.TrainerConfig,
                   spec: spec_lib.FeatureSpec):
  """The features a model reads, in spec order.

  Args:
    config: the trainer config.
    spec: the feature spec.

  Returns:
    Feature names: for mf the user and item features; for dnn the configured
    features (default all) plus the user/item features of the hybrid term
    and the item bias.
  """
  user, item = config.resolve_user_item(spec)
  if config.model_type == "mf":
    wanted = {user, item}
  else:
    wanted = set(config.features or [f.name for f in spec.features])
    if item is not None:
      wanted.add(item)
    if config.hybrid:
      wanted.add(user)
  if config.has_dot_product:
    wanted |= set(config.user_side_features) | set(config.item_side_features)
  return [f.name for f in spec.features if f.name in wanted]


def embedding_dim(config: config_lib.TrainerConfig,
                  infos: Mapping[str, feature_info_lib.FeatureInfo],
                  feature: str) -> int:
  """A table's dimension in a model built from `config`.

  Args:
    config: the trainer config (overrides, mf_dim, the dot product).
    infos: feature_info of the training data.
    feature: the feature.

  Returns:
    config.table_dims' dimension for the feature's table.
  """
  return config.table_dims(infos, [feature])[feature]


def _table(feature: str, info: feature_info_lib.FeatureInfo, dim: int,
           l2: float, table: Optional[layers.PretrainedTable],
           seed: int) -> layers.EmbeddingLookup:
  if table is not None and table.shape != (info.size, dim):
    raise ValueError(
        f"pretrained table for feature {feature!r} has shape {table.shape}, "
        f"but the model's table is ({info.size}, {dim}) (rows from "
        f"feature_info.json, dimension from the config)")
  return layers.EmbeddingLookup(
      feature=feature, size=info.size, dim=dim, l2=l2,
      initializer=keras.initializers.GlorotUniform(seed=seed),
      initial_value=None if table is None else table.values,
      frozen_rows=None if table is None or not table.trainable
      else table.frozen_rows,
      trainable=True if table is None else table.trainable)


def _bias(infos, feature: str, l2: float) -> layers.EmbeddingLookup:
  return layers.EmbeddingLookup(
      feature=feature, size=infos[feature].size, dim=1, l2=l2,
      initializer="zeros", name=layers.bias_layer_name(feature))


def _sum(vectors, name: str):
  return keras.layers.Add(name=name)(vectors) if len(vectors) > 1 else (
      vectors[0])


def model_inputs(spec: spec_lib.FeatureSpec,
                 infos: Mapping[str, feature_info_lib.FeatureInfo],
                 names) -> Dict[str, keras.Input]:
  """Keras inputs for the named transformed features.

  Args:
    spec: the feature spec.
    infos: feature_info of the transform output.
    names: features to create inputs for.

  Returns:
    Name -> keras.Input (int64 [batch], int64 sparse [batch, None] or
    float32 [batch]).
  """
  inputs = {}
  for name in names:
    info = infos[name]
    if not info.kind.categorical:
      inputs[name] = keras.Input(shape=(), dtype=tf.float32, name=name)
    elif info.multivalent:
      inputs[name] = keras.Input(shape=(None,), dtype=tf.int64, sparse=True,
                                 name=name)
    else:
      inputs[name] = keras.Input(shape=(), dtype=tf.int64, name=name)
  return inputs


def _l2_for(config: config_lib.TrainerConfig, feature: str) -> float:
  if feature == config.user_feature:
    return config.l2_user
  if feature == config.item_feature:
    return config.l2_item
  return config.l2_embedding


def _check_features(names, infos: Mapping[str, feature_info_lib.FeatureInfo],
                    pretrained: Mapping[str, layers.PretrainedTable]) -> None:
  missing = sorted(set(names) - set(infos))
  if missing:
    raise ValueError(f"features {missing} are not in feature_info.json; was "
                     f"the data preprocessed with this spec?")
  unknown = sorted(set(pretrained) - set(names))
  if unknown:
    raise ValueError(f"pretrained tables for {unknown} match no embedded "
                     f"feature of this model ({names})")
  for name in pretrained:
    if not infos[name].kind.categorical:
      raise ValueError(f"pretrained table for numeric feature {name!r}")


def _dot_product(config: config_lib.TrainerConfig, inputs, table):
  """user vector . item vector, each the sum of its tables' rows."""
  user_vec = _sum([table(name)(inputs[name]) for name in
                   (config.user_feature,) + config.user_side_features],
                  "user_vector")
  item_vec = _sum([table(name)(inputs[name]) for name in
                   (config.item_feature,) + config.item_side_features],
                  "item_vector")
  return keras.layers.Dot(axes=1, name="dot")([user_vec, item_vec])


def _tower(config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
           infos, names, inputs, table, seeds):
  """The dnn tower: embeddings and numeric features into hidden layers."""
  tower = config.features or [f.name for f in spec.features]
  parts = []
  for name in names:
    if name not in tower:
      continue
    if infos[name].kind.categorical:
      parts.append(table(name)(inputs[name]))
    else:
      parts.append(keras.layers.Reshape((1,))(inputs[name]))
  x = (keras.layers.Concatenate(name="concat")(parts) if len(parts) > 1
       else parts[0])
  regularizer = (keras.regularizers.L2(config.l2_dense)
                 if config.l2_dense > 0 else None)
  for index, units in enumerate(config.hidden_units):
    x = keras.layers.Dense(
        units, activation="relu", kernel_regularizer=regularizer,
        kernel_initializer=keras.initializers.GlorotUniform(next(seeds)),
        name=f"hidden_{index}")(x)
    if config.dropout > 0:
      x = keras.layers.Dropout(config.dropout, seed=next(seeds))(x)
  return keras.layers.Dense(
      1, kernel_initializer=keras.initializers.GlorotUniform(next(seeds)),
      name="tower_output")(x)


def _prediction(config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
                logits, label_mean: float):
  """The global bias and the task's output on the summed terms [batch]."""
  if config.resolve_task(spec) == "binary":
    mean = min(max(label_mean, 1e-6), 1 - 1e-6)
    initial = math.log(mean / (1 - mean))
    logits = layers.GlobalBias(initial, name="global_bias")(logits)
    return keras.layers.Activation("sigmoid", name=PREDICTION)(logits)
  output = layers.GlobalBias(label_mean, name="global_bias")(logits)
  if config.clip_predictions and (spec.label.min is not None
                                  or spec.label.max is not None):
    return layers.ClipAtInference(spec.label.min, spec.label.max,
                                  name=PREDICTION)(output)
  return keras.layers.Activation("linear", name=PREDICTION)(output)


def build_model(config: config_lib.TrainerConfig,
                spec: spec_lib.FeatureSpec,
                infos: Mapping[str, feature_info_lib.FeatureInfo],
                label_mean: float = 0.0,
                pretrained: Optional[
                    Mapping[str, layers.PretrainedTable]] = None
               ) -> keras.Model:
  """Builds the (uncompiled) model; call inside strategy.scope().

  Args:
    config: the trainer config (model_type, dims, L2, hidden units...).
    spec: the feature spec the data was preprocessed with.
    infos: `read_feature_info(preprocessed_dir)`.
    label_mean: initial global mean (the train label mean); for binary it is
      converted to the matching logit.
    pretrained: feature -> initial table (values, trainable, frozen rows).

  Returns:
    A keras.Model from a dict of transformed features to predictions
    [batch] (ratings for regression, probabilities for binary).

  Raises:
    ValueError / config.ConfigError: unknown features, features missing
      from feature_info, or pretrained tables of the wrong shape.
  """
  pretrained = dict(pretrained or {})
  names = model_features(config, spec)
  _check_features(names, infos, pretrained)
  inputs = model_inputs(spec, infos, names)
  dims = config.table_dims(
      infos, [name for name in names if infos[name].kind.categorical])
  # Seeds are drawn in the order layers are built: a table on first use.
  seeds = iter(range(config.seed, config.seed + 10 * len(names) + 10))
  tables: Dict[str, layers.EmbeddingLookup] = {}

  def table(name: str) -> layers.EmbeddingLookup:
    if name not in tables:
      tables[name] = _table(name, infos[name], dims[name],
                            _l2_for(config, name), pretrained.get(name),
                            next(seeds))
    return tables[name]

  terms = []
  if config.has_dot_product:
    terms.append(_dot_product(config, inputs, table))
    terms.append(_bias(infos, config.user_feature,
                       config.l2_bias)(inputs[config.user_feature]))
  if config.model_type == "dnn":
    terms.append(_tower(config, spec, infos, names, inputs, table, seeds))
  if config.item_feature is not None:
    terms.append(_bias(infos, config.item_feature,
                       config.l2_bias)(inputs[config.item_feature]))
  logits = keras.layers.Reshape(())(
      keras.layers.Add(name="sum")(terms) if len(terms) > 1 else terms[0])
  return keras.Model(inputs=inputs,
                     outputs=_prediction(config, spec, logits, label_mean),
                     name=f"{config.model_type}_{config.resolve_task(spec)}")


def compile_model(model: keras.Model, config: config_lib.TrainerConfig,
                  spec: spec_lib.FeatureSpec,
                  optimizer: keras.optimizers.Optimizer,
                  steps_per_execution: int = 1) -> keras.Model:
  """Compiles with the task's loss and metrics; call inside the scope.

  Args:
    model: from build_model.
    config: the trainer config.
    spec: the feature spec (label task).
    optimizer: from optimizers.make_optimizer.
    steps_per_execution: batches per tf.function call.

  Returns:
    The model, compiled.
  """
  if config.resolve_task(spec) == "binary":
    loss = keras.losses.BinaryCrossentropy()
    metrics = [keras.metrics.AUC(name="auc"),
               keras.metrics.BinaryCrossentropy(name="log_loss")]
  else:
    loss = keras.losses.MeanSquaredError()
    metrics = [keras.metrics.RootMeanSquaredError(name="rmse"),
               keras.metrics.MeanAbsoluteError(name="mae"),
               keras.metrics.MeanSquaredError(
                   name=DATA_LOSS_METRIC["regression"])]
  model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                steps_per_execution=steps_per_execution)
  return model


def embedding_table(model: keras.Model, feature: str
                   ) -> layers.EmbeddingLookup:
  """The model's embedding layer for `feature`.

  Args:
    model: a model from build_model.
    feature: the feature name.

  Returns:
    The EmbeddingLookup layer (its `.embeddings` is the table variable).

  Raises:
    KeyError: the model has no table for the feature.
  """
  name = layers.embedding_layer_name(feature)
  for layer in model.layers:
    if layer.name == name:
      return layer
  raise KeyError(f"model {model.name!r} has no embedding table for feature "
                 f"{feature!r} (no layer named {name!r})")
