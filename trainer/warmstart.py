"""Warm start: reuse a trained table's rows when the vocabulary changes.

Retraining brings new users and movies and drops rare ones, so row i of the
old table is generally not row i of the new one. Rows are matched by token
(vocab.txt / the tf.Transform vocabulary; OOV rows by their `[OOV_k]` name):

  * a token in both vocabularies keeps its old vector ("kept");
  * a token only in the new vocabulary is initialized ("new"): with the mean
    of the old rows, or with the table's initializer (configurable);
  * a token only in the old vocabulary is dropped ("dropped").

Tables without a vocabulary (hashed, crossed, bucketized) are reused row for
row, only when their hash parameters and sizes agree.

Optionally the carried-over rows are frozen while the new rows train
(`freeze_carried=True` -> `PretrainedTable.frozen_rows`; `embeddings
retrain --freeze_carried_rows`, and `from_checkpoint: {trainable:
new_rows}` in a spec, trainer/transfer.py).

The retraining job calls `warm_start_tables(previous_export_or_model,
new_preprocessed_dir, spec=...)` and passes the result to the model builder
as `pretrained=`; `.reports` on the result says what was kept, new and
dropped per table.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core import artifacts
from core import layout
from trainer import export
from trainer.layers import PretrainedTable
from transforms import feature_info as feature_info_lib
from transforms import kinds
from transforms import spec as spec_lib

MEAN = "mean"
INITIALIZER = "initializer"
NEW_ROW_MODES = (MEAN, INITIALIZER)
# What a new row gets when new_rows="initializer" and no initializer is
# named: the default of a Keras Embedding layer.
DEFAULT_INITIALIZER = "uniform"


class RemapError(ValueError):
  """A table cannot be reused; the message names both sides."""


@dataclasses.dataclass(frozen=True)
class TargetTable:
  """The table a new model will have, as far as reuse needs to know.

  Attributes:
    name: the feature.
    tokens: its row names (FeatureInfo.row_tokens), one per row.
    dimension: the embedding dimension the new model uses, or None to take
      the old table's.
    kind: the spec kind, or None when unknown.
    hash: FeatureSpec.hash_parameters of the new feature, or None.
    origin: where this description came from, for error messages.
  """
  name: str
  tokens: Tuple[str, ...]
  dimension: Optional[int] = None
  kind: Optional[str] = None
  hash: Optional[Dict[str, Any]] = None
  origin: str = "the new model"

  @property
  def size(self) -> int:
    return len(self.tokens)


@dataclasses.dataclass(frozen=True)
class RemapReport:
  """What a remap did to one table.

  Attributes:
    feature: the table.
    kept: rows whose token is in both vocabularies (vectors carried over).
    new: rows of the new table initialized (token absent from the old one).
    dropped: old rows whose token is not in the new vocabulary.
    old_size, new_size: row counts.
    new_rows: how new rows were initialized (mean or initializer).
    by: "token" or "row" (hash parameters matched; rows reused by number).
  """
  feature: str
  kept: int
  new: int
  dropped: int
  old_size: int
  new_size: int
  new_rows: str
  by: str

  def as_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


class WarmStartTables(dict):
  """Feature -> PretrainedTable, with `.reports`: feature -> RemapReport."""

  def __init__(self, tables: Mapping[str, PretrainedTable],
               reports: Mapping[str, RemapReport]):
    super().__init__(tables)
    self.reports = dict(reports)

  def report_json(self) -> str:
    """The reports as JSON, one entry per table."""
    return json.dumps({name: report.as_dict()
                       for name, report in self.reports.items()}, indent=2)


def _sample(tokens: Sequence[str], count: int = 5) -> str:
  shown = ", ".join(repr(t) for t in list(tokens)[:count])
  more = f", ... ({len(tokens)} in all)" if len(tokens) > count else ""
  return f"[{shown}{more}]"


def new_row_values(old_vectors: np.ndarray, size: int, dimension: int,
                   new_rows: str = MEAN, initializer: Any = None,
                   seed: int = 0) -> np.ndarray:
  """Candidate values for rows absent from the old table, [size, dimension].

  Args:
    old_vectors: the old table.
    size: the new table's row count.
    dimension: its dimension.
    new_rows: "mean" (every new row = the mean of the old rows) or
      "initializer" (the initializer's draw for the whole new table; row i
      is what row i would have been in a fresh table).
    initializer: a tf_keras initializer identifier or instance for
      "initializer" (default: Keras Embedding's "uniform").
    seed: seeds the initializer, for reproducible warm starts.

  Returns:
    float32 [size, dimension]; callers take the rows they need.

  Raises:
    ValueError: an unknown mode.
  """
  if new_rows == MEAN:
    if old_vectors.shape[0] == 0:
      return np.zeros((size, dimension), np.float32)
    mean = old_vectors.astype(np.float64).mean(axis=0).astype(np.float32)
    return np.broadcast_to(mean, (size, dimension)).copy()
  if new_rows == INITIALIZER:
    init = keras.initializers.get(initializer or DEFAULT_INITIALIZER)
    config = init.get_config()
    if "seed" in config:
      init = init.__class__.from_config({**config, "seed": seed})
    return np.array(init(shape=(size, dimension), dtype=tf.float32),
                    dtype=np.float32)
  raise ValueError(f"new_rows must be one of {NEW_ROW_MODES}, got {new_rows!r}")


def _row_by_number(old: artifacts.EmbeddingTable, target: TargetTable) -> bool:
  kind = target.kind or old.metadata.get("kind")
  old_hash = old.metadata.get("hash")
  hashed = bool(old_hash and "bucket_size" in old_hash) or bool(
      target.hash and "bucket_size" in target.hash)
  # Rows of hash or quantile buckets have no token of their own: the row
  # number is their only identity.
  return hashed or (kind in kinds.KINDS and kinds.get(kind).ROWS_BY_NUMBER)


def check_compatible(old: artifacts.EmbeddingTable, target: TargetTable,
                     old_origin: str) -> None:
  """Raises RemapError unless `old`'s rows can seed `target`.

  Args:
    old: the trained table.
    target: the table to seed.
    old_origin: where `old` came from, for the message.

  Raises:
    RemapError: dimension, hash parameters or size disagree, or the
      vocabularies share no token.
  """
  name = target.name
  if target.dimension is not None and target.dimension != old.dimension:
    raise RemapError(
        f"feature {name!r}: dimension mismatch: {target.origin} uses "
        f"embedding_dim {target.dimension}, {old_origin} has dimension "
        f"{old.dimension}; set `embedding_dim: {old.dimension}` in the spec")
  old_hash = old.metadata.get("hash")
  if (old_hash is not None and target.hash is not None
      and old_hash != target.hash):
    raise RemapError(
        f"feature {name!r}: vocabulary mismatch: hash parameters differ: "
        f"{target.origin} has {json.dumps(target.hash, sort_keys=True)}, "
        f"{old_origin} has {json.dumps(old_hash, sort_keys=True)}")
  if _row_by_number(old, target) and old.size != target.size:
    raise RemapError(
        f"feature {name!r}: vocabulary mismatch: rows are hash or quantile "
        f"buckets, reusable only at equal size: {target.origin} has "
        f"{target.size} rows, {old_origin} has {old.size}")
  if not set(old.tokens) & set(target.tokens):
    raise RemapError(
        f"feature {name!r}: vocabulary mismatch: no token in common: "
        f"{target.origin} has {_sample(target.tokens)}, {old_origin} has "
        f"{_sample(old.tokens)}")


def remap_table(old: artifacts.EmbeddingTable, target: TargetTable,
                new_rows: str = MEAN, initializer: Any = None, seed: int = 0,
                old_origin: Optional[str] = None
               ) -> Tuple[np.ndarray, np.ndarray, RemapReport]:
  """Maps an old table's rows onto a new vocabulary by token.

  Args:
    old: the trained table (tokens name its rows).
    target: the new table's tokens, dimension and hash parameters.
    new_rows: "mean" or "initializer", for tokens the old table lacks.
    initializer: the initializer for "initializer" mode.
    seed: the initializer's seed.
    old_origin: where `old` came from, for error messages.

  Returns:
    (values float32 [target.size, dim], carried bool [target.size] — True
    where the row holds an old vector, the report).

  Raises:
    RemapError: see check_compatible.
  """
  old_origin = old_origin or f"the old table {old.name!r}"
  check_compatible(old, target, old_origin)
  old_index = old.row_of()
  source_rows = np.array([old_index.get(token, -1) for token in target.tokens],
                         dtype=np.int64)
  carried = source_rows >= 0
  values = new_row_values(old.vectors, target.size, old.dimension, new_rows,
                          initializer, seed)
  values[carried] = old.vectors[source_rows[carried]]
  kept = int(carried.sum())
  report = RemapReport(
      feature=target.name, kept=kept, new=target.size - kept,
      dropped=old.size - kept, old_size=old.size, new_size=target.size,
      new_rows=new_rows, by="row" if _row_by_number(old, target) else "token")
  return values, carried, report


def target_tables(preprocessed_dir: str,
                  spec: Optional[spec_lib.FeatureSpec] = None,
                  features: Optional[Sequence[str]] = None
                 ) -> Dict[str, TargetTable]:
  """The tables a model trained on a preprocessing output will have.

  Args:
    preprocessed_dir: an `embeddings preprocess` output.
    spec: its feature spec, to know hash parameters (optional).
    features: restrict to these features (default: every embedded one).

  Returns:
    Feature -> TargetTable.
  """
  infos = feature_info_lib.read_feature_info(preprocessed_dir)
  targets = {}
  for name, info in infos.items():
    if not info.size or (features is not None and name not in features):
      continue
    targets[name] = TargetTable(
        name=name,
        tokens=tuple(feature_info_lib.table_tokens(preprocessed_dir, info)),
        dimension=info.embedding_dim, kind=info.kind,
        hash=spec.hash_parameters(name) if spec else None,
        origin=f"the new data ({preprocessed_dir})")
  return targets


OldTables = Union[str, Mapping[str, artifacts.EmbeddingTable], Any]
NewTables = Union[str, Mapping[str, TargetTable], Mapping[str, Sequence[str]]]


def _old_tables(old: OldTables, old_preprocessed: Optional[str],
                spec: Optional[spec_lib.FeatureSpec]
               ) -> Tuple[Dict[str, artifacts.EmbeddingTable], str]:
  if isinstance(old, str):
    if tf.io.gfile.exists(layout.ModelLayout(old).report):
      return (export.model_dir_tables(old, old_preprocessed,
                                         with_labels=False),
              f"the old model in {old}")
    return artifacts.load_tables(old), f"the artifacts in {old}"
  if isinstance(old, Mapping):
    return dict(old), "the old tables"
  # A trained Keras model: its rows are named by the data it trained on.
  if old_preprocessed is None:
    raise ValueError("warm start from a model needs old_preprocessed, the "
                     "preprocessing output it trained on, to name its rows")
  infos = feature_info_lib.read_feature_info(old_preprocessed)
  tables = {}
  for name, values in export.model_feature_tables(old, infos).items():
    info = infos[name]
    tokens = feature_info_lib.table_tokens(old_preprocessed, info)
    metadata = {"name": name, "kind": info.kind,
                "hash": spec.hash_parameters(name) if spec else None}
    tables[name] = artifacts.EmbeddingTable(name=name, vectors=values,
                                            tokens=tokens, metadata=metadata)
  return tables, f"the old model (trained on {old_preprocessed})"


def _new_tables(new: NewTables, spec: Optional[spec_lib.FeatureSpec]
               ) -> Dict[str, TargetTable]:
  if isinstance(new, str):
    return target_tables(new, spec)
  targets = {}
  for name, value in new.items():
    targets[name] = (value if isinstance(value, TargetTable) else
                     TargetTable(name=name, tokens=tuple(value)))
  return targets


def warm_start_tables(old: OldTables, new: NewTables, *,
                      spec: Optional[spec_lib.FeatureSpec] = None,
                      features: Optional[Sequence[str]] = None,
                      new_rows: str = MEAN, initializer: Any = None,
                      freeze_carried: bool = False, seed: int = 0,
                      old_preprocessed: Optional[str] = None
                     ) -> WarmStartTables:
  """Seeds a new model's tables from an old model's, mapped by token.

  Args:
    old: an export directory (`embeddings export --output`), a trained
      model directory (`embeddings train --model_dir`; its rows are named by
      the data its report names, or `old_preprocessed`), a mapping feature
      -> artifacts.EmbeddingTable, or a trained tf_keras model (then
      `old_preprocessed` names its rows).
    new: the new preprocessing output directory, or feature -> TargetTable,
      or feature -> row tokens.
    spec: the new feature spec; when given, hash parameters are checked.
    features: the features to warm start (default: every table both sides
      have).
    new_rows: "mean" or "initializer" for tokens the old table lacks.
    initializer: the tf_keras initializer for "initializer" mode.
    freeze_carried: freeze carried-over rows; new rows still train.
    seed: the initializer's seed.
    old_preprocessed: the preprocessing output the old model trained on,
      when `old` is a model (optional for a model directory).

  Returns:
    WarmStartTables: feature -> PretrainedTable (trainable, frozen_rows set
    when freeze_carried), with `.reports` feature -> RemapReport.

  Raises:
    RemapError: a table cannot be reused (the message names both sides).
    KeyError: a requested feature is missing on one side.
  """
  old_tables, old_origin = _old_tables(old, old_preprocessed, spec)
  targets = _new_tables(new, spec)
  if features is None:
    names = [name for name in targets if name in old_tables]
  else:
    names = list(features)
    for name in names:
      if name not in old_tables:
        raise KeyError(f"feature {name!r}: {old_origin} has no such table "
                       f"(has {sorted(old_tables)})")
      if name not in targets:
        raise KeyError(f"feature {name!r}: the new model has no such table "
                       f"(has {sorted(targets)})")
  tables, reports = {}, {}
  for name in names:
    values, carried, report = remap_table(
        old_tables[name], targets[name], new_rows=new_rows,
        initializer=initializer, seed=seed,
        old_origin=f"{old_origin} (table {name!r})")
    tables[name] = PretrainedTable(
        values=values, trainable=True,
        frozen_rows=carried.copy() if freeze_carried else None)
    reports[name] = report
  return WarmStartTables(tables, reports)
