"""`embeddings recommend-batch`: top-k unseen items for every user, in Beam.

The motivating job: 1M users x 500K movies, 5-10 recommendations each. It
runs on any Beam runner as it runs here (DirectRunner locally, Dataflow with
`--preset dataflow ...`, see pipelines/runners.py):

  embeddings recommend-batch --embeddings out/run/embeddings \\
      --seen 'out/run/data/ratings.csv' --seen_skip_header_lines 1 \\
      --output out/run/recommendations -k 10 [--format parquet]

How it scales, step by step:

  * Users: the user table's word2vec.txt (one `token v1 .. vd` line per row,
    written by core/artifacts.py with exact float32 digits) read with
    ReadFromText, which splits the file across workers. A TF checkpoint
    cannot serve this: restoring a slice of a tensor still reads the whole
    tensor into memory (measured), so every worker would hold every user.
  * Seen items: the ratings file through TFXIO (CSV or tf.Example TFRecord)
    as Arrow RecordBatches, turned into (user, item) pairs. They join the
    users by key with CoGroupByKey. A side input would put every rating of
    every user in every worker's memory (100M+ pairs for this job); the
    shuffle keeps a worker's memory at one user's ratings.
  * Blocks: BatchElements groups users into blocks of `--block_size`; one
    block is scored against the item table with one matrix product per item
    block (retrieval/index.py: exact top-k, the user's seen items masked).
    Memory per worker is the item table plus block_size x item_block scores,
    whatever the number of users.
  * Items: loaded once per worker process (beam.utils.shared.Shared, in
    DoFn.setup) from the artifact directory through tf.io.gfile, so gs://
    paths work and no local path is baked into the job.
  * Output: one record per user, {"user", "items", "scores"}, as JSONL text
    shards or Parquet (`--format parquet`), plus dead-letter JSONL for
    ratings rows without a user or item and for users who rated but have no
    embedding, and run_report.json with the counts.

Scores rank items for a user: user . item (+ the item bias when the export
has a `bias_<item>` table; see retrieval/recommend.py).
"""

import argparse
import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from core import artifacts
from core import layout
from pipelines import metrics
from pipelines import runners
from retrieval import index as index_lib

NAMESPACE = "recommend"
JSONL = "jsonl"
PARQUET = "parquet"
FORMATS = (JSONL, PARQUET)
CSV = "csv"
TFRECORD = "tfrecord"
SEEN_FORMATS = (CSV, TFRECORD)
REPORT_FILE = "run_report.json"
RECOMMENDATIONS = "recommendations"
DEAD_LETTER = "dead_letter"
NO_EMBEDDING = "user has ratings but no row in the user table"
MISSING_ID = "ratings row without a user or item id"
BAD_VECTOR = "word2vec line with the wrong number of values"

_COUNTERS = ("users_read", "users_scored", "users_without_embedding",
             "seen_rows_read", "seen_rows_rejected", "seen_items_unknown",
             "blocks_scored", "user_lines_rejected")


class ItemTable:
  """The item side of scoring: real rows, their tokens, bias, token -> row.

  A plain class (not a tuple) so beam.utils.shared can hold it by weak
  reference, once per worker process.
  """

  def __init__(self, vectors: np.ndarray, tokens: Sequence[str],
               bias: Optional[np.ndarray] = None):
    self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    self.tokens = list(tokens)
    self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
    self.row_of = {token: row for row, token in enumerate(self.tokens)}


def load_item_table(embeddings: str, table: str, use_bias: bool) -> ItemTable:
  """Reads an export's item table (real rows only) and its bias.

  Args:
    embeddings: the export directory (`embeddings export --output`).
    table: the item feature name.
    use_bias: add the exported `bias_<table>` when there is one.

  Returns:
    The ItemTable.
  """
  loaded = artifacts.load(embeddings, table)
  rows = loaded.real_rows
  bias = artifacts.find_bias(embeddings, loaded) if use_bias else None
  return ItemTable(loaded.vectors[rows], [loaded.tokens[r] for r in rows],
                   None if bias is None else bias[rows])


class ParseWord2VecLine(beam.DoFn):
  """`token v1 .. vd` -> (token, float32 [d]); OOV and default rows dropped."""

  def __init__(self, dimension: int, skip_tokens: Sequence[str]):
    self._dimension = dimension
    self._skip = frozenset(skip_tokens)
    self._read = Metrics.counter(NAMESPACE, "users_read")
    self._rejected = Metrics.counter(NAMESPACE, "user_lines_rejected")

  def process(self, line: str):
    fields = line.split(" ")
    token = fields[0]
    if not token or token in self._skip:
      return
    if len(fields) != self._dimension + 1:
      self._rejected.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
          "table": "users", "reason": BAD_VECTOR, "raw": line[:200]})
      return
    self._read.inc()
    yield token, np.array(fields[1:], dtype=np.float32)


class RecordBatchToPairs(beam.DoFn):
  """Arrow RecordBatches of ratings -> (user, item) string pairs."""

  def __init__(self, user_key: str, item_key: str):
    self._user_key = user_key
    self._item_key = item_key
    self._escape = None
    self._read = Metrics.counter(NAMESPACE, "seen_rows_read")
    self._rejected = Metrics.counter(NAMESPACE, "seen_rows_rejected")

  def setup(self):
    # word2vec.txt spells tokens with whitespace as `_`; ratings must match.
    self._escape = artifacts.word2vec_token

  def process(self, batch):
    users = batch.column(batch.schema.get_field_index(self._user_key))
    items = batch.column(batch.schema.get_field_index(self._item_key))
    for user, item in zip(users.to_pylist(), items.to_pylist()):
      self._read.inc()
      if not user or not item or user[0] is None or item[0] is None:
        self._rejected.inc()
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
            "table": "seen", "reason": MISSING_ID,
            "raw": {"user": _text(user), "item": _text(item)}})
        continue
      yield self._escape(_text(user[0])), _text(item[0])


def _text(value) -> Optional[str]:
  if value is None:
    return None
  if isinstance(value, list):
    return ",".join(str(_text(v)) for v in value)
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def _nothing_seen(pair: Tuple[str, np.ndarray]
                 ) -> Tuple[str, np.ndarray, List[str]]:
  return pair[0], pair[1], []


class AttachSeen(beam.DoFn):
  """CoGroupByKey result -> (user, vector, seen items); rejects orphans."""

  def __init__(self):
    self._orphans = Metrics.counter(NAMESPACE, "users_without_embedding")

  def process(self, element):
    user, grouped = element
    vectors = list(grouped["vector"])
    seen = sorted(set(grouped["seen"]))
    if not vectors:
      self._orphans.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, {
          "table": "seen", "reason": NO_EMBEDDING, "raw": {"user": user}})
      return
    yield user, vectors[0], seen


class ScoreUserBlock(beam.DoFn):
  """Scores a block of users against every item; emits top-k per user."""

  def __init__(self, loader, k: int, item_block: int,
               shared_handle: shared.Shared):
    """Keeps what the workers need; the table itself loads in setup().

    Args:
      loader: a picklable callable returning the ItemTable (e.g. a
        functools.partial of load_item_table).
      k: recommendations per user.
      item_block: items scored at a time.
      shared_handle: a beam.utils.shared.Shared, so threads of one worker
        process share one copy of the table.
    """
    self._loader = loader
    self._k = k
    self._item_block = item_block
    self._shared = shared_handle
    self._items = None
    self._scored = Metrics.counter(NAMESPACE, "users_scored")
    self._blocks = Metrics.counter(NAMESPACE, "blocks_scored")
    self._unknown = Metrics.counter(NAMESPACE, "seen_items_unknown")

  def setup(self):
    self._items = self._shared.acquire(self._loader)

  def process(self, block):
    items = self._items
    users = [user for user, _, _ in block]
    vectors = np.stack([vector for _, vector, _ in block])
    exclude, unknown = [], 0
    for _, _, seen in block:
      rows = [items.row_of.get(token, -1) for token in seen]
      unknown += sum(1 for row in rows if row < 0)
      exclude.append([row for row in rows if row >= 0])
    if unknown:
      self._unknown.inc(unknown)
    scores, ids = index_lib.top_k(vectors, items.vectors, self._k,
                              item_bias=items.bias, exclude=exclude,
                              item_block=self._item_block)
    self._blocks.inc()
    self._scored.inc(len(users))
    for user, row_scores, row_ids in zip(users, scores, ids):
      keep = row_ids >= 0
      yield {"user": user,
             "items": [items.tokens[i] for i in row_ids[keep]],
             "scores": [float(s) for s in row_scores[keep]]}


class JoinSeen(beam.PTransform):
  """(user, vector) + (user, item) pairs -> (user, vector, sorted seen items).

  Outputs: main, and DEAD_LETTER for users with ratings but no vector.
  """

  def expand(self, pcolls):
    users, seen = pcolls
    return ({"vector": users, "seen": seen}
            | "GroupByUser" >> beam.CoGroupByKey()
            | "AttachSeen" >> beam.ParDo(AttachSeen()).with_outputs(
                DEAD_LETTER, main="users"))


class RecommendTopK(beam.PTransform):
  """(user, vector, seen items) -> {"user", "items", "scores"} per user."""

  def __init__(self, loader, k: int, block_size: int = 512,
               item_block: int = 65536):
    super().__init__()
    self._loader = loader
    self._k = k
    self._block_size = block_size
    self._item_block = item_block

  def expand(self, users):
    return (users
            | "BlockUsers" >> beam.BatchElements(
                min_batch_size=self._block_size,
                max_batch_size=self._block_size)
            | "ScoreBlocks" >> beam.ParDo(ScoreUserBlock(
                self._loader, self._k, self._item_block, shared.Shared())))


class _ItemLoader:
  """A picklable loader of the item table (no closure over local state)."""

  def __init__(self, embeddings: str, table: str, use_bias: bool):
    self.embeddings = embeddings
    self.table = table
    self.use_bias = use_bias

  def __call__(self) -> ItemTable:
    return load_item_table(self.embeddings, self.table, self.use_bias)


def _seen_schema(user_key: str, item_key: str, id_type: str):
  schema = schema_pb2.Schema()
  kind = schema_pb2.INT if id_type == "int" else schema_pb2.BYTES
  for name in (user_key, item_key):
    feature = schema.feature.add()
    feature.name = name
    feature.type = kind
  return schema


def _seen_source(args) -> beam.PTransform:
  """The TFXIO source of the ratings whose items are excluded."""
  schema = _seen_schema(args.user_key, args.item_key, args.seen_id_type)
  if args.seen_format == CSV:
    columns = [c.strip() for c in args.seen_columns.split(",")]
    for key in (args.user_key, args.item_key):
      if key not in columns:
        raise ValueError(f"--seen_columns {columns} must include {key!r}")
    delimiter = args.seen_delimiter.encode().decode("unicode_escape")
    source = tfxio.CsvTFXIO(
        args.seen, column_names=columns, delimiter=delimiter,
        skip_header_lines=args.seen_skip_header_lines, schema=schema,
        telemetry_descriptors=["embeddings", "recommend"])
  else:
    source = tfxio.TFExampleRecord(
        args.seen, schema=schema,
        telemetry_descriptors=["embeddings", "recommend"])
  return source.BeamSource(batch_size=4096)


def _table_info(embeddings: str, table: str) -> Tuple[str, Dict]:
  """A table's directory and metadata, read when the pipeline is built."""
  directory = artifacts.table_dir(embeddings, table)
  return directory, artifacts.read_metadata(directory)


def _parquet_schema():
  return pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())),
                    ("scores", pa.list_(pa.float32()))])


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings recommend-batch",
      description="Top-k unseen items for every user of a user table.")
  parser.add_argument("--embeddings", required=True,
                      help="export directory (embeddings export --output)")
  parser.add_argument("--user_table", default="user")
  parser.add_argument("--item_table", default="movie")
  parser.add_argument("--output", required=True,
                      help="output directory (local, gs://, any Beam FS)")
  parser.add_argument("-k", "--top_k", type=int, default=10)
  parser.add_argument("--format", choices=FORMATS, default=JSONL)
  parser.add_argument("--block_size", type=int, default=512,
                      help="users scored together (bounds worker memory)")
  parser.add_argument("--item_block", type=int, default=65536,
                      help="items scored at a time within a block")
  parser.add_argument("--no_bias", action="store_true",
                      help="ignore an exported item bias table")
  parser.add_argument("--seen", default=None,
                      help="ratings file pattern whose items are excluded")
  parser.add_argument("--seen_format", choices=SEEN_FORMATS, default=CSV)
  parser.add_argument("--seen_columns",
                      default="user_id,item_id,rating,timestamp",
                      help="CSV column names in file order")
  parser.add_argument("--seen_delimiter", default=",",
                      help="CSV delimiter (\\t for MovieLens u.data)")
  parser.add_argument("--seen_skip_header_lines", type=int, default=0)
  parser.add_argument("--seen_id_type", choices=("string", "int"),
                      default="string",
                      help="type of the id features in TFRecord input")
  parser.add_argument("--user_key", default="user_id")
  parser.add_argument("--item_key", default="item_id")
  return parser


def build(pipeline: beam.Pipeline, args) -> None:
  """Adds the recommendation job's steps to a pipeline.

  Args:
    pipeline: the Beam pipeline.
    args: the parsed job arguments (see _parser).
  """
  user_dir, user_meta = _table_info(args.embeddings, args.user_table)
  _, item_meta = _table_info(args.embeddings, args.item_table)
  if int(user_meta["dimension"]) != int(item_meta["dimension"]):
    raise ValueError(
        f"user table {args.user_table!r} has dimension "
        f"{user_meta['dimension']} and item table {args.item_table!r} "
        f"{item_meta['dimension']}: scoring needs the user and item tables "
        f"of one matrix-factorisation model")
  word2vec = os.path.join(
      user_dir, user_meta.get("files", {}).get("word2vec",
                                               layout.WORD2VEC_FILE))
  parse = ParseWord2VecLine(int(user_meta["dimension"]),
                            artifacts.reserved_tokens(user_meta))
  parsed = (pipeline
            | "ReadUserVectors" >> beam.io.ReadFromText(
                word2vec, skip_header_lines=1)
            | "ParseUserVectors" >> beam.ParDo(parse).with_outputs(
                DEAD_LETTER, main="users"))
  dead_letters = [parsed[DEAD_LETTER]]
  if args.seen:
    pairs = (pipeline
             | "ReadSeenRatings" >> _seen_source(args)
             | "SeenPairs" >> beam.ParDo(RecordBatchToPairs(
                 args.user_key, args.item_key)).with_outputs(
                     DEAD_LETTER, main="pairs"))
    joined = (parsed.users, pairs.pairs) | "JoinSeen" >> JoinSeen()
    users = joined.users
    dead_letters += [pairs[DEAD_LETTER], joined[DEAD_LETTER]]
  else:
    users = parsed.users | "NothingSeen" >> beam.Map(_nothing_seen)
  recommendations = users | "Recommend" >> RecommendTopK(
      _ItemLoader(args.embeddings, args.item_table, not args.no_bias),
      args.top_k, args.block_size, args.item_block)
  prefix = os.path.join(args.output, RECOMMENDATIONS)
  if args.format == PARQUET:
    _ = recommendations | "WriteParquet" >> beam.io.WriteToParquet(
        prefix, _parquet_schema(), file_name_suffix=".parquet")
  else:
    _ = (recommendations
         | "ToJson" >> beam.Map(json.dumps)
         | "WriteJsonl" >> beam.io.WriteToText(prefix,
                                               file_name_suffix=".jsonl"))
  _ = (dead_letters
       | "MergeDeadLetters" >> beam.Flatten()
       | "DeadLetterJson" >> beam.Map(json.dumps)
       | "WriteDeadLetters" >> beam.io.WriteToText(
           os.path.join(args.output, DEAD_LETTER, "part"),
           file_name_suffix=".jsonl"))


def _counters(result) -> Dict[str, int]:
  counts = {name: 0 for name in _COUNTERS}
  counts.update(metrics.counter_totals(result, NAMESPACE))
  return counts


def run(argv: Optional[Sequence[str]] = None) -> Dict:
  """Runs the batch recommendation job (Beam wordcount conventions).

  Args:
    argv: job flags plus Beam pipeline flags (or `--preset NAME`).

  Returns:
    The run report: counts per counter, the output prefix, wall time.
  """
  parser = _parser()
  args, pipeline_args = parser.parse_known_args(argv)
  if args.top_k < 1 or args.block_size < 1 or args.item_block < 1:
    parser.error("-k, --block_size and --item_block must be positive")
  options = PipelineOptions(runners.expand_preset(pipeline_args))
  started = time.time()
  pipeline = beam.Pipeline(options=options)
  build(pipeline, args)
  result = pipeline.run()
  result.wait_until_finish()
  counts = _counters(result)
  report = {
      "output": os.path.join(args.output, RECOMMENDATIONS),
      "format": args.format,
      "k": args.top_k,
      "block_size": args.block_size,
      "counts": counts,
      "wall_seconds": round(time.time() - started, 3),
  }
  tf.io.gfile.makedirs(args.output)
  with tf.io.gfile.GFile(os.path.join(args.output, REPORT_FILE), "w") as f:
    f.write(json.dumps(report, indent=2) + "\n")
  logging.info("recommend-batch: %s", json.dumps(counts))
  return report


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  run()
