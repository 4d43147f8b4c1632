"""Recommendations: exact top-k unseen items, the CLI and the Beam batch job."""

import glob
import json

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import BeamAssertException
from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
import pytest

from core import artifacts
from core import flags
from core import layout
from retrieval import recommend
from workflows import recommend_batch as batch
from workflows import recommend_batch_options as batch_options
from workflows import recommend_chunks as chunks
from workflows import recommend_output
from workflows import recommend_seen
from workflows import recommend_steps as steps
from workflows import recommend_tables as tables

NUM_USERS, NUM_ITEMS, DIM, K = 40, 25, 4, 5


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """User and item tables with an item bias, OOV rows, and ratings files.

  The OOV item row is huge so that any scorer that does not drop OOV rows
  recommends it to everyone.
  """
  root = tmp_path_factory.mktemp("recommend")
  rng = np.random.default_rng(11)
  users = [f"u{i}" for i in range(NUM_USERS)] + ["[OOV_0]"]
  items = [f"m{i}" for i in range(NUM_ITEMS)] + ["[OOV_0]"]
  user_vectors = rng.standard_normal((len(users), DIM)).astype(np.float32)
  item_vectors = rng.standard_normal((len(items), DIM)).astype(np.float32)
  item_vectors[-1] = 100.0
  bias = rng.standard_normal((len(items), 1)).astype(np.float32)
  meta_u = {"vocabulary_size": NUM_USERS, "num_oov_buckets": 1}
  meta_i = {"vocabulary_size": NUM_ITEMS, "num_oov_buckets": 1}
  out = root / "export"
  artifacts.EmbeddingTable("user", user_vectors, users, meta_u).save(
      str(out / "user"))
  artifacts.EmbeddingTable("movie", item_vectors, items, meta_i,
                           names=[f"Movie {i}" for i in range(NUM_ITEMS)] +
                           ["[OOV_0]"]).save(str(out / "movie"))
  artifacts.EmbeddingTable(layout.bias_table_name("movie"), bias, items,
                           meta_i).save(
                               str(out / layout.bias_table_name("movie")))
  seen = {}
  lines = ["user_id,item_id,rating,timestamp"]
  for user in range(NUM_USERS):
    rated = rng.choice(NUM_ITEMS, rng.integers(0, 8), replace=False)
    seen[f"u{user}"] = {f"m{i}" for i in rated}
    lines += [f"u{user},m{i},4.0,1000" for i in rated]
  lines += ["ghost,m1,3.0,1000", ",m2,3.0,1000"]
  (root / "ratings.csv").write_text("\n".join(lines) + "\n")
  return {"dir": str(out), "ratings": str(root / "ratings.csv"),
          "seen": seen, "users": user_vectors[:NUM_USERS],
          "items": item_vectors[:NUM_ITEMS], "bias": bias[:NUM_ITEMS, 0],
          "root": root}


def _expected(export, k=K, with_bias=True, with_seen=True):
  """Brute force: every user against every real item."""
  scores = export["users"] @ export["items"].T
  if with_bias:
    scores = scores + export["bias"]
  result = {}
  for row in range(NUM_USERS):
    user = f"u{row}"
    order = [int(i) for i in np.argsort(-scores[row], kind="stable")
             if not (with_seen and f"m{i}" in export["seen"][user])][:k]
    result[user] = ([f"m{i}" for i in order],
                    [float(scores[row, i]) for i in order])
  return result


def _check(records, expected):
  """Each user once, the exact items in order, scores within float error."""
  users = [record["user"] for record in records]
  if sorted(users) != sorted(expected):
    raise BeamAssertException(f"users {sorted(users)} != {sorted(expected)}")
  for record in records:
    items, scores = expected[record["user"]]
    if list(record["items"]) != items:
      raise BeamAssertException(f"{record['user']}: {record['items']} != "
                                f"{items}")
    np.testing.assert_allclose(record["scores"], scores, rtol=1e-5,
                               atol=1e-5)


def test_read_seen_header_and_movielens(export, tmp_path):
  seen = recommend.read_seen(export["ratings"], users=["u1", "u2", "ghost"])
  assert seen.get("u1", set()) == export["seen"]["u1"]
  assert seen["ghost"] == {"m1"}
  assert "u3" not in seen
  u_data = tmp_path / "u.data"
  u_data.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                    "196\t377\t1\t878887116\n")
  assert recommend.read_seen(str(u_data)) == {"196": {"242", "377"},
                                              "186": {"302"}}


def _frame_records(frame):
  """recommendations_frame's lines as _check's records, users in order."""
  records = []
  for user in dict.fromkeys(frame["user"]):
    lines = frame[frame["user"] == user]
    assert lines["rank"].tolist() == list(range(1, len(lines) + 1))
    records.append({"user": user, "items": lines["item"].tolist(),
                    "scores": lines["score"].tolist()})
  return records


def test_recommendations_frame_excludes_seen_and_oov(export):
  users = artifacts.load(export["dir"], "user")
  items = artifacts.load(export["dir"], "movie")
  bias = artifacts.find_bias(export["dir"], items)
  np.testing.assert_array_equal(bias[:NUM_ITEMS], export["bias"])
  names = [f"u{i}" for i in range(NUM_USERS)]
  frame = recommend.recommendations_frame(users, items, names, K,
                                          seen=export["seen"], item_bias=bias)
  assert list(frame.columns) == ["user", "rank", "item", "name", "score"]
  _check(_frame_records(frame), _expected(export))
  assert frame["name"].tolist() == [f"Movie {item[1:]}"
                                    for item in frame["item"]]
  with pytest.raises(KeyError, match="nobody"):
    recommend.recommendations_frame(users, items, ["nobody"], K)


def test_recommend_pads_when_everything_is_seen():
  scores, ids = recommend.recommend(np.ones((1, 2)), np.eye(2), 3,
                                    seen_rows=[[1]])
  np.testing.assert_array_equal(ids, [[0, -1, -1]])
  assert scores[0, 0] == 1.0 and np.isneginf(scores[0, 1:]).all()


def test_recommend_cli(export, capsys):
  assert recommend.run(["--embeddings", export["dir"], "--users", "u3,u4",
                        "-k", "3", "--seen", export["ratings"],
                        "--json"]) == 0
  captured = capsys.readouterr()
  lines = [json.loads(line) for line in captured.out.strip().splitlines()]
  expected = _expected(export, k=3)
  assert [(r["user"], r["items"]) for r in lines] == [
      ("u3", expected["u3"][0]), ("u4", expected["u4"][0])]
  # Titles come from the export's names, without --names.
  assert lines[0]["titles"] == [f"Movie {t[1:]}" for t in expected["u3"][0]]
  assert captured.err == (
      f"embeddings recommend: top 3 unseen items for 2 user(s) from "
      f"{export['dir']} (tables 'user', 'movie'), printed above\n")
  assert recommend.run(["--embeddings", export["dir"], "--users", "u3",
                        "-k", "1"]) == 0
  item = _expected(export, k=1, with_seen=False)["u3"][0][0]
  assert capsys.readouterr().out.splitlines()[1].endswith(
      f"{item:<12}  Movie {item[1:]}")
  assert recommend.run(["--embeddings", export["dir"], "--users",
                        "u3,nobody"]) == 1
  assert "nobody" in capsys.readouterr().err


def test_beam_transforms_exact_top_k_seen_excluded_each_user_once(export):
  seen_pairs = [(user, item) for user, items in export["seen"].items()
                for item in sorted(items)] + [("ghost", "m1")]
  seen_batch = pa.RecordBatch.from_arrays(
      [pa.array([[pair[side].encode()] for pair in seen_pairs],
                pa.large_list(pa.large_binary())) for side in (0, 1)],
      ["user_id", "item_id"])
  user_lines = [f"u{i} " + " ".join(f"{x:.9g}" for x in export["users"][i])
                for i in range(NUM_USERS)]
  loader = tables.TablesLoader(tables.ItemLoader(export["dir"], "movie", True),
                               tables.UserRowsLoader(export["dir"], "user"))
  handle = shared.Shared()
  expected = _expected(export)
  with test_pipeline.TestPipeline() as p:
    users = (p | "Users" >> beam.Create(user_lines)
             | "PackUsers" >> beam.ParDo(chunks.PackUserLines(
                 DIM, [], shards=3)).with_outputs(chunks.DEAD_LETTER,
                                                  main="chunks"))
    seen = (p | "Seen" >> beam.Create([seen_batch])
            | "PackSeen" >> beam.ParDo(recommend_seen.PackSeenBatches(
                "user_id", "item_id", loader, handle, shards=3)).with_outputs(
                    chunks.DEAD_LETTER, main="chunks"))
    # Block size 8: several blocks per shard, several item blocks per block.
    results = (users.chunks, seen.chunks) | "TopK" >> steps.ShardedRecommend(
        loader, handle, K, block_size=8, item_block=10)
    assert_that(results.users, lambda records: _check(records, expected))
    assert_that(results[chunks.DEAD_LETTER],
                lambda rejected: _equal(rejected, [{
                    "table": "seen", "reason": chunks.NO_EMBEDDING,
                    "raw": {"user": "ghost"}}]),
                label="OrphanUsers")


def _equal(actual, expected):
  if list(actual) != expected:
    raise BeamAssertException(f"{list(actual)} != {expected}")


def test_batch_job_end_to_end_parquet(export):
  output = str(export["root"] / "batch_out")
  report = batch.run([
      "--embeddings", export["dir"], "--output", output, "-k", str(K),
      "--seen", export["ratings"], "--seen_skip_header_lines", "1",
      "--format", "parquet", "--block_size", "16",
      "--runner", "DirectRunner"])
  paths = layout.RecommendationsLayout(output)
  assert glob.glob(paths.prefix + "-*" + layout.PARQUET_SUFFIX)
  _check(list(recommend_output.read_recommendations(output).values()),
         _expected(export))
  counts = report["counts"]
  assert counts["users_read"] == counts["users_scored"] == NUM_USERS
  rated_rows = sum(len(items) for items in export["seen"].values()) + 2
  assert counts["seen_rows_read"] == rated_rows
  assert counts["seen_rows_rejected"] == 1
  assert counts["users_without_embedding"] == 1
  dead = recommend_output.read_dead_letters(output)
  assert sorted(d["reason"] for d in dead) == sorted(
      [chunks.MISSING_ID, chunks.NO_EMBEDDING])
  with open(paths.report) as handle:
    assert json.load(handle)["counts"] == counts


def test_recommend_batch_from_python_seen_tfrecord_to_jsonl(export):
  """The job called with typed options returns the report it wrote."""
  import tensorflow as tf
  path = str(export["root"] / "seen.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for user, items in sorted(export["seen"].items()):
      for item in sorted(items):
        example = tf.train.Example(features=tf.train.Features(feature={
            "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[user.encode()])),
            "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[item.encode()]))}))
        writer.write(example.SerializeToString())
  output = str(export["root"] / "batch_jsonl")
  report = batch.recommend_batch(
      batch.RecommendBatchOptions(
          embeddings=export["dir"], output=output, top_k=3, seen=path,
          seen_format=batch_options.TFRECORD, no_bias=True),
      beam_args=["--runner", "DirectRunner"])
  paths = layout.RecommendationsLayout(output)
  records = list(recommend_output.read_recommendations(output).values())
  _check(records, _expected(export, k=3, with_bias=False))
  with open(paths.report) as handle:
    assert json.load(handle) == report
  assert report["output"] == paths.prefix
  assert (report["format"], report["k"]) == (batch.JSONL, 3)
  assert report["counts"]["users_scored"] == NUM_USERS
  assert report["counts"]["seen_rows_rejected"] == 0
  assert report["counts"]["users_without_embedding"] == 0


def test_build_without_seen_recommends_from_every_item(export):
  output = str(export["root"] / "batch_nothing_seen")
  options = batch.RecommendBatchOptions(embeddings=export["dir"],
                                        output=output, top_k=2)
  with test_pipeline.TestPipeline() as p:
    batch.build(p, options)
  records = list(recommend_output.read_recommendations(output).values())
  _check(records, _expected(export, k=2, with_seen=False))
  assert not recommend_output.read_dead_letters(output)


# Every flag of the job before its options became a dataclass, as
# (flag, the field it sets, its default then).
OLD_FLAG_DEFAULTS = (
    ("--user_table", "user_table", "user"),
    ("--item_table", "item_table", "movie"),
    ("--top_k", "top_k", 10),
    ("--format", "output_format", "jsonl"),
    ("--block_size", "block_size", 512),
    ("--item_block", "item_block", 65536),
    ("--no_bias", "no_bias", False),
    ("--seen", "seen", None),
    ("--seen_format", "seen_format", "csv"),
    # Unset: detected from the --seen file (seen_csv_options).
    ("--seen_columns", "seen_columns", None),
    ("--seen_delimiter", "seen_delimiter", None),
    ("--seen_skip_header_lines", "seen_skip_header_lines", None),
    ("--seen_id_type", "seen_id_type", "string"),
    ("--user_key", "user_key", "user_id"),
    ("--item_key", "item_key", "item_id"),
)
REQUIRED = ["--embeddings", "E", "--output", "O"]


def _options(argv):
  args = batch.flag_parser().parse_args(argv)
  return batch.RecommendBatchOptions(
      **flags.values_from_args(batch.RecommendBatchOptions, args))


def test_generated_flags_keep_every_old_flag_and_default():
  parser = batch.flag_parser()
  actions = parser._actions  # pylint: disable=protected-access
  given = {option for action in actions for option in action.option_strings}
  old = {flag for flag, _, _ in OLD_FLAG_DEFAULTS} | {
      "-k", "--embeddings", "--output"}
  assert old <= given
  options = _options(REQUIRED)
  assert (options.embeddings, options.output) == ("E", "O")
  for flag, field, default in OLD_FLAG_DEFAULTS:
    assert getattr(options, field) == default, flag
  with pytest.raises(SystemExit):
    parser.parse_args(["--output", "O"])


def test_generated_flags_parse_the_old_syntax():
  options = _options(REQUIRED + [
      "-k", "3", "--no_bias", "--format", "parquet", "--block_size", "7",
      "--seen", "r.csv", "--seen_columns", "u, ,i", "--user_key", "u",
      "--item_key", "i", "--seen_delimiter", "\\t",
      "--seen_skip_header_lines", "1", "--seen_id_type", "int"])
  assert (options.top_k, options.no_bias, options.output_format) == (
      3, True, "parquet")
  # Column positions hold: an empty name stays a (nameless) column.
  assert options.seen_columns == ("u", "", "i")
  assert (options.seen_delimiter, options.seen_skip_header_lines,
          options.seen_id_type) == ("\\t", 1, "int")


@pytest.mark.parametrize("bad", [{"top_k": 0}, {"block_size": 0},
                                 {"item_block": -1}])
def test_options_reject_non_positive_sizes(bad):
  with pytest.raises(ValueError, match="must be positive"):
    batch.RecommendBatchOptions(embeddings="E", output="O", **bad)


def test_options_reject_values_outside_their_choices():
  with pytest.raises(ValueError, match="--format must be one of"):
    batch.RecommendBatchOptions(embeddings="E", output="O",
                                output_format="csv")
  with pytest.raises(ValueError, match="--seen_id_type"):
    batch.RecommendBatchOptions(embeddings="E", output="O",
                                seen_id_type="float")


def test_run_reports_non_positive_k_as_a_usage_error(capsys):
  with pytest.raises(SystemExit) as done:
    batch.run(REQUIRED + ["-k", "0"])
  assert done.value.code == 2
  assert "-k, --block_size and --item_block must be positive" in (
      capsys.readouterr().err)


def test_pack_user_lines_skips_reserved_rows_and_rejects_bad_lines():
  pack = chunks.PackUserLines(2, ["[OOV_0]"], shards=1)
  pack.start_bundle()
  outputs = [output for line in ("u1 0.5 -1", "[OOV_0] 1 2", "u2 1", "u3 x 2")
             for output in pack.process(line)]
  outputs += [output.value if isinstance(output, beam.pvalue.TaggedOutput)
              else output for output in pack.finish_bundle()]
  assert not outputs[:-3]
  rejected = [output.value["raw"] for output in outputs[-3:-1]]
  assert sorted(rejected) == ["u2 1", "u3 x 2"]
  shard, (kind, tokens, vectors) = outputs[-1].value
  assert (shard, kind, tokens.to_pylist()) == (0, chunks.USERS, ["u1"])
  np.testing.assert_array_equal(vectors, np.array([[0.5, -1]], np.float32))
