"""What every feature kind is, and the parts several kinds share.

A kind is a `str` equal to its spec name ("vocabulary", "cross", ...), so a
Feature's `kind` compares, prints and serializes as the name, and it is an
object whose methods hold everything that depends on the kind:

  the spec        FIELDS, parse(), source_columns(), nonempty_columns()
  the table       categorical, learned_vocabulary(), static_size(),
                  table_size(), multivalent()
  preprocessing   transform(): raw columns -> ids (inside tf.Transform)
  its rows        row_tokens(), row_labels(), domain()
  hashing         hash_parameters(), as_cross_member(), ROWS_BY_NUMBER

The defaults here suit a single-valued categorical feature read from one
raw column; each kind module overrides what differs.
"""

from __future__ import annotations

import dataclasses
from typing import (Any, ClassVar, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

import tensorflow as tf
import tensorflow_transform as tft

from core import artifacts
from transforms import fields
from transforms.spec import SpecError

# Spec fields of every kind, besides the ones a kind lists in FIELDS.
COMMON_FIELDS = ("name", "kind", "embedding_dim", "from_checkpoint")
VOCABULARY_OPTIONS = ("top_k", "frequency_threshold", "num_oov_buckets")


@dataclasses.dataclass(frozen=True)
class ParseContext:
  """What a kind may consult while validating one feature's spec entry.

  Attributes:
    where: how errors name the feature ("feature 'user'").
    column_types: every column of the joined row -> string | int | float.
    earlier: the features defined before this one, by name.
  """
  where: str
  column_types: Mapping[str, str]
  earlier: Mapping[str, Any]


class FeatureKind(str):
  """A feature kind: its spec name, and every behaviour that depends on it."""

  NAME: ClassVar[str] = ""
  # Spec fields the kind accepts besides COMMON_FIELDS.
  FIELDS: ClassVar[Tuple[str, ...]] = ("source",)
  # Whether a warm start may reuse rows only by number, at equal parameters
  # (rows are hash or quantile buckets, with no token of their own).
  ROWS_BY_NUMBER: ClassVar[bool] = False
  # Whether value_tokens gives the tokens of one raw row (a side table's
  # group_feature must).
  GIVES_VALUE_TOKENS: ClassVar[bool] = False

  def __new__(cls):
    return super().__new__(cls, cls.NAME)

  # Kinds are stateless singletons: copies are the same object.
  def __copy__(self):
    return self

  def __deepcopy__(self, memo):
    return self

  def __reduce__(self):
    return (type(self), ())

  # --- the spec -----------------------------------------------------------

  def parse(self, raw: Mapping[str, Any], context: ParseContext
           ) -> Dict[str, Any]:
    """Validates a feature's kind-specific spec fields.

    Args:
      raw: the feature's YAML mapping (only fields in FIELDS and
        COMMON_FIELDS are present).
      context: the columns and the features before this one.

    Returns:
      Feature field -> value for the kind's fields.

    Raises:
      SpecError: naming the feature and the field.
    """
    return {"source": self.parse_source(raw, context)}

  def parse_source(self, raw: Mapping[str, Any], context: ParseContext,
                   column_type: Optional[str] = None) -> str:
    """The `source` column, checked to exist (and to have a type).

    Args:
      raw: the feature's YAML mapping.
      context: the columns.
      column_type: "int" requires an int column, "number" an int or float
        column, None any column.

    Returns:
      The source column's name.
    """
    where = context.where
    source = fields.require(raw, "source", where)
    if source not in context.column_types:
      raise SpecError(f"{where}: field 'source' names column {source!r}, "
                      f"which no input table has")
    actual = context.column_types[source]
    if column_type == "number" and actual == "string":
      raise SpecError(f"{where}: field 'source' column {source!r} is a "
                      f"string; kind {str(self)!r} needs an int or float "
                      f"column")
    if column_type == "int" and actual != "int":
      raise SpecError(f"{where}: field 'source' column {source!r} has type "
                      f"{actual!r}; kind {str(self)!r} needs an int column")
    return source

  def parse_vocabulary_options(self, raw: Mapping[str, Any],
                               where: str) -> Dict[str, Any]:
    """top_k, frequency_threshold and num_oov_buckets (>= 1) of a vocabulary."""
    values: Dict[str, Any] = {}
    if raw.get("top_k") is not None:
      values["top_k"] = fields.positive_int(raw["top_k"], "top_k", where)
    if raw.get("frequency_threshold") is not None:
      values["frequency_threshold"] = fields.positive_int(
          raw["frequency_threshold"], "frequency_threshold", where,
          allow_zero=True)
    # At least one OOV bucket: an unseen token must still map to a row.
    values["num_oov_buckets"] = fields.positive_int(
        raw.get("num_oov_buckets", 1), "num_oov_buckets", where)
    return values

  def source_columns(self, feature) -> Tuple[str, ...]:
    """Raw columns the feature reads directly."""
    return (feature.source,)

  def nonempty_columns(self, feature) -> Tuple[str, ...]:
    """String columns whose empty values are rejected (they would be a key)."""
    return ()

  # --- the table ----------------------------------------------------------

  @property
  def categorical(self) -> bool:
    """Whether the feature ends as int64 ids into an embedding table."""
    return True

  def learned_vocabulary(self, feature) -> bool:
    """Whether tf.Transform learns a vocabulary file named after it."""
    return False

  def static_size(self, feature) -> Optional[int]:
    """Table rows known without analysis (None: learned, or numeric)."""
    raise NotImplementedError(f"kind {str(self)!r} defines no static size")

  def table_size(self, feature, vocabulary_size: Optional[int]) -> int:
    """Table rows once the vocabulary (if any) is learned; 0 for numeric.

    Args:
      feature: the spec feature.
      vocabulary_size: the learned vocabulary's entries (no OOV rows).
    """
    if self.learned_vocabulary(feature):
      return int(vocabulary_size) + feature.num_oov_buckets
    return self.static_size(feature)

  def multivalent(self, feature, spec) -> bool:
    """Whether a row carries a variable number of ids (a SparseTensor)."""
    return False

  # --- preprocessing ------------------------------------------------------

  def transform(self, feature, inputs: Mapping[str, Any],
                members: Mapping[str, Any], spec) -> Tuple[Any, Any]:
    """The feature's part of preprocessing_fn.

    Args:
      feature: the spec feature.
      inputs: raw column -> dense [batch] tensor.
      members: what each earlier feature contributes to a cross.
      spec: the whole spec.

    Returns:
      (the transformed output, what the feature contributes to a cross, or
      None when it cannot be crossed).
    """
    raise NotImplementedError

  # --- its rows -----------------------------------------------------------

  def row_tokens(self, info, vocabulary: Optional[Sequence[str]]
                ) -> List[str]:
    """One unique name per table row (vocab.txt's lines).

    Args:
      info: the feature's FeatureInfo (size, OOV rows).
      vocabulary: the learned vocabulary in id order, for learned kinds.

    Raises:
      ValueError: a learned vocabulary is missing or has the wrong length.
    """
    return [artifacts.bucket_token(i) for i in range(info.size)]

  def value_tokens(self, feature, row: Mapping[str, Any]) -> List[str]:
    """The tokens one raw row gives, in order (GIVES_VALUE_TOKENS kinds).

    Args:
      feature: the feature.
      row: the row's source columns -> parsed values.

    Returns:
      The tokens, empty ones dropped.
    """
    raise NotImplementedError(f"kind {self} gives no tokens per row")

  def row_labels(self, feature, spec, tokens: Sequence[str]) -> List[str]:
    """A readable label per row, for the projector and for people."""
    return list(tokens)

  def domain(self, feature) -> Optional[Tuple[List[int], List[str]]]:
    """(ids, labels) when the feature's ids have a small known range."""
    return None

  # --- hashing ------------------------------------------------------------

  def hash_parameters(self, feature, spec) -> Optional[Dict[str, Any]]:
    """How values map to rows, for kinds whose rows are hash buckets.

    Two tables with equal hash parameters put the same value in the same
    row, so their rows can be reused by number.
    """
    return None

  def as_cross_member(self, feature, spec) -> Dict[str, Any]:
    """What the feature contributes when it is crossed (for metadata)."""
    return {"name": feature.name, "kind": str(self), "value": "id"}


def numbered_domain(feature, size: int) -> Tuple[List[int], List[str]]:
  """The ids 0 .. size-1 of a bucketed feature, labelled `<name>=<id>`."""
  return list(range(size)), [f"{feature.name}={i}" for i in range(size)]


def numbered_member(kind: FeatureKind, feature) -> Dict[str, Any]:
  """A crossed feature that contributes its bucket id, of num_buckets."""
  return {"name": feature.name, "kind": str(kind), "value": "id",
          "num_buckets": feature.num_buckets}


def vocabulary_rows(info, vocabulary: Optional[Sequence[str]]) -> List[str]:
  """A learned vocabulary's row names: its tokens, then `[OOV_k]` rows.

  Raises:
    ValueError: the vocabulary is missing or disagrees with feature_info.
  """
  if vocabulary is None:
    raise ValueError(f"feature {info.name!r}: its vocabulary is needed to "
                     f"name its rows")
  expected = info.size - info.num_oov_buckets
  if len(vocabulary) != expected:
    raise ValueError(f"feature {info.name!r}: vocabulary has "
                     f"{len(vocabulary)} tokens, feature_info says "
                     f"{expected}")
  return list(vocabulary) + [artifacts.oov_token(i)
                             for i in range(info.num_oov_buckets)]


def apply_vocabulary(feature, x):
  """Learns the feature's vocabulary over `x` and maps `x` to its ids.

  The vocabulary file is named after the feature; out-of-vocabulary values
  go to its `num_oov_buckets` rows after the vocabulary.
  """
  return tft.compute_and_apply_vocabulary(
      x, top_k=feature.top_k, frequency_threshold=feature.frequency_threshold,
      num_oov_buckets=feature.num_oov_buckets, vocab_filename=feature.name,
      name=f"vocabulary_{feature.name}")


def raw_value_description(spec, column: str) -> str:
  """How a raw column enters a cross: an int column as int64, else a string."""
  column_type = spec.column_types().get(column, "string")
  return "raw int64" if column_type == "int" else "raw string"


def cross_value(x):
  """A raw column as a cross member.

  tf.sparse.cross_hashed hashes an int64 by its value, not by its decimal
  string, so an int column must stay int64 for the pipeline's ids to equal
  a Keras HashedCrossing fed the same raw column.
  """
  if x.dtype.is_integer:
    return tf.cast(x, tf.int64)
  return as_string(x)


def as_string(x):
  """A tensor as strings (ints as their decimal text)."""
  return x if x.dtype == tf.string else tf.strings.as_string(x)
