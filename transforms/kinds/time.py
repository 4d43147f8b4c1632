"""`day_of_week` and `hour_of_day`: calendar ids of unix seconds (UTC).

    {name: day_of_week, kind: day_of_week, source: timestamp}

Monday = 0 .. Sunday = 6 (Python's datetime.weekday()), hours 0 .. 23.
The source must be an int column: a float32 timestamp is off by up to two
minutes today.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from transforms.kinds import base

_SECONDS_PER_DAY = 86400
_SECONDS_PER_HOUR = 3600
# 1970-01-01 was a Thursday; with Monday = 0 it is day 3.
_EPOCH_WEEKDAY = 3
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def day_of_week(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> day of week, as Python's datetime.weekday().

  Args:
    timestamp: integer unix seconds; before the epoch (negative) works too,
      floor division keeps 1969-12-31 23:59:59 (-1) a Wednesday.

  Returns:
    int64 day of week, Monday = 0 .. Sunday = 6.
  """
  days = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_DAY)
  return tf.math.floormod(days + _EPOCH_WEEKDAY, 7)


def hour_of_day(timestamp: tf.Tensor) -> tf.Tensor:
  """Unix seconds (UTC) -> hour of day.

  Args:
    timestamp: integer unix seconds, negative ones included.

  Returns:
    int64 hour of day, 0 .. 23.
  """
  hours = tf.math.floordiv(tf.cast(timestamp, tf.int64), _SECONDS_PER_HOUR)
  return tf.math.floormod(hours, 24)


class _CalendarKind(base.FeatureKind):
  """An id computed from unix seconds, with a fixed number of values."""

  SIZE = 0

  def parse(self, raw: Mapping[str, Any], context: base.ParseContext
           ) -> Dict[str, Any]:
    return {"source": self.parse_source(raw, context, column_type="int")}

  def static_size(self, feature):
    return self.SIZE

  def calendar_id(self, timestamp: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def transform(self, feature, inputs, members, spec):
    ids = self.calendar_id(inputs[feature.source])
    return ids, ids

  def row_tokens(self, info, vocabulary):
    return [str(i) for i in range(info.size)]

  def labels(self):
    raise NotImplementedError

  def domain(self, feature):
    return list(range(self.SIZE)), list(self.labels())


class DayOfWeek(_CalendarKind):
  """Monday = 0 .. Sunday = 6."""

  NAME = "day_of_week"
  SIZE = 7

  def calendar_id(self, timestamp):
    return day_of_week(timestamp)

  def labels(self):
    return WEEKDAYS

  def row_labels(self, feature, spec, tokens):
    return list(WEEKDAYS)


class HourOfDay(_CalendarKind):
  """0 .. 23."""

  NAME = "hour_of_day"
  SIZE = 24

  def calendar_id(self, timestamp):
    return hour_of_day(timestamp)

  def labels(self):
    return [f"{hour:02d}h" for hour in range(self.SIZE)]
