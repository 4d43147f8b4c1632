"""`vocabulary`: a learned vocabulary of one raw column's values.

    {name: movie, kind: vocabulary, source: item_id, num_oov_buckets: 1}

Ids are the vocabulary's rows (most frequent first, `top_k` and
`frequency_threshold` optional), then `num_oov_buckets` OOV rows for
values not seen in training. The source must not be empty: an empty id
would become a token of its own.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from transforms.kinds import base


class Vocabulary(base.FeatureKind):
  """tft.compute_and_apply_vocabulary over one column."""

  NAME = "vocabulary"
  FIELDS = ("source",) + base.VOCABULARY_OPTIONS
  GIVES_VALUE_TOKENS = True

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    values = {"source": self.parse_source(raw, context)}
    values.update(self.parse_vocabulary_options(raw, context.where))
    return values

  def nonempty_columns(self, feature):
    return (feature.source,)

  def learned_vocabulary(self, feature) -> bool:
    return True

  def static_size(self, feature):
    return None

  def value_tokens(self, feature, row):
    value = str(row[feature.source]).strip()
    return [value] if value else []

  def transform(self, feature, inputs, members, spec):
    ids = base.apply_vocabulary(feature, base.as_string(inputs[feature.source]))
    return ids, base.cross_value(inputs[feature.source])

  def row_tokens(self, info, vocabulary):
    return base.vocabulary_rows(info, vocabulary)

  def as_cross_member(self, feature, spec):
    return {"name": feature.name, "kind": str(self),
            "value": base.raw_value_description(spec, feature.source)}
