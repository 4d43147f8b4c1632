"""Frozen transfer learning: spec features initialized from a checkpoint.

A feature in the spec may say

    from_checkpoint: {path: ..., tensor: ..., trainable: false}

`path` is an embedding artifact directory (`embeddings export` output for
one feature), any directory with a TF `checkpoint` state file, or a
checkpoint prefix; `tensor` is the tensor's name in it (an artifact's is
`<feature>/embeddings`). `trainable: false` keeps the table bit-identical
through training (rows new to the vocabulary too: a warning says how
many); `true` fine-tunes it; `new_rows` keeps the carried rows
bit-identical and trains the rows new to the vocabulary.

Rows are mapped by token, not by row number: the source's tokens come from
the vocab.txt next to the checkpoint, the new model's from the tf.Transform
vocabulary of the data it trains on. Tokens new to the model are initialized
with the mean of the checkpoint's rows or with an initializer. Tables
without a vocabulary (hashed, crossed, bucketized) are reused row for row,
only when the artifact's hash parameters equal the new feature's.

`pretrained_tables(spec, preprocessed_dir)` returns what the model builder
takes as `pretrained=`; `pretrained_for_training`, which trainer/task.py
calls for every training run, sizes them as the model's tables, and
`table_reports` is what report.json records of them: per table the kept,
new and dropped rows and the trainable mode.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from core import artifacts
from core import files
from core import layout
from trainer import config as config_lib
from trainer import models
from trainer import warmstart
from trainer.layers import PretrainedTable
from transforms import feature_info as feature_info_lib
from transforms import spec as spec_lib

# How many tensor names an error lists before summarizing.
_LISTED_TENSORS = 40


class TransferError(warmstart.RemapError):
  """A `from_checkpoint` that cannot be loaded; the message names both sides."""


def checkpoint_prefix(path: str) -> str:
  """Resolves `from_checkpoint.path` to a checkpoint prefix.

  Args:
    path: a checkpoint prefix, or a directory holding a `checkpoint` state
      file or exactly one `*.index` file.

  Returns:
    The prefix tf.train.load_variable reads.

  Raises:
    TransferError: nothing readable is there.
  """
  if tf.io.gfile.exists(path + ".index"):
    return path
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest:
      return latest
    indexes = tf.io.gfile.glob(layout.join(path, "*.index"))
    if len(indexes) == 1:
      return indexes[0][:-len(".index")]
  raise TransferError(f"from_checkpoint path {path!r} holds no TF checkpoint "
                      f"(expected a checkpoint prefix, or a directory with a "
                      f"`checkpoint` file or one *.index file)")


def load_checkpoint_table(feature: str, source: spec_lib.CheckpointSource
                         ) -> Tuple[artifacts.EmbeddingTable, str, bool]:
  """Reads the table a `from_checkpoint` names, with its row tokens.

  Args:
    feature: the spec feature, for messages.
    source: the spec's CheckpointSource.

  Returns:
    (table, origin — a description for messages, named — whether a
    vocab.txt named the rows; otherwise tokens are row numbers).

  Raises:
    TransferError: missing tensor (the message lists the names present), a
      tensor that is not a 2-D table, or a vocab.txt of the wrong length.
  """
  prefix = checkpoint_prefix(source.path)
  origin = f"checkpoint {prefix!r} tensor {source.tensor!r}"
  present = [name for name, _ in tf.train.list_variables(prefix)]
  if source.tensor not in present:
    listed = ", ".join(repr(n) for n in sorted(present)[:_LISTED_TENSORS])
    more = (f", ... ({len(present)} in all)"
            if len(present) > _LISTED_TENSORS else "")
    raise TransferError(
        f"feature {feature!r}: from_checkpoint tensor {source.tensor!r} is not "
        f"in checkpoint {prefix!r}; it holds: {listed}{more}")
  values = np.asarray(tf.train.load_variable(prefix, source.tensor),
                      dtype=np.float32)
  if values.ndim != 2:
    raise TransferError(f"feature {feature!r}: {origin} has shape "
                        f"{values.shape}, not a [rows, dimension] table")
  directory = layout.split(prefix)[0]
  metadata: Dict[str, Any] = files.read_json(
      layout.TableLayout(directory).metadata) or {}
  if metadata.get("tensor_name") != source.tensor:
    # The metadata beside it describes another tensor of the checkpoint.
    metadata = {}
  vocab_path = layout.TableLayout(directory).vocab
  named = tf.io.gfile.exists(vocab_path)
  if named:
    tokens = artifacts.read_vocab_file(vocab_path)
    if len(tokens) != values.shape[0]:
      raise TransferError(f"feature {feature!r}: {vocab_path} has "
                          f"{len(tokens)} lines but {origin} has "
                          f"{values.shape[0]} rows")
  else:
    tokens = [str(i) for i in range(values.shape[0])]
  table = artifacts.EmbeddingTable(name=feature, vectors=values, tokens=tokens,
                                   metadata=metadata)
  return table, origin, named


def _unnamed_target(info: feature_info_lib.FeatureInfo,
                    target: warmstart.TargetTable,
                    origin: str) -> warmstart.TargetTable:
  """A target whose rows are numbers, for a checkpoint without vocab.txt."""
  if info.vocabulary_file is not None:
    raise TransferError(
        f"feature {info.name!r}: vocabulary mismatch: {target.origin} has a "
        f"learned vocabulary of {target.size} rows but {origin} has no "
        f"{layout.VOCAB_FILE} beside it, so its rows cannot be matched by "
        f"token; export it with `embeddings export`")
  return warmstart.TargetTable(
      name=target.name, tokens=tuple(str(i) for i in range(target.size)),
      dimension=target.dimension, kind=target.kind, hash=target.hash,
      origin=target.origin)


def _pretrained(feature: str, trainable, values: np.ndarray,
                carried: np.ndarray, report: warmstart.RemapReport
               ) -> PretrainedTable:
  """The PretrainedTable of one `from_checkpoint` trainable mode."""
  if trainable == spec_lib.NEW_ROWS:
    return PretrainedTable(values=values, trainable=True,
                           frozen_rows=carried.copy())
  if not trainable and report.new:
    start = ("stay at the mean vector" if report.new_rows == warmstart.MEAN
             else "stay at their initial values")
    logging.warning("feature %s: %d rows new to the vocabulary %s "
                    "(trainable: false); use trainable: %s to train them",
                    feature, report.new, start, spec_lib.NEW_ROWS)
  return PretrainedTable(values=values, trainable=bool(trainable))


def trainable_mode(table: PretrainedTable):
  """How a table trains: False, True or spec.NEW_ROWS (carried rows frozen).

  Args:
    table: a PretrainedTable.

  Returns:
    The `from_checkpoint: trainable` value that gives this table.
  """
  if not table.trainable:
    return False
  return spec_lib.NEW_ROWS if table.frozen_rows is not None else True


def table_reports(tables: Mapping[str, PretrainedTable]
                 ) -> Dict[str, Dict[str, Any]]:
  """What report.json records of the tables a model started from.

  Args:
    tables: feature -> PretrainedTable; a WarmStartTables adds its reports.

  Returns:
    Feature -> {"trainable": False | True | "new_rows", and kept, new,
    dropped, old_size, new_size, new_rows, by where a remap report is
    known}.
  """
  reports = getattr(tables, "reports", {})
  return {name: {**(reports[name].as_dict() if name in reports else {}),
                 "trainable": trainable_mode(table)}
          for name, table in tables.items()}


def pretrained_tables(spec: spec_lib.FeatureSpec, preprocessed_dir: str,
                      new_rows: str = warmstart.MEAN, initializer: Any = None,
                      seed: int = 0,
                      feature_info: Optional[Mapping[
                          str, feature_info_lib.FeatureInfo]] = None,
                      dimensions: Optional[Mapping[str, int]] = None,
                      features: Optional[Sequence[str]] = None
                     ) -> warmstart.WarmStartTables:
  """Loads every `from_checkpoint` table of a spec for a new model.

  Args:
    spec: the feature spec of the model being trained.
    preprocessed_dir: the preprocessing output it trains on (its vocabularies
      name the new rows).
    new_rows: "mean" or "initializer" for tokens the checkpoint lacks.
    initializer: the tf_keras initializer for "initializer" mode.
    seed: the initializer's seed.
    feature_info: the resolved FeatureInfo (default: read from
      preprocessed_dir).
    dimensions: feature -> the model's table dimension, where the trainer
      overrides feature_info's (config embedding_dims, mf_dim).
    features: only these features (the ones the model embeds); default all.

  Returns:
    WarmStartTables feature -> PretrainedTable (trainable and frozen rows
    as from_checkpoint.trainable says), `.reports` with kept/new/dropped
    counts. Empty when no feature names a checkpoint.

  Raises:
    TransferError: missing tensor, dimension mismatch (spec/model vs
      checkpoint), or vocabulary mismatch (hash parameters or sizes differ,
      no token in common); each message names both sides.
  """
  sources = {f.name: f.from_checkpoint for f in spec.features
             if f.from_checkpoint is not None
             and (features is None or f.name in features)}
  if not sources:
    return warmstart.WarmStartTables({}, {})
  infos = feature_info or feature_info_lib.read_feature_info(preprocessed_dir)
  tables, reports = {}, {}
  for name, source in sources.items():
    info = infos[name]
    target = warmstart.TargetTable(
        name=name,
        tokens=tuple(feature_info_lib.table_tokens(preprocessed_dir, info)),
        dimension=dict(dimensions or {}).get(name, info.embedding_dim),
        kind=info.kind, hash=spec.hash_parameters(name),
        origin=f"the model (spec {spec.name!r}, data {preprocessed_dir})")
    old, origin, named = load_checkpoint_table(name, source)
    if not named:
      target = _unnamed_target(info, target, origin)
    try:
      values, carried, report = warmstart.remap_table(
          old, target, new_rows=new_rows, initializer=initializer, seed=seed,
          old_origin=origin)
    except warmstart.RemapError as error:
      raise TransferError(str(error)) from None
    tables[name] = _pretrained(name, source.trainable, values, carried,
                               report)
    reports[name] = report
  return warmstart.WarmStartTables(tables, reports)


def pretrained_for_training(
    config: config_lib.TrainerConfig, spec: spec_lib.FeatureSpec,
    feature_info: Mapping[str, feature_info_lib.FeatureInfo],
    pretrained: Optional[Mapping[str, PretrainedTable]] = None
) -> warmstart.WarmStartTables:
  """The `pretrained=` a training run passes to the model builder.

  The spec's `from_checkpoint` tables of the features the model embeds, at
  the dimensions the model uses, with explicitly given tables (a warm start)
  taking precedence.

  Args:
    config: the trainer's TrainerConfig.
    spec: the feature spec.
    feature_info: the training data's FeatureInfo.
    pretrained: tables the caller already has.

  Returns:
    WarmStartTables feature -> PretrainedTable, with the remap reports of
    the loaded tables and of the given ones (when they carry reports).

  Raises:
    TransferError: a `from_checkpoint` cannot be loaded.
  """
  names = [name for name in models.model_features(config, spec)
           if feature_info[name].size]
  loaded = pretrained_tables(
      spec, config.preprocessed_dir, feature_info=feature_info,
      dimensions=config.table_dims(feature_info, names),
      features=[name for name in names if name not in (pretrained or {})],
      seed=config.seed)
  for name, report in loaded.reports.items():
    logging.info("from_checkpoint %s: %d rows kept, %d new, %d dropped "
                 "(mapped by %s)", name, report.kept, report.new,
                 report.dropped, report.by)
  given = dict(pretrained or {})
  return warmstart.WarmStartTables(
      {**loaded, **given},
      {**loaded.reports, **getattr(pretrained, "reports", {})})
