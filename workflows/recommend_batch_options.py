"""The options and flags of `embeddings recommend-batch`.

Kept apart from the job (workflows/recommend_batch.py) so that
`embeddings recommend-batch --help` and usage errors answer without
importing Apache Beam or TensorFlow.

The --seen CSV's delimiter, header and columns are detected from the first
line of its first file, as `embeddings recommend` reads --seen
(retrieval.recommend.ratings_format); --seen_delimiter,
--seen_skip_header_lines and --seen_columns override the detection.
"""

import argparse
import dataclasses
from typing import Optional, Tuple

from core import flags
from retrieval import approximate
from retrieval import index as index_lib

JSONL = "jsonl"
PARQUET = "parquet"
FORMATS = (JSONL, PARQUET)
CSV = "csv"
TFRECORD = "tfrecord"
SEEN_FORMATS = (CSV, TFRECORD)
STRING_IDS = "string"
INT_IDS = "int"
ID_TYPES = (STRING_IDS, INT_IDS)
AUTO = "auto"
EXACT = "exact"
APPROXIMATE = "approximate"
INDEX_KINDS = (AUTO, EXACT, APPROXIMATE)
# Enough shards for every core of a few dozen workers, each shard still a
# few thousand users at a million.
DEFAULT_SHARDS = 64
_POSITIVE = "-k, --block_size and --item_block must be positive"
_DETECTED = "unset: detected from the first line of --seen"


def _columns(text) -> Tuple[str, ...]:
  """'a, b,c' -> ('a', 'b', 'c'); empty names kept, so positions hold."""
  return tuple(column.strip() for column in str(text).split(","))


@dataclasses.dataclass(frozen=True)
class RecommendBatchOptions:
  """Everything one `embeddings recommend-batch` run needs; each field a flag.

  Raises:
    ValueError: a count that is not positive, or a value outside its
      choices.
  """
  embeddings: str = flags.option(
      help="export directory (embeddings export --output)")
  output: str = flags.option(
      help="output directory (local, gs://, any Beam FS)")
  user_table: str = flags.option("user", help="the user feature's table")
  item_table: str = flags.option("movie", help="the item feature's table")
  top_k: int = flags.option(10, short="k", help="recommendations per user")
  output_format: str = flags.option(
      JSONL, flag="format", choices=FORMATS,
      help="file format of the recommendations")
  block_size: int = flags.option(
      512, help="users scored together (bounds worker memory)")
  item_block: int = flags.option(
      index_lib.DEFAULT_ITEM_BLOCK,
      help="items scored at a time within a block")
  no_bias: bool = flags.option(
      False, help="ignore an exported item bias table")
  seen: Optional[str] = flags.option(
      None, help="ratings file pattern whose items are excluded per user "
                 "(ratings.csv with a header, MovieLens u.data, or "
                 "tf.Example TFRecords)")
  seen_format: str = flags.option(
      CSV, choices=SEEN_FORMATS, help="format of the --seen files")
  seen_columns: Optional[Tuple[str, ...]] = flags.option(
      None, parse=_columns,
      help=f"CSV column names in file order; {_DETECTED} (the header's, "
           f"or user and item first)")
  seen_delimiter: Optional[str] = flags.option(
      None, help=f"CSV delimiter, e.g. \\t; {_DETECTED} (tab, comma or "
                 f"pipe)")
  seen_skip_header_lines: Optional[int] = flags.option(
      None, help=f"lines to skip at the start of each CSV file; {_DETECTED} "
                 f"(1 when it names the user and item columns, else 0)")
  seen_id_type: str = flags.option(
      STRING_IDS, choices=ID_TYPES,
      help="type of the id features in TFRecord input")
  user_key: str = flags.option(
      "user_id", help="the user id column (feature) of --seen")
  item_key: str = flags.option(
      "item_id", help="the item id column (feature) of --seen")
  index: str = flags.option(
      AUTO, choices=INDEX_KINDS,
      help=f"how users are scored: {EXACT} (every item), {APPROXIMATE} "
           f"(a faiss IVF index calibrated to --target_recall), or {AUTO} "
           f"({APPROXIMATE} above {approximate.APPROXIMATE_THRESHOLD:,} "
           f"items)")
  target_recall: float = flags.option(
      approximate.DEFAULT_TARGET_RECALL,
      help="recall@k the approximate index is calibrated to, on a sample "
           "of users")
  shards: int = flags.option(
      DEFAULT_SHARDS,
      help="user shards the seen-items join groups by (at least the "
           "workers' cores)")

  def __post_init__(self):
    if self.top_k < 1 or self.block_size < 1 or self.item_block < 1:
      raise ValueError(_POSITIVE)
    if self.shards < 1:
      raise ValueError(f"--shards must be positive, got {self.shards}")
    if not 0 < self.target_recall <= 1:
      raise ValueError(f"--target_recall must be in (0, 1], got "
                       f"{self.target_recall}")
    # argparse checks the choices of flags; this checks them for callers.
    for flag, value, choices in (
        ("--format", self.output_format, FORMATS),
        ("--seen_format", self.seen_format, SEEN_FORMATS),
        ("--seen_id_type", self.seen_id_type, ID_TYPES),
        ("--index", self.index, INDEX_KINDS)):
      if value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}, got "
                         f"{value!r}")


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings recommend-batch` flags, one per options field.

  Returns:
    The parser; unknown flags are Beam pipeline flags (parse_known_args).
  """
  parser = argparse.ArgumentParser(
      prog="embeddings recommend-batch",
      description="Top-k unseen items for every user of a user table, by "
                  "user . item + item bias (matrix-factorisation exports "
                  "only). Other flags go to Beam (--runner, --preset).")
  flags.add_flags(parser, RecommendBatchOptions)
  return parser
