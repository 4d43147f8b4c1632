"""`cross`: the Cartesian product of two or more earlier features.

    {name: age_x_gender, kind: cross, features: [age_bucket, gender],
     hash_bucket_size: 64}
    {name: occupation_x_genre, kind: cross, features: [occupation, genres],
     vocabulary: true, frequency_threshold: 5}

Multi-valued members give every combination. Hashed crosses equal
`tf.sparse.cross_hashed` and `keras.layers.HashedCrossing(num_bins=...)`
fed the same values; with `vocabulary: true` the crossed strings
("doctor_X_Action") get a learned vocabulary instead (rare ones to OOV).

What a member contributes (and so what a serving-side HashedCrossing must
be fed): vocabulary and hash features their raw value (int64 or string, as
read), bucketized, identity and time features their int64 id, tokens
features their tokens, vocabulary crosses their crossed string and hashed
crosses their hashed id.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Mapping

import numpy as np
import tensorflow as tf

from transforms import fields
from transforms.kinds import base
from transforms.spec import SpecError

CROSS_SEPARATOR = "_X_"
HASH_FUNCTION = ("tf.sparse.cross_hashed: FingerprintCat64 over the members' "
                 "values (default hash_key), modulo bucket_size; same as Keras "
                 "HashedCrossing(num_bins=bucket_size)")
# Crosses whose members have at most this many value combinations get a
# label per bucket listing the combinations that hash there.
_MAX_LABELLED_COMBINATIONS = 10000


def _dense_as_sparse(x: tf.Tensor) -> tf.SparseTensor:
  """A rank-2 dense tensor as a SparseTensor holding every value.

  tf.sparse.from_dense would drop "zero" values (bucket id 0, "").
  """
  indices = tf.where(tf.ones_like(x, dtype=tf.bool))
  return tf.SparseTensor(indices, tf.gather_nd(x, indices),
                         tf.shape(x, out_type=tf.int64))


def _in_given_order(members):
  """Members that tf.sparse.cross* will cross in the order given.

  Those ops put every sparse input before every dense one, whatever the
  order given, and the order changes the hash. So when any member is sparse
  all are made sparse; with none sparse they stay dense, as Keras
  HashedCrossing passes them.
  """
  members = list(members)
  if any(isinstance(m, tf.SparseTensor) for m in members):
    return [m if isinstance(m, tf.SparseTensor) else _dense_as_sparse(m)
            for m in members]
  return members


def _single_value(values: tf.SparseTensor) -> tf.Tensor:
  """A [batch, 1] SparseTensor with one value per row -> dense [batch].

  A cross of single-valued members has exactly one value in every row, so
  no default is ever filled in.
  """
  return tf.reshape(tf.sparse.to_dense(values), [-1])


def hashed_cross(members, num_buckets: int) -> tf.SparseTensor:
  """The Cartesian product of members, hashed into [0, num_buckets).

  `tf.sparse.cross_hashed` with its default key over the members in the
  order given. For dense members that is exactly what
  `tf.keras.layers.HashedCrossing(num_bins=num_buckets)` computes, so a
  serving-side Keras layer gives the ids the pipeline wrote.

  Args:
    members: rank-2 dense or sparse tensors, int64 or string.
    num_buckets: the table size.

  Returns:
    int64 SparseTensor [batch, product of member counts].
  """
  return tf.sparse.cross_hashed(inputs=_in_given_order(members),
                                num_buckets=num_buckets)


def crossed_strings(members) -> tf.SparseTensor:
  """The Cartesian product of members as strings joined by CROSS_SEPARATOR.

  Args:
    members: rank-2 dense or sparse tensors, int64 or string.

  Returns:
    string SparseTensor [batch, product of member counts], members in the
    order given ("doctor_X_Action").
  """
  return tf.sparse.cross(inputs=_in_given_order(members),
                         separator=CROSS_SEPARATOR)


class Cross(base.FeatureKind):
  """A hashed or vocabulary-backed cross of earlier features."""

  NAME = "cross"
  FIELDS = ("features", "hash_bucket_size", "vocabulary"
           ) + base.VOCABULARY_OPTIONS

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    where, earlier = context.where, context.earlier
    members = raw.get("features")
    if not isinstance(members, (list, tuple)) or len(members) < 2:
      raise SpecError(f"{where}: field 'features' must list at least two "
                      f"features to cross")
    for member in members:
      if member not in earlier:
        raise SpecError(f"{where}: field 'features' names {member!r}, which "
                        f"is not a feature defined before this cross")
      if not earlier[member].is_categorical:
        raise SpecError(f"{where}: field 'features' names numeric feature "
                        f"{member!r}; bucketize it to cross it")
    if len(set(members)) != len(members):
      raise SpecError(f"{where}: field 'features' repeats a feature")
    values: Dict[str, Any] = {
        "features": tuple(members),
        "vocabulary": fields.boolean(raw.get("vocabulary", False),
                                     "vocabulary", where)}
    if not values["vocabulary"]:
      values["hash_bucket_size"] = fields.positive_int(
          fields.require(raw, "hash_bucket_size", where), "hash_bucket_size",
          where)
      options = sorted(set(raw) & set(base.VOCABULARY_OPTIONS))
      if options:
        raise SpecError(f"{where}: field(s) {options} need 'vocabulary: "
                        f"true'")
    else:
      if "hash_bucket_size" in raw:
        raise SpecError(f"{where}: field 'hash_bucket_size' conflicts with "
                        f"'vocabulary: true'")
      values.update(self.parse_vocabulary_options(raw, where))
    return values

  def source_columns(self, feature):
    return ()

  def learned_vocabulary(self, feature) -> bool:
    return feature.vocabulary

  def static_size(self, feature):
    return None if feature.vocabulary else feature.hash_bucket_size

  def multivalent(self, feature, spec) -> bool:
    return any(spec.is_multivalent(member) for member in feature.features)

  def transform(self, feature, inputs, members, spec):
    # tf.sparse.cross* take rank-2 members.
    crossed_members = [
        value if isinstance(value, tf.SparseTensor)
        else tf.expand_dims(value, axis=1)
        for value in (members[member] for member in feature.features)]
    if feature.vocabulary:
      crossed = crossed_strings(crossed_members)
      ids = base.apply_vocabulary(feature, crossed)
    else:
      crossed = ids = hashed_cross(crossed_members, feature.hash_bucket_size)
    if self.multivalent(feature, spec):
      return ids, crossed
    return _single_value(ids), _single_value(crossed)

  def row_tokens(self, info, vocabulary):
    if info.vocabulary_file is not None:
      return base.vocabulary_rows(info, vocabulary)
    return super().row_tokens(info, vocabulary)

  def row_labels(self, feature, spec, tokens) -> List[str]:
    """A hashed cross of small-range members lists its combinations per row.

    E.g. day x hour: "Tue 14h|Sat 02h" for a bucket two combinations hash
    to; rows no combination reaches keep their token.
    """
    if feature.vocabulary:
      return list(tokens)
    domains = [spec.feature(member).kind.domain(spec.feature(member))
               for member in feature.features]
    if any(domain is None for domain in domains) or (
        np.prod([len(ids) for ids, _ in domains])
        > _MAX_LABELLED_COMBINATIONS):
      return list(tokens)
    combinations = list(itertools.product(*[range(len(ids))
                                            for ids, _ in domains]))
    columns = [
        tf.constant([[domains[m][0][c[m]]] for c in combinations], tf.int64)
        for m in range(len(domains))]
    buckets = tf.sparse.to_dense(hashed_cross(
        columns, feature.hash_bucket_size)).numpy()[:, 0]
    per_bucket: Dict[int, List[str]] = {}
    for combination, bucket in zip(combinations, buckets):
      label = " ".join(domains[m][1][combination[m]]
                       for m in range(len(domains)))
      per_bucket.setdefault(int(bucket), []).append(label)
    return ["|".join(per_bucket.get(row, [])) or token
            for row, token in enumerate(tokens)]

  def hash_parameters(self, feature, spec):
    members = [spec.feature(member).kind.as_cross_member(
        spec.feature(member), spec) for member in feature.features]
    if feature.vocabulary:
      return {"separator": CROSS_SEPARATOR, "members": members}
    return {"bucket_size": feature.hash_bucket_size,
            "function": HASH_FUNCTION, "members": members}

  def as_cross_member(self, feature, spec):
    return {"name": feature.name, "kind": str(self),
            "value": "crossed string" if feature.vocabulary else "hashed id",
            "hash": self.hash_parameters(feature, spec)}
