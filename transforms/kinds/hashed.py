"""`hash`: one raw column hashed into a fixed number of buckets.

    {name: zip, kind: hash, source: zip_code, hash_bucket_size: 1000}

`tf.strings.to_hash_bucket_fast` of the value's string form; rows are
buckets, named `[BUCKET_k]`, and two tables share rows only when their
hash parameters are equal.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from transforms import fields
from transforms.kinds import base

HASH_FUNCTION = ("tf.strings.to_hash_bucket_fast: FarmHash Fingerprint64 of "
                 "the UTF-8 string, modulo bucket_size")


class Hash(base.FeatureKind):
  """tf.strings.to_hash_bucket_fast over one column."""

  NAME = "hash"
  FIELDS = ("source", "hash_bucket_size")
  ROWS_BY_NUMBER = True

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    return {"source": self.parse_source(raw, context),
            "hash_bucket_size": fields.positive_int(
                fields.require(raw, "hash_bucket_size", context.where),
                "hash_bucket_size", context.where)}

  def nonempty_columns(self, feature):
    return (feature.source,)

  def static_size(self, feature):
    return feature.hash_bucket_size

  def transform(self, feature, inputs, members, spec):
    ids = tf.strings.to_hash_bucket_fast(
        base.as_string(inputs[feature.source]), feature.hash_bucket_size)
    return ids, base.cross_value(inputs[feature.source])

  def hash_parameters(self, feature, spec):
    return {"bucket_size": feature.hash_bucket_size,
            "function": HASH_FUNCTION,
            "members": [{"name": feature.source, "kind": "raw column",
                         "value": "string form"}]}

  def as_cross_member(self, feature, spec):
    return {"name": feature.name, "kind": str(self),
            "value": base.raw_value_description(spec, feature.source)}
