"""`identity`: integer ids used as they are.

    {name: slot, kind: identity, source: slot_id, num_buckets: 100}

Ids in [0, num_buckets) are their own rows; every other id (negative, or
too large) goes to one extra default row, `[DEFAULT]` in vocab.txt, so the
table has num_buckets + 1 rows.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from core import artifacts
from transforms import fields
from transforms.kinds import base


class Identity(base.FeatureKind):
  """Integer ids with one default row for the out-of-range ones."""

  NAME = "identity"
  FIELDS = ("source", "num_buckets")

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    # Ids must be exact, so the column must be an int column.
    return {"source": self.parse_source(raw, context, column_type="int"),
            "num_buckets": fields.positive_int(
                fields.require(raw, "num_buckets", context.where),
                "num_buckets", context.where)}

  def static_size(self, feature):
    return feature.num_buckets + 1

  def transform(self, feature, inputs, members, spec):
    value = tf.cast(inputs[feature.source], tf.int64)
    in_range = (value >= 0) & (value < feature.num_buckets)
    ids = tf.where(in_range, value, tf.constant(feature.num_buckets, tf.int64))
    return ids, ids

  def row_tokens(self, info, vocabulary):
    return [str(i) for i in range(info.size - 1)] + [artifacts.DEFAULT_TOKEN]

  def domain(self, feature):
    return base.numbered_domain(feature, self.static_size(feature))

  def as_cross_member(self, feature, spec):
    return base.numbered_member(self, feature)
