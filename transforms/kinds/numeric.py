"""`numeric`: a number column as a z-score; no table, no embedding.

    {name: price, kind: numeric, source: price}

`tft.scale_to_z_score` with the train split's mean and deviation; the
model reads it as a float32 input. It cannot be crossed (bucketize it).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf
import tensorflow_transform as tft

from transforms.kinds import base


class Numeric(base.FeatureKind):
  """tft.scale_to_z_score over one int or float column."""

  NAME = "numeric"

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    return {"source": self.parse_source(raw, context, column_type="number")}

  @property
  def categorical(self) -> bool:
    return False

  def static_size(self, feature):
    return None

  def table_size(self, feature, vocabulary_size):
    return 0

  def transform(self, feature, inputs, members, spec):
    return tft.scale_to_z_score(tf.cast(inputs[feature.source], tf.float32),
                                name=f"z_score_{feature.name}"), None

  def row_tokens(self, info, vocabulary):
    return []
