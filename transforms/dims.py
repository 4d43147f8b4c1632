"""The one resolver of embedding dimensions.

A table's dimension is decided in two steps, both here:

1. When the data is preprocessed (`spec_dimension`): the spec's
   `embedding_dim`, else the fourth-root rule over the table's final size
   (`auto_embedding_dim`). feature_info.json records it, with the tuning
   range around the rule's value (`embedding_dim_range`).
2. When a model is built (`table_dimensions`): a per-table override (the
   trainer's `embedding_dims`, what `embeddings tune` and retraining set)
   wins; tables tied together by a dot product (the user and item tables
   and the side features added to them) share one dimension, the
   `tied_dim` if given (`mf_dim`), else the largest of the two id tables'.

The trainer, the tuner and retraining all call `table_dimensions`, so one
rule decides every dimension.
"""

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

# The fourth-root rule gives a starting point; the tuning range around it is
# what `embeddings tune` searches.
AUTO_DIM_RANGE = (0.6, 1.4)


def auto_embedding_dim(size: int) -> int:
  """The fourth-root rule: round(size ** 0.25), at least 1.

  Args:
    size: the table's final row count (vocabulary + OOV buckets, or buckets).

  Returns:
    The suggested embedding dimension (500,000 -> 27, 1,682 -> 6).
  """
  return max(1, int(round(size ** 0.25)))


def embedding_dim_range(dim: int) -> Tuple[int, int]:
  """The tuning range around a suggested dimension (about 0.6x .. 1.4x).

  Args:
    dim: the suggested dimension.

  Returns:
    (low, high), inclusive, low >= 1.
  """
  low, high = AUTO_DIM_RANGE
  return max(1, int(math.floor(dim * low))), max(1, int(math.ceil(dim * high)))


def spec_dimension(embedding_dim: Optional[int], size: int) -> int:
  """The dimension a preprocessed table is recorded with.

  Args:
    embedding_dim: the spec's explicit value, or None for `auto`.
    size: the table's final row count.

  Returns:
    The explicit value, else the fourth-root rule's.
  """
  return embedding_dim or auto_embedding_dim(size)


def table_dimensions(recorded: Mapping[str, int], tables: Sequence[str],
                     overrides: Optional[Mapping[str, int]] = None,
                     tied: Sequence[str] = (), tied_basis: Sequence[str] = (),
                     tied_dim: Optional[int] = None) -> Dict[str, int]:
  """The dimension of every table a model builds.

  Args:
    recorded: table -> the dimension feature_info.json records.
    tables: the tables the model builds.
    overrides: table -> an explicit dimension.
    tied: tables that must share one dimension (a dot product's operands:
      the user and item tables and their side features).
    tied_basis: the tables whose dimensions decide the shared one when
      `tied_dim` is None (the user and item tables): the largest of them,
      each taken overridden or recorded.
    tied_dim: the shared dimension, explicitly.

  Returns:
    Table -> dimension, for every table in `tables`.
  """
  overrides = dict(overrides or {})

  def own(table: str) -> int:
    return int(overrides.get(table, recorded[table]))

  shared = None
  if tied:
    shared = tied_dim if tied_dim is not None else max(
        own(table) for table in tied_basis)
  return {table: int(shared) if table in tied else own(table)
          for table in tables}
