"""`bucketized`: quantile buckets of a number column.

    {name: age_bucket, kind: bucketized, source: age, num_buckets: 6}

`tft.bucketize` learns the bucket boundaries on the train split; rows are
buckets, `[BUCKET_k]`, reusable by number only at equal size.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from transforms import fields
from transforms.kinds import base
from transforms.spec import SpecError


class Bucketized(base.FeatureKind):
  """tft.bucketize over one int or float column."""

  NAME = "bucketized"
  FIELDS = ("source", "num_buckets")
  ROWS_BY_NUMBER = True

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    where = context.where
    source = self.parse_source(raw, context, column_type="number")
    num_buckets = fields.positive_int(fields.require(raw, "num_buckets", where),
                                      "num_buckets", where)
    if num_buckets < 2:
      raise SpecError(f"{where}: field 'num_buckets' must be >= 2")
    return {"source": source, "num_buckets": num_buckets}

  def static_size(self, feature):
    return feature.num_buckets

  def transform(self, feature, inputs, members, spec):
    ids = tft.bucketize(tf.cast(inputs[feature.source], tf.float32),
                        feature.num_buckets, name=f"bucketize_{feature.name}")
    ids = tf.cast(ids, tf.int64)
    return ids, ids

  def domain(self, feature):
    return base.numbered_domain(feature, self.static_size(feature))

  def as_cross_member(self, feature, spec):
    return base.numbered_member(self, feature)
