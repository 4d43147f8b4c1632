"""`embeddings export`: a trained model's tables as embedding artifacts.

    embeddings export --model_dir M --output O [--preprocessed P] [--spec S]

writes every embedding (and per-row bias) table of the model in M as a
table directory under O (the format: core/artifacts.py), committed with
_SUCCESS last (core/outputs.py). The rows are named by the data the model
trained on (its feature_info.json and vocabularies) and described by the
spec's feature kinds: what row i means, the hash parameters, readable row
labels.

Besides the vectors and row names, each table records how many
training-split rows used each of its rows (a multi-valued feature counts
every token), and, where preprocessing wrote names for the feature
(core.layout's PreprocessedLayout.names: the side table's display column),
a display name and a group per row. metadata.json says which model made it:
"model_type" and "score" ("dot" for mf, whose prediction is user . item plus
biases; "model" for every dnn).

The model's SavedModel is read as plain TensorFlow (no Keras revival), its
tables found by variable name: `embedding_<feature>/embeddings` and
`bias_<feature>/embeddings`, or their `part_<k>` shards when a table was
partitioned across parameter servers.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import logging
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import artifacts
from core import files
from core import layout
from core import outputs
from trainer import data as data_lib
from trainer import export_options
from trainer import layers
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib

# `embedding_<feature>/embeddings:0`, or one shard of a table partitioned
# across parameter servers: `embedding_<feature>/embeddings/part_<k>:0`.
_TABLE_VARIABLE = re.compile(
    r"^(?P<layer>(?:" + re.escape(layers.EMBEDDING_LAYER_PREFIX) + "|" +
    re.escape(layers.BIAS_LAYER_PREFIX) + r")(?P<feature>.+))/" +
    re.escape(layers.EMBEDDING_WEIGHT) + r"(?:/part_(?P<part>\d+))?:0$")


def saved_model_tables(saved_model_dir: str
                      ) -> Dict[Tuple[str, str], np.ndarray]:
  """Every embedding and bias table of a trainer SavedModel.

  Args:
    saved_model_dir: `<model_dir>/export` of `embeddings train`.

  Returns:
    (table name, feature) -> float32 [size, dim]: the table name is the
    feature for its embedding and `bias_<feature>` for its bias ([size,
    1]). Partitioned tables are concatenated in shard order.
  """
  loaded = tf.saved_model.load(saved_model_dir)
  parts: Dict[Tuple[str, str], Dict[int, np.ndarray]] = {}
  for variable in loaded.variables:
    match = _TABLE_VARIABLE.match(variable.name)
    if match:
      feature = match.group("feature")
      name = (feature
              if match.group("layer") == layers.embedding_layer_name(feature)
              else layout.bias_table_name(feature))
      part = int(match.group("part") or 0)
      parts.setdefault((name, feature), {})[part] = variable.numpy()
  return {key: np.concatenate([shards[k] for k in sorted(shards)])
          .astype(np.float32) for key, shards in sorted(parts.items())}


def model_table(model, feature: str) -> np.ndarray:
  """A feature's table from a trained Keras model, as float32 [size, dim].

  Args:
    model: a tf_keras model with a layer named `embedding_<feature>`.
    feature: the feature name.

  Returns:
    The table's current values (a partitioned table is concatenated).

  Raises:
    KeyError: the model has no such layer.
  """
  name = layers.embedding_layer_name(feature)
  try:
    layer = model.get_layer(name)
  except ValueError:
    raise KeyError(f"the model has no layer {name!r} (feature "
                   f"{feature!r})") from None
  variable = getattr(layer, "embeddings", None)
  if variable is None:
    variable = layer.weights[0]
  return np.asarray(tf.convert_to_tensor(variable).numpy(), dtype=np.float32)


def model_feature_tables(
    model, infos: Mapping[str, feature_info_lib.FeatureInfo]
) -> Dict[str, np.ndarray]:
  """Every embedding table of a Keras model, by feature.

  Args:
    model: a tf_keras model with layers named `embedding_<feature>`.
    infos: the FeatureInfo of the data it trained on.

  Returns:
    Feature -> float32 [size, dim], in feature_info order, for every
    embedded feature the model has a table for.
  """
  names = {layer.name for layer in model.layers}
  return {name: model_table(model, name) for name, info in infos.items()
          if info.size and layers.embedding_layer_name(name) in names}


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """What `embeddings train` left in a model directory.

  Attributes:
    model_dir: the directory.
    saved_model_dir: its SavedModel.
    report: report.json's content.
    spec_path, spec_env, preprocessed_dir: how it was trained (from the
      report's config).
  """
  model_dir: str
  saved_model_dir: str
  report: Mapping[str, Any]
  spec_path: Optional[str]
  spec_env: Tuple[Tuple[str, str], ...]
  preprocessed_dir: Optional[str]

  def versions(self, preprocessed_dir: str) -> Dict[str, Any]:
    """model_version, data_version, trained_at and the run's facts.

    model_version hashes the SavedModel's variable index (which holds a
    checksum of every tensor), so it changes exactly when weights change.
    """
    index = layout.join(self.saved_model_dir, "variables", "variables.index")
    with tf.io.gfile.GFile(index, "rb") as handle:
      model_hash = hashlib.sha256(handle.read()).hexdigest()[:16]
    report_path = layout.ModelLayout(self.model_dir).report
    trained = datetime.datetime.fromtimestamp(
        tf.io.gfile.stat(report_path).mtime_nsec / 1e9, datetime.timezone.utc)
    model_type = self.report.get("model_type")
    return {
        "model_version": f"sha256:{model_hash}",
        "data_version": feature_info_lib.data_version(preprocessed_dir),
        "trained_at": trained.isoformat(timespec="seconds"),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "model_dir": self.model_dir,
        "preprocessed_dir": preprocessed_dir,
        "model_type": model_type,
        # Only an mf model predicts user . item + biases + global mean; a
        # dnn (hybrid or not) scores pairs through its network.
        "score": (artifacts.DOT_SCORE if model_type == "mf"
                  else artifacts.MODEL_SCORE),
        "eval_metrics": self.report.get("metrics"),
    }


def read_trained_model(model_dir: str) -> TrainedModel:
  """Reads a model directory written by `embeddings train`.

  Args:
    model_dir: the trainer's --model_dir.

  Returns:
    The TrainedModel.

  Raises:
    FileNotFoundError: no finished training run is there (no report.json or
      no SavedModel).
  """
  paths = layout.ModelLayout(model_dir)
  report = files.read_json(paths.report)
  if report is None:
    raise FileNotFoundError(f"{model_dir!r} has no report.json: it is not "
                            f"the model_dir of a finished `embeddings train`")
  saved_model_dir = report.get("export_dir") or paths.saved_model
  if not tf.io.gfile.exists(layout.join(saved_model_dir, "saved_model.pb")):
    raise FileNotFoundError(f"{model_dir!r}: no SavedModel at "
                            f"{saved_model_dir!r} (trained with --no-export?)")
  config = report.get("config") or {}
  return TrainedModel(
      model_dir=model_dir, saved_model_dir=saved_model_dir, report=report,
      spec_path=config.get("spec_path"),
      spec_env=tuple(tuple(pair) for pair in config.get("spec_env") or ()),
      preprocessed_dir=config.get("preprocessed_dir"))


def describe_table(spec: spec_lib.FeatureSpec,
                   info: feature_info_lib.FeatureInfo,
                   versions: Optional[Mapping[str, Any]] = None
                  ) -> Dict[str, Any]:
  """The metadata.json content for one feature's table.

  Args:
    spec: the feature spec the model was trained with.
    info: the feature's FeatureInfo.
    versions: model_version, data_version, trained_at (and anything else to
      record).

  Returns:
    JSON-serializable metadata.
  """
  feature = spec.feature(info.name)
  metadata: Dict[str, Any] = {
      "name": info.name,
      "kind": str(info.kind),
      "dimension": info.embedding_dim,
      "size": info.size,
      "vocabulary_size": info.vocabulary_size,
      "num_oov_buckets": info.num_oov_buckets,
      "multivalent": info.multivalent,
      "tensor_name": artifacts.tensor_name(info.name),
      "table": "embedding",
      "feature": info.name,
      "hash": feature.kind.hash_parameters(feature, spec),
      "feature_spec": feature.as_dict(),
      "spec_name": spec.name,
  }
  metadata.update(dict(versions or {}))
  return metadata


def training_counts(preprocessed_dir: str,
                    infos: Mapping[str, feature_info_lib.FeatureInfo],
                    features: Sequence[str]) -> Dict[str, np.ndarray]:
  """How many training-split rows use each table row.

  Args:
    preprocessed_dir: the preprocessing output a model trained on.
    infos: its FeatureInfo.
    features: the embedded features to count.

  Returns:
    Feature -> int64 [size]; every token of a multi-valued row counts.
  """
  arrays = data_lib.load_arrays(preprocessed_dir, layout.TRAIN,
                                list(features))
  counts = {}
  for name in features:
    ids = (arrays.sparse[name][0] if name in arrays.sparse
           else arrays.dense[name])
    counts[name] = np.bincount(np.asarray(ids, np.int64),
                               minlength=infos[name].size).astype(np.int64)
  return counts


def row_names(preprocessed_dir: str, feature: str, tokens: Sequence[str]
             ) -> Tuple[Optional[List[str]], Optional[List[str]]]:
  """Display names and groups of a feature's rows, aligned to its tokens.

  Args:
    preprocessed_dir: the preprocessing output.
    feature: the feature.
    tokens: the table's row tokens.

  Returns:
    (names, groups), or (None, None) when preprocessing wrote no names for
    the feature. A row without a side-table row is named by its token and
    has an empty group.
  """
  path = layout.PreprocessedLayout(preprocessed_dir).names(feature)
  if not tf.io.gfile.exists(path):
    return None, None
  with tf.io.gfile.GFile(path, "r") as handle:
    rows = {row["token"]: row
            for row in csv.DictReader(handle, delimiter="\t",
                                      quoting=csv.QUOTE_NONE)}
  names = [rows[token]["name"] if token in rows else token
           for token in tokens]
  groups = [rows[token]["group"] if token in rows else ""
            for token in tokens]
  return names, groups


def model_dir_tables(model_dir: str, preprocessed_dir: Optional[str] = None,
                     spec: Optional[spec_lib.FeatureSpec] = None,
                     with_labels: bool = True
                    ) -> Dict[str, artifacts.EmbeddingTable]:
  """Every embedding (and bias) table of a trained model directory.

  Args:
    model_dir: the trainer's --model_dir.
    preprocessed_dir: the data it trained on (default: from its report).
    spec: its feature spec (default: loaded from the report's spec path).
    with_labels: compute readable row labels (the kinds' row_labels).

  Returns:
    Table name -> artifacts.EmbeddingTable with full metadata, rows
    named, not yet saved: each embedded feature under its name, each
    per-row bias under `bias_<feature>` (metadata "table": "bias").

  Raises:
    FileNotFoundError: not a finished model directory, or no data dir known.
    ValueError: a table's rows disagree with the data's feature_info.
  """
  trained = read_trained_model(model_dir)
  preprocessed_dir = preprocessed_dir or trained.preprocessed_dir
  if not preprocessed_dir:
    raise FileNotFoundError(f"{model_dir!r}: pass the preprocessing output it "
                            f"trained on")
  if spec is None:
    if not trained.spec_path:
      raise FileNotFoundError(f"{model_dir!r}: its report names no spec; pass "
                              f"the spec")
    spec = loader.load_spec(trained.spec_path, dict(trained.spec_env))
  infos = feature_info_lib.read_feature_info(preprocessed_dir)
  versions = trained.versions(preprocessed_dir)
  found = saved_model_tables(trained.saved_model_dir)
  unknown = sorted({feature for _, feature in found} - set(infos))
  if unknown:
    raise ValueError(f"{model_dir!r} has tables for {unknown}, which "
                     f"{preprocessed_dir!r} does not describe")
  counts = training_counts(preprocessed_dir, infos,
                           sorted({feature for _, feature in found}))
  tables = {}
  for (name, feature), values in found.items():
    info = infos[feature]
    if values.shape[0] != info.size:
      raise ValueError(f"feature {feature!r}: the model's table has "
                       f"{values.shape[0]} rows, {preprocessed_dir!r} says "
                       f"{info.size}; was it trained on this data?")
    tokens = feature_info_lib.table_tokens(preprocessed_dir, info)
    metadata = describe_table(spec, info, versions)
    metadata["dimension"] = int(values.shape[1])
    if name != feature:
      # A per-row bias: same rows as the feature's table, one column.
      metadata.update({"name": name, "table": "bias", "feature": feature,
                       "tensor_name": artifacts.tensor_name(name)})
    labels = None
    if with_labels:
      spec_feature = spec.feature(feature)
      labels = spec_feature.kind.row_labels(spec_feature, spec, tokens)
    names, groups = row_names(preprocessed_dir, feature, tokens)
    named_by = spec.named_tables().get(feature)
    if groups is not None and named_by is not None:
      # What the groups are, for the legend of plots coloured by them.
      metadata["group_feature"] = spec.inputs[named_by].group_feature
    tables[name] = artifacts.EmbeddingTable(
        name=name, vectors=values, tokens=tokens, metadata=metadata,
        labels=labels, names=names, counts=counts[feature], groups=groups)
  return tables


def export_tables(model_dir: str, output: str,
                  preprocessed_dir: Optional[str] = None,
                  spec: Optional[spec_lib.FeatureSpec] = None,
                  tables: Sequence[str] = ()
                 ) -> Dict[str, artifacts.EmbeddingTable]:
  """Exports a trained model's tables as artifact directories under `output`.

  Writes into a staging directory beside `output` and moves it into place
  with _SUCCESS last, so a reader never sees a partial export.

  Args:
    model_dir: the trainer's --model_dir.
    output: the export directory; one subdirectory per table.
    preprocessed_dir: the data it trained on (default: from its report).
    spec: its feature spec (default: the one its report names).
    tables: the tables to export (default: all).

  Returns:
    Table name -> the artifacts.EmbeddingTable written.

  Raises:
    FileNotFoundError, ValueError: see model_dir_tables; ValueError also
      for a requested table the model does not have.
  """
  found = model_dir_tables(model_dir, preprocessed_dir, spec)
  missing = sorted(set(tables) - set(found))
  if missing:
    raise ValueError(f"no table for {missing}; the model has {sorted(found)}")
  chosen = {name: table for name, table in found.items()
            if not tables or name in tables}
  exported = layout.ExportLayout(output)
  staging = outputs.new_staging_dir(output)
  try:
    staged = layout.ExportLayout(staging)
    for name, table in chosen.items():
      table.save(staged.table(name).root)
    outputs.commit(staging, output, {"tables": sorted(chosen)})
  except BaseException:
    outputs.discard(staging)
    raise
  for name in sorted(chosen):
    table = chosen[name]
    logging.info("%s: %d x %d -> %s", name, table.size, table.dimension,
                 exported.table(name).root)
  return chosen


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `embeddings export`.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    0 on success, 2 on a bad model directory or flags.
  """
  args, unknown = export_options.flag_parser().parse_known_args(argv)
  if unknown:
    print(f"embeddings export: unknown flags {unknown}", file=sys.stderr)
    return 2
  try:
    spec = None
    if args.spec:
      spec = loader.load_spec(args.spec,
                              dict(spec_lib.parse_env_flags(args.env)))
    tables = export_tables(args.model_dir, args.output, args.preprocessed,
                           spec,
                           [t for t in (args.tables or "").split(",") if t])
  except (FileNotFoundError, ValueError) as error:
    print(f"embeddings export: {error}", file=sys.stderr)
    return 2
  rows = sum(table.size for table in tables.values())
  print(f"embeddings export: {len(tables)} tables, {rows} rows -> "
        f"{args.output}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(run())
