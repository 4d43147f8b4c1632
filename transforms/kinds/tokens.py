"""`tokens`: a multi-valued feature with its own learned vocabulary.

    {name: genres, kind: tokens, source: genres, delimiter: "|"}
    {name: genres, kind: tokens, flag_columns: {g_action: Action, ...}}

Tokens come from a string column split on `delimiter` (blank tokens
dropped), or from 0/1 `flag_columns` (MovieLens' genre flags), each column
that is set giving its token. The output is an int64 SparseTensor (a
VarLenFeature in the written TFRecords); the model averages its rows.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from transforms import fields
from transforms.kinds import base
from transforms.spec import SpecError


class Tokens(base.FeatureKind):
  """Split strings or flag columns, then a learned vocabulary."""

  NAME = "tokens"
  FIELDS = ("source", "delimiter", "flag_columns") + base.VOCABULARY_OPTIONS
  GIVES_VALUE_TOKENS = True

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    where = context.where
    if raw.get("flag_columns") is not None:
      values: Dict[str, Any] = {
          "flag_columns": self._parse_flag_columns(raw, context)}
    else:
      source = self.parse_source(raw, context)
      delimiter = fields.require(raw, "delimiter", where)
      if not isinstance(delimiter, str) or not delimiter:
        raise SpecError(f"{where}: field 'delimiter' must be a non-empty "
                        f"string, got {delimiter!r}")
      if context.column_types[source] != "string":
        raise SpecError(f"{where}: field 'source' column {source!r} must be "
                        f"a string to split on a delimiter")
      values = {"source": source, "delimiter": delimiter}
    values.update(self.parse_vocabulary_options(raw, where))
    return values

  def _parse_flag_columns(self, raw, context):
    where = context.where
    if "source" in raw or "delimiter" in raw:
      raise SpecError(f"{where}: field 'flag_columns' excludes 'source' and "
                      f"'delimiter'")
    flag_columns = raw["flag_columns"]
    if isinstance(flag_columns, Mapping):
      pairs = tuple((str(c), str(t)) for c, t in flag_columns.items())
    elif isinstance(flag_columns, (list, tuple)):
      pairs = tuple((str(c), str(c)) for c in flag_columns)
    else:
      raise SpecError(f"{where}: field 'flag_columns' must be a list of "
                      f"columns or a mapping column -> token")
    if not pairs:
      raise SpecError(f"{where}: field 'flag_columns' is empty")
    tokens = [token for _, token in pairs]
    if "" in tokens or len(set(tokens)) != len(tokens):
      raise SpecError(f"{where}: field 'flag_columns' must give each column "
                      f"a distinct, non-empty token")
    for column, _ in pairs:
      if column not in context.column_types:
        raise SpecError(f"{where}: field 'flag_columns' names column "
                        f"{column!r}, which no input table has")
      if context.column_types[column] != "int":
        raise SpecError(f"{where}: field 'flag_columns' column {column!r} "
                        f"must have type int (0/1)")
    return pairs

  def source_columns(self, feature):
    if feature.flag_columns:
      return tuple(column for column, _ in feature.flag_columns)
    return (feature.source,)

  def learned_vocabulary(self, feature) -> bool:
    return True

  def static_size(self, feature):
    return None

  def multivalent(self, feature, spec) -> bool:
    return True

  def tokens(self, feature, inputs) -> tf.RaggedTensor:
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

  def value_tokens(self, feature, row):
    if feature.flag_columns:
      return [token for column, token in feature.flag_columns
              if row[column] > 0]
    pieces = (piece.strip() for piece in row[feature.source].split(
        feature.delimiter))
    return [piece for piece in pieces if piece]

  def transform(self, feature, inputs, members, spec):
    # SparseTensor, not RaggedTensor: tf.Transform writes a rank-2 sparse
    # output as a VarLenFeature, the multi-valued form of the contract.
    tokens = self.tokens(feature, inputs).to_sparse()
    return base.apply_vocabulary(feature, tokens), tokens

  def row_tokens(self, info, vocabulary):
    return base.vocabulary_rows(info, vocabulary)

  def as_cross_member(self, feature, spec):
    return {"name": feature.name, "kind": str(self), "value": "tokens"}
