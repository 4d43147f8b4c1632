"""Behaviour of `embeddings preprocess` (pipelines/preprocess.py and friends).

Tiny hand-written tables with every kind of bad row check exact reject
reasons and reconciled counts; TestPipeline + assert_that check the parse,
validate and join steps; a killed run must leave nothing a consumer
accepts; MovieLens 100K (u1 fold, the shared session fixture) must come out
with the row counts and vocabularies computed here from the raw files.
(The multi_processing DirectRunner giving the same output as in-process is
tests/test_deploy.py::test_multiprocess_direct_runner_matches_in_process.)
"""

import collections
import dataclasses
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import yaml
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from core import layout
from core import outputs
from pipelines import counts as counts_lib
from pipelines import inputs
from pipelines import parsers
from pipelines import preprocess
from pipelines import rows as rows_lib
from pipelines import sinks
from pipelines import sources
from pipelines import split as split_lib
from pipelines import steps
from transforms import feature_info as feature_info_lib
from transforms import loader
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_SPEC = """
name: tiny
inputs:
  ratings:
    format: csv
    path: ${DATA_DIR}/ratings.csv
    header: true
    columns: [user_id, item_id, rating, timestamp]
    types: {rating: float, timestamp: int}
  users:
    format: csv
    path: ${DATA_DIR}/users.csv
    header: true
    key: user_id
    columns: [user_id, age, gender, occupation]
    types: {age: int}
  items:
    format: csv
    path: ${DATA_DIR}/items.csv
    header: true
    key: item_id
    columns: [item_id, title, genres]
main: ratings
joins:
  - {table: users, by: user_id}
  - {table: items, by: item_id}
split: {key: user_id, eval_fraction: 0.3, seed: 1}
label: {column: rating, min: 1, max: 5}
features:
  - {name: user, kind: vocabulary, source: user_id}
  - {name: movie, kind: vocabulary, source: item_id}
  - {name: gender, kind: vocabulary, source: gender}
  - {name: age_bucket, kind: bucketized, source: age, num_buckets: 2}
  - {name: genres, kind: tokens, source: genres, delimiter: "|"}
  - {name: day_of_week, kind: day_of_week, source: timestamp}
  - {name: age_x_gender, kind: cross, features: [age_bucket, gender],
     hash_bucket_size: 16}
max_rejected_fraction: 1.0
"""

GOOD_RATINGS = [b"u1,m1,4.0,1000", b"u1,m2,3.0,2000", b"u2,m1,5.0,3000",
                b"u2,m3,1.0,4000", b"u5,m2,2.0,5000"]
# (raw line, table, reason): every way a row can fail.
BAD_RATINGS = [
    (b"u1,m1,4.0", "wrong_field_count"),
    (b"u1,m1,abc,1000", "unparsable_number"),
    (b",m1,4.0,1000", "empty_key"),
    (b"u\xff1,m1,4.0,1000", "invalid_encoding"),
    (b"u1,m1,nan,1000", "non_finite_number"),
    (b"u1,m1,inf,1000", "non_finite_number"),
    (b"u1,m1,7.0,1000", "label_out_of_range"),
    (b"u9,m1,4.0,1000", "missing_join_key"),   # no user u9
    (b"u1,m1,4.0,1.5", "unparsable_number"),   # timestamp is an int
    (b"u3,m1,4.0,1000", "rejected_side_row"),  # u3 is duplicated in users
    (b"u4,m2,4.0,1000", "rejected_side_row"),  # u4's users row is bad
    (b"u1,m9,4.0,1000", "rejected_side_row"),  # m9's items row is bad
]
USERS = [b"u1,20,M,student", b"u2,30,F,writer", b"u3,40,M,doctor",
         b"u3,41,M,doctor", b"u4,old,F,artist", b"u5,50,F,artist"]
BAD_USERS = [(b"u3,40,M,doctor", "duplicate_key"),
             (b"u3,41,M,doctor", "duplicate_key"),
             (b"u4,old,F,artist", "unparsable_number")]
ITEMS = [b"m1,One,Action|Comedy", b'm2,"Two, the sequel",Drama', b"m3,Three,",
         b"m9,Nine"]
BAD_ITEMS = [(b"m9,Nine", "wrong_field_count")]


def _expected_letters():
  letters = [("ratings", reason, raw) for raw, reason in BAD_RATINGS]
  letters += [("users", reason, raw) for raw, reason in BAD_USERS]
  letters += [("items", reason, raw) for raw, reason in BAD_ITEMS]
  return sorted((table, reason, raw.decode("utf-8", "backslashreplace"))
                for table, reason, raw in letters)


def _write_tiny(folder) -> str:
  folder = str(folder)
  os.makedirs(folder, exist_ok=True)
  ratings = (GOOD_RATINGS[:3] + [raw for raw, _ in BAD_RATINGS]
             + GOOD_RATINGS[3:])
  # A blank line is not a row; CRLF line ends are accepted.
  body = b"\n".join(ratings[:6]) + b"\n\n" + b"\r\n".join(ratings[6:]) + b"\n"
  with open(os.path.join(folder, "ratings.csv"), "wb") as handle:
    handle.write(b"user_id,item_id,rating,timestamp\n" + body)
  with open(os.path.join(folder, "users.csv"), "wb") as handle:
    handle.write(b"user_id,age,gender,occupation\n" + b"\n".join(USERS))
  with open(os.path.join(folder, "items.csv"), "wb") as handle:
    handle.write(b"item_id,title,genres\n" + b"\n".join(ITEMS) + b"\n")
  spec_path = os.path.join(folder, "spec.yaml")
  with open(spec_path, "w") as handle:
    handle.write(TINY_SPEC)
  return spec_path


def _tiny_spec(folder, **changes) -> spec_lib.FeatureSpec:
  spec = loader.load_spec(os.path.join(folder, "spec.yaml"),
                            {"DATA_DIR": str(folder)})
  return dataclasses.replace(spec, **changes) if changes else spec


def _read_letters(output):
  letters = []
  for path in glob.glob(os.path.join(output, "dead_letter", "part-*.jsonl")):
    with open(path) as handle:
      letters.extend(json.loads(line) for line in handle if line.strip())
  return letters


def _read_split(output, split_name):
  feature_spec = tft.TFTransformOutput(output).transformed_feature_spec()
  files = sorted(glob.glob(os.path.join(output, split_name,
                                        "part-*.tfrecord.gz")))
  assert files, f"no TFRecords under {output}/{split_name}"
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(
      100000).map(lambda x: tf.io.parse_example(x, feature_spec))
  columns = collections.defaultdict(list)
  for batch in dataset:
    for name, value in batch.items():
      if isinstance(value, tf.SparseTensor):
        value = tf.RaggedTensor.from_sparse(value).to_list()
      else:
        value = value.numpy().tolist()
      columns[name].extend(value)
  return dict(columns)


def _vocabulary(output, name):
  path = tft.TFTransformOutput(output).vocabulary_file_by_name(name)
  with tf.io.gfile.GFile(path, "rb") as handle:
    return [line.rstrip(b"\n").decode("utf-8") for line in handle]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny")
  _write_tiny(folder)
  return str(folder)


@pytest.fixture(scope="module")
def tiny_output(tiny_dir, tmp_path_factory):
  output = str(tmp_path_factory.mktemp("tiny_out") / "preprocessed")
  preprocess.run(["--spec", os.path.join(tiny_dir, "spec.yaml"),
                  "--env", f"DATA_DIR={tiny_dir}", "--output", output,
                  "--num_shards", "2"])
  return output


# --------------------------------------------------------------- reading CSV


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_line_ranges_cover_every_line_exactly_once(tmp_path,
                                                   trailing_newline):
  lines = [b"a" * (i % 7) + b"," + str(i).encode() for i in range(60)]
  data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
  path = tmp_path / "lines.csv"
  path.write_bytes(data)
  for range_bytes in (1, 2, 5, 13, 64, len(data), len(data) + 10):
    for block_bytes in (1, 4, 1000):
      got = []
      for start in range(0, len(data), range_bytes):
        with open(path, "rb") as handle:
          got.extend(sources.iter_line_blocks(
              handle, start, min(start + range_bytes, len(data)),
              block_bytes))
      assert b"".join(got).split(b"\n")[:len(lines)] == lines, (
          range_bytes, block_bytes)
      assert b"".join(got).rstrip(b"\n") == data.rstrip(b"\n")


def test_line_ranges_on_random_files():
  rng = np.random.default_rng(0)
  for _ in range(300):
    lines = [b"x" * int(n) for n in rng.integers(0, 12, rng.integers(1, 30))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    range_bytes = int(rng.integers(1, len(data) + 4))
    block_bytes = int(rng.integers(1, 50))
    got = []
    for start in range(0, len(data), range_bytes):
      got.extend(sources.iter_line_blocks(
          io.BytesIO(data), start, min(start + range_bytes, len(data)),
          block_bytes))
    assert b"".join(got) == data, (data, range_bytes, block_bytes)


def test_csv_reader_skips_each_files_header_and_reads_all_ranges(tmp_path):
  for name, first in (("a.csv", 0), ("b.csv", 100)):
    rows = [f"{i},{i * 2}" for i in range(first, first + 50)]
    (tmp_path / name).write_text("x,y\n" + "\n".join(rows) + "\n")
  with test_pipeline.TestPipeline() as pipeline:
    blocks = pipeline | sources.ReadCsvBlocks(
        str(tmp_path / "*.csv"), header=True, block_bytes=16, range_bytes=40)
    lines = blocks | beam.FlatMap(lambda b: b.decode().splitlines())
    assert_that(lines, equal_to([f"{i},{i * 2}" for i in range(50)]
                                + [f"{i},{i * 2}" for i in range(100, 150)]))


def test_parse_csv_block_types_values_and_rejects_with_reasons(tiny_dir):
  spec = _tiny_spec(tiny_dir)
  rules = inputs.plan_inputs(spec)["ratings"]
  block = b"\n".join(GOOD_RATINGS[:2] + [raw for raw, _ in BAD_RATINGS[:7]])
  batch, letters, read, blank = parsers.parse_csv_block(rules,
                                                        block + b"\n")
  assert blank == 0
  assert read == 9
  assert batch.num_rows == 2
  assert batch.schema.names == ["user_id", "item_id", "rating", "timestamp",
                                rows_lib.RAW_COLUMN]
  assert batch.column("rating").to_pylist() == [4.0, 3.0]
  assert batch.column("timestamp").to_pylist() == [1000, 2000]
  assert batch.column(rows_lib.RAW_COLUMN).to_pylist() == [
      "u1,m1,4.0,1000", "u1,m2,3.0,2000"]
  assert sorted((l["reason"], l["raw"]) for l in letters) == sorted(
      (reason, raw.decode("utf-8", "backslashreplace"))
      for raw, reason in BAD_RATINGS[:7])
  details = {l["reason"]: l["detail"] for l in letters}
  assert details["wrong_field_count"] == "3 fields, expected 4"
  assert details["label_out_of_range"] == (
      "label 'rating' = 7.0 is outside [1.0, 5.0]")


# ------------------------------------------------- Beam steps, assert_that

JOINED_GOOD = [
    ("u1", "m1", 4.0, 1000, 20, "M", "Action|Comedy"),
    ("u1", "m2", 3.0, 2000, 20, "M", "Drama"),
    ("u2", "m1", 5.0, 3000, 30, "F", "Action|Comedy"),
    ("u2", "m3", 1.0, 4000, 30, "F", ""),
    ("u5", "m2", 2.0, 5000, 50, "F", "Drama"),
]
JOINED_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "age",
                  "gender", "genres")


def _joined_tuples(batch):
  return [tuple(row[c] for c in JOINED_COLUMNS) for row in batch.to_pylist()]


def _letter_key(letter):
  return letter["table"], letter["reason"], letter["raw"]


@pytest.mark.parametrize("how", ["broadcast", "shuffle"])
def test_read_parse_and_join_steps(tiny_dir, how):
  spec = _tiny_spec(tiny_dir)
  spec = dataclasses.replace(spec, joins=tuple(
      dataclasses.replace(join, how=how) for join in spec.joins))
  rules = inputs.plan_inputs(spec)
  with test_pipeline.TestPipeline() as pipeline:
    joined = steps.read_and_join(pipeline, spec, rules)
    assert joined.schema.names == list(JOINED_COLUMNS[:4]) + [
        rows_lib.RAW_COLUMN, "age", "gender", "genres"]
    rows = joined.batches | "Rows" >> beam.FlatMap(_joined_tuples)
    assert_that(rows, equal_to(JOINED_GOOD), label="JoinedRows")
    letters = (joined.dead_letters | "AllDead" >> beam.Flatten()
               | "Key" >> beam.Map(_letter_key))
    assert_that(letters, equal_to(_expected_letters()), label="DeadLetters")
    counts = (joined.counts | "AllCounts" >> beam.Flatten()
              | "Sum" >> beam.CombinePerKey(sum))
    assert_that(counts, equal_to([
        (("read", "ratings"), len(GOOD_RATINGS) + len(BAD_RATINGS) + 1),
        (("blank", "ratings"), 1),
        (("read", "users"), len(USERS)),
        (("read", "items"), len(ITEMS))]), label="ReadCounts")


def _example(features):
  feature = {}
  for name, values in features.items():
    if isinstance(values[0], bytes):
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=values))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=values))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def test_parquet_main_and_tfrecord_side_tables(tiny_dir, tmp_path):
  pq.write_table(pa.table({
      "user_id": ["u1", "u1", "u1", None, "u2", "u1"],
      "item_id": ["m1", "m1", "m2", "m1", "m2", "m2"],
      "rating": [4.0, None, float("nan"), 3.0, 2.0, 2.0],
      "timestamp": pa.array([1000, 2000, 3000, 4000, 5000, 6000], pa.int64()),
  }), str(tmp_path / "ratings.parquet"))
  good_user = _example({"user_id": [b"u1"], "age": [20], "gender": [b"M"],
                        "occupation": [b"x"]})
  records = [
      good_user,
      _example({"user_id": [b"u2"], "gender": [b"F"], "occupation": [b"x"]}),
      _example({"user_id": [b"u3"], "age": [1, 2], "gender": [b"F"],
                "occupation": [b"x"]}),
      b"\x0a\xff\xff not a proto",
  ]
  with tf.io.TFRecordWriter(str(tmp_path / "users.tfrecord")) as writer:
    for record in records:
      writer.write(record)
  raw = yaml.safe_load(TINY_SPEC)
  raw["inputs"]["ratings"] = {
      "format": "parquet", "path": str(tmp_path / "ratings.parquet"),
      "columns": ["user_id", "item_id", "rating", "timestamp"],
      "types": {"rating": "float", "timestamp": "int"}}
  raw["inputs"]["users"].update(format="tfrecord",
                                path=str(tmp_path / "users.tfrecord"))
  del raw["inputs"]["users"]["header"]
  spec = loader.parse_spec(raw, {"DATA_DIR": tiny_dir})
  rules = inputs.plan_inputs(spec)
  with test_pipeline.TestPipeline() as pipeline:
    joined = steps.read_and_join(pipeline, spec, rules)
    rows = joined.batches | "Rows" >> beam.FlatMap(_joined_tuples)
    assert_that(rows, equal_to([
        ("u1", "m1", 4.0, 1000, 20, "M", "Action|Comedy"),
        ("u1", "m2", 2.0, 6000, 20, "M", "Drama")]), label="JoinedRows")
    reasons = (joined.dead_letters | "AllDead" >> beam.Flatten()
               | "Reason" >> beam.Map(lambda l: (l["table"], l["reason"])))
    assert_that(reasons, equal_to([
        ("ratings", "missing_value"),       # null rating
        ("ratings", "non_finite_number"),   # NaN rating
        ("ratings", "missing_value"),       # null user_id
        ("ratings", "rejected_side_row"),   # u2's users record is bad
        ("users", "missing_value"),         # no age
        ("users", "wrong_field_count"),     # two ages
        ("users", "malformed_record"),
        ("items", "wrong_field_count"),
    ]), label="DeadLetters")


# ------------------------------------------------------- the job end to end


def test_bad_input_matrix_end_to_end(tiny_output):
  outputs.require_finished_output(tiny_output)
  letters = _read_letters(tiny_output)
  assert sorted(_letter_key(l) for l in letters) == _expected_letters()
  assert {l["detail"] for l in letters if l["raw"] == "u3,m1,4.0,1000"} == {
      "user_id = 'u3': its row of 'users' was rejected as duplicate_key"}

  with open(os.path.join(tiny_output, "run_report.json")) as handle:
    report = json.load(handle)
  read = report["rows_read"]
  assert read == {"ratings": 18, "users": 6, "items": 4}
  written = report["rows_written"]
  rejected = report["rows_rejected_total"]
  # Counts reconcile: every line read is written, rejected or blank.
  assert report["rows_blank"] == {"ratings": 1, "users": 0, "items": 0}
  assert read["ratings"] == written["train"] + written["eval"] + rejected[
      "ratings"] + report["rows_blank"]["ratings"]
  # The rows the main table lost because their side row was rejected.
  assert report["rows_lost_to_rejected_side_rows"]["ratings"] == {
      "users": 2, "items": 1}
  assert written["train"] + written["eval"] == len(GOOD_RATINGS)
  for table, expected in (("ratings", BAD_RATINGS), ("users", BAD_USERS),
                          ("items", BAD_ITEMS)):
    assert report["rows_rejected"][table] == dict(collections.Counter(
        reason for _, reason in expected))

  for split_name in layout.SPLITS:
    assert len(glob.glob(os.path.join(tiny_output, split_name,
                                      "part-*-of-00002.tfrecord.gz"))) == 2
  train = _read_split(tiny_output, "train")
  evaluation = _read_split(tiny_output, "eval")
  assert len(train["label"]) == written["train"]
  assert len(evaluation["label"]) == written["eval"]
  assert sorted(train["label"] + evaluation["label"]) == [1.0, 2.0, 3.0, 4.0,
                                                          5.0]
  users = _vocabulary(tiny_output, "user")
  train_users = {users[i] for i in train["user"]}
  # The split is by user: no user on both sides, and the same every run.
  expected_eval = {u for u in ("u1", "u2", "u5")
                   if split_lib.eval_fraction_of(u, 1) < 0.3}
  assert train_users == {"u1", "u2", "u5"} - expected_eval
  assert len(evaluation["label"]) == sum(
      1 for raw in GOOD_RATINGS if raw.split(b",")[0].decode() in
      expected_eval)
  # Vocabularies come from train rows only.
  assert sorted(users) == sorted(train_users)
  infos = feature_info_lib.read_feature_info(tiny_output)
  assert infos["user"].size == len(users) + 1
  assert infos["age_x_gender"].size == 16


# u1 and u5 fall below this split fraction, u2 above: 3 eval rows, 2 train.
RAW_EVAL_FRACTION = 0.8


@pytest.fixture(scope="module")
def raw_eval_run(tiny_dir, tmp_path_factory):
  """The tiny job through the Python API, with raw_eval: (output, report)."""
  folder = tmp_path_factory.mktemp("raw_eval")
  spec_path = folder / "spec.yaml"
  spec_path.write_text(TINY_SPEC.replace(
      "eval_fraction: 0.3", f"eval_fraction: {RAW_EVAL_FRACTION}"))
  output = str(folder / "preprocessed")
  report = preprocess.preprocess(preprocess.PreprocessOptions(
      spec=str(spec_path), output=output, env=(("DATA_DIR", tiny_dir),),
      raw_eval=True))
  return output, report


def test_preprocess_returns_the_run_report(raw_eval_run):
  output, report = raw_eval_run
  outputs.require_finished_output(output)
  with open(layout.PreprocessedLayout(output).report) as handle:
    assert json.load(handle) == report
  assert report["output"] == output
  assert report["rows_read"] == {"ratings": 18, "users": 6, "items": 4}
  assert report["rows_written"] == {"train": 2, "eval": 3}
  assert report["raw_rows_written"] == {layout.RAW_EVAL: 3}
  # The raw copy is not counted as written rows: read = written + rejected
  # + blank lines.
  assert report["rows_read"]["ratings"] == sum(
      report["rows_written"].values()) + report["rows_rejected_total"][
          "ratings"] + report["rows_blank"]["ratings"]
  # Temporary files are gone; the raw rows sit beside the splits.
  assert sorted(os.listdir(output)) == sorted([
      layout.SUCCESS_FILE, layout.RUN_REPORT_FILE, layout.DEAD_LETTER_DIR,
      "feature_info.json", "transform_fn", "transformed_metadata",
      "metadata", layout.TRAIN, layout.EVAL, layout.RAW_EVAL])


def test_raw_eval_rows_are_the_eval_splits_rows_untransformed(tiny_dir,
                                                             raw_eval_run):
  output, report = raw_eval_run
  spec = _tiny_spec(tiny_dir)
  dtypes = {"string": tf.string, "int": tf.int64, "float": tf.float32}
  columns = spec.raw_column_types()
  shards = sorted(glob.glob(layout.PreprocessedLayout(output).shard_pattern(
      layout.RAW_EVAL)))
  assert shards
  records = [r.numpy() for r in tf.data.TFRecordDataset(
      shards, compression_type="GZIP")]
  assert len(records) == report["rows_written"]["eval"] == 3
  # Exactly the columns preprocessing_fn reads, label included.
  for record in records:
    assert set(tf.train.Example.FromString(record).features.feature) == set(
        columns)
  parsed = tf.io.parse_example(records, {
      name: tf.io.FixedLenFeature([], dtypes[column_type])
      for name, column_type in columns.items()})
  rows = sorted(zip(
      [v.decode() for v in parsed["user_id"].numpy()],
      [v.decode() for v in parsed["item_id"].numpy()],
      parsed["rating"].numpy().tolist(), parsed["timestamp"].numpy().tolist()))
  expected = sorted(
      (user, item, float(rating), int(stamp))
      for user, item, rating, stamp in (
          raw.decode().split(",") for raw in GOOD_RATINGS)
      if split_lib.eval_fraction_of(user, 1) < RAW_EVAL_FRACTION)
  assert rows == expected
  # The same rows, and so the same labels, as the transformed eval split.
  assert sorted(_read_split(output, layout.EVAL)["label"]) == sorted(
      row[2] for row in expected)


def test_too_many_rejections_fail_and_nothing_is_accepted(tiny_dir,
                                                          tmp_path):
  output = str(tmp_path / "out")
  with pytest.raises(counts_lib.RejectedRowsError) as raised:
    preprocess.run(["--spec", os.path.join(tiny_dir, "spec.yaml"),
                    "--env", f"DATA_DIR={tiny_dir}", "--output", output,
                    "--max_rejected_fraction", "0.5"])
  message = str(raised.value)
  # users: 3 of 6 rejected is not above 0.5; ratings: 12 of 17 is.
  assert "input 'ratings': 12 of 17 rows (70.59%) were rejected" in message
  assert "rejected_side_row: 3" in message
  assert ("1 lost because their row of 'items' was rejected; 2 lost because "
          "their row of 'users' was rejected") in message
  assert not os.path.exists(output)
  with pytest.raises(outputs.UnfinishedOutputError):
    outputs.require_finished_output(output)
  # The staging directory stays for its dead letters, and is not accepted.
  staging = glob.glob(str(tmp_path / ".out.staging-*"))
  assert len(staging) == 1 and staging[0] in message
  assert len(_read_letters(staging[0])) == len(_expected_letters())
  with pytest.raises(outputs.UnfinishedOutputError):
    outputs.require_finished_output(staging[0])


def test_killed_run_leaves_no_accepted_output(tiny_dir, tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  (output / "previous.txt").write_text("a finished earlier run")
  (output / layout.SUCCESS_FILE).write_text("{}")
  process = subprocess.Popen(
      [sys.executable, "-m", "pipelines.preprocess",
       "--spec", os.path.join(tiny_dir, "spec.yaml"),
       "--env", f"DATA_DIR={tiny_dir}", "--output", str(output)],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    staging = []
    # Kill it once Beam has started writing into the staging directory.
    while time.time() < deadline and process.poll() is None:
      staging = glob.glob(str(tmp_path / ".out.staging-*"))
      if staging and os.listdir(staging[0]):
        break
      time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    assert staging and os.listdir(staging[0])
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == -signal.SIGKILL
  # The earlier output is untouched and the partial one is not accepted.
  assert sorted(os.listdir(output)) == [layout.SUCCESS_FILE, "previous.txt"]
  assert outputs.require_finished_output(str(output)) == str(output)
  with pytest.raises(outputs.UnfinishedOutputError, match="_SUCCESS"):
    outputs.require_finished_output(staging[0])
  assert not glob.glob(os.path.join(staging[0], "**", layout.SUCCESS_FILE),
                       recursive=True)


def test_missing_empty_and_inconsistent_inputs_fail_before_beam(
    tiny_dir, tmp_path, monkeypatch):
  monkeypatch.delenv("DATA_DIR", raising=False)
  spec_path = os.path.join(tiny_dir, "spec.yaml")
  args = ["--spec", spec_path, "--output", str(tmp_path / "out")]
  with pytest.raises(inputs.InputError, match="no file matches"):
    preprocess.run(args + ["--env", f"DATA_DIR={tmp_path / 'nowhere'}"])
  empty = tmp_path / "empty"
  _write_tiny(empty)
  (empty / "ratings.csv").write_bytes(b"")
  with pytest.raises(inputs.InputError, match="is empty"):
    preprocess.run(args + ["--env", f"DATA_DIR={empty}"])
  (empty / "ratings.csv").write_text("user_id,item,rating,timestamp\n1,2,3,4\n")
  with pytest.raises(inputs.InputError,
                     match=r"lacks column\(s\) \['item_id'\]"):
    preprocess.run(args + ["--env", f"DATA_DIR={empty}"])
  utf16 = tmp_path / "utf16"
  _write_tiny(utf16)
  spec_text = (utf16 / "spec.yaml").read_text().replace(
      "    header: true\n    key: user_id",
      "    header: true\n    encoding: utf-16\n    key: user_id")
  (utf16 / "spec.yaml").write_text(spec_text)
  with pytest.raises(inputs.InputError, match="utf-16.*not ASCII"):
    preprocess.run(["--spec", str(utf16 / "spec.yaml"), "--output",
                    str(tmp_path / "out"), "--env", f"DATA_DIR={utf16}"])
  with pytest.raises(spec_lib.SpecError, match="DATA_DIR"):
    preprocess.run(args)
  assert preprocess.main(args) == 1
  assert not os.path.exists(tmp_path / "out")
  assert not glob.glob(str(tmp_path / ".out.staging-*"))


def test_rejection_check_and_empty_train_split():
  summary = counts_lib.summarize_counts({
      ("read", "main"): 100, ("read", "side"): 10,
      ("rejected", "main", "empty_key"): 1,
      ("rejected", "side", "duplicate_key"): 2,
      ("written", "train"): 80, ("written", "eval"): 19}, ["main", "side"])
  assert summary["rows_rejected"] == {"main": {"empty_key": 1},
                                      "side": {"duplicate_key": 2}}
  counts_lib.check_rejections(summary, "main", 0.2)
  with pytest.raises(counts_lib.RejectedRowsError,
                     match=r"input 'side': 2 of 10 rows \(20.00%\)"):
    counts_lib.check_rejections(summary, "main", 0.1)
  empty = counts_lib.summarize_counts({("read", "main"): 0}, ["main"])
  with pytest.raises(counts_lib.EmptyInputError, match="'main' has no rows"):
    counts_lib.check_rejections(empty, "main", 1.0)
  no_train = counts_lib.summarize_counts(
      {("read", "main"): 5, ("written", "eval"): 5}, ["main"])
  with pytest.raises(counts_lib.EmptyInputError, match="train split"):
    counts_lib.check_rejections(no_train, "main", 1.0)


# ------------------------------------------------------- split, sink, outputs


def test_split_hash_is_fixed_and_close_to_the_fraction():
  # blake2b of "<seed>:<key>": the same on every machine and Python run.
  assert split_lib.eval_fraction_of("u1", 7) == pytest.approx(
      0.8471755337934456, abs=1e-15)
  keys = pa.array([f"u{i}" for i in range(20000)] + ["u1"] * 5)
  mask = split_lib.eval_mask(keys, 0.2, 7)
  assert mask[-5:].tolist() == [False] * 5
  assert abs(mask[:20000].mean() - 0.2) < 0.01
  ints = split_lib.eval_mask(pa.array([1, 42]), 0.5, 0)
  assert ints.tolist() == [split_lib.eval_fraction_of("1", 0) < 0.5,
                           split_lib.eval_fraction_of("42", 0) < 0.5]


@pytest.mark.parametrize("suffix", [".tfrecord.gz", ".tfrecord"])
def test_batched_tfrecord_sink_round_trips(tmp_path, suffix):
  batches = [[b"a", b"bb" * 300], [], [bytes(range(256)) * 3]]
  with test_pipeline.TestPipeline() as pipeline:
    _ = (pipeline | beam.Create(batches)
         | beam.Map(sinks.frame_records)
         | sinks.WriteFramedTFRecords(str(tmp_path / "part"), suffix,
                                      num_shards=2))
  files = sorted(glob.glob(str(tmp_path / f"part-*{suffix}")))
  assert len(files) == 2
  compression = "GZIP" if suffix.endswith(".gz") else ""
  for path in files:
    with open(path, "rb") as handle:
      assert (handle.read(2) == b"\x1f\x8b") == bool(compression)
  records = [r.numpy() for r in tf.data.TFRecordDataset(
      files, compression_type=compression)]
  assert sorted(records) == sorted(r for batch in batches for r in batch)


def test_commit_replaces_output_and_require_checks_success(tmp_path):
  output = str(tmp_path / "out")
  with pytest.raises(outputs.UnfinishedOutputError, match="does not exist"):
    outputs.require_finished_output(output)
  first = outputs.new_staging_dir(output)
  with open(os.path.join(first, "a.txt"), "w") as handle:
    handle.write("1")
  with pytest.raises(outputs.UnfinishedOutputError, match="_SUCCESS"):
    outputs.require_finished_output(first)
  outputs.commit(first, output, {"run": 1})
  assert sorted(os.listdir(output)) == ["_SUCCESS", "a.txt"]
  second = outputs.new_staging_dir(output)
  with open(os.path.join(second, "b.txt"), "w") as handle:
    handle.write("2")
  outputs.commit(second, output, {"run": 2})
  assert sorted(os.listdir(output)) == ["_SUCCESS", "b.txt"]
  assert outputs.require_finished_output(output) == output
  assert sorted(os.listdir(tmp_path)) == ["out"]
  # The file-by-file move used for gs:// and other object stores.
  third = outputs.new_staging_dir(output)
  os.makedirs(os.path.join(third, "train"))
  with open(os.path.join(third, "train", "part-0"), "w") as handle:
    handle.write("3")
  outputs.commit(third, output, {"run": 3}, per_file=True)
  assert sorted(os.listdir(output)) == ["_SUCCESS", "train"]
  assert os.listdir(os.path.join(output, "train")) == ["part-0"]
  with open(os.path.join(output, "_SUCCESS")) as handle:
    assert json.load(handle) == {"run": 3}
  assert sorted(os.listdir(tmp_path)) == ["out"]


# ------------------------------------------------------ MovieLens 100K, u1


def _ml100k_raw(ml100k_dir):
  def read(name, delimiter, encoding="latin-1"):
    with open(os.path.join(ml100k_dir, name), encoding=encoding) as handle:
      return [line.rstrip("\n").split(delimiter) for line in handle
              if line.strip()]
  return (read("u1.base", "\t"), read("u1.test", "\t"), read("u.user", "|"),
          read("u.item", "|"))


def test_ml100k_u1_end_to_end(ml100k_dir, ml100k_preprocessed):
  base, test, users, items = _ml100k_raw(ml100k_dir)
  output = outputs.require_finished_output(ml100k_preprocessed)
  with open(os.path.join(output, "run_report.json")) as handle:
    report = json.load(handle)
  assert report["rows_read"] == {"ratings": len(base) + len(test),
                                 "users": len(users), "items": len(items)}
  assert report["rows_written"] == {"train": 80000, "eval": 20000}
  assert report["rows_rejected_total"] == {"ratings": 0, "users": 0,
                                           "items": 0}
  # Every movie is named after its title, grouped by its first genre.
  with open(layout.PreprocessedLayout(output).names("movie"),
            encoding="utf-8") as handle:
    names = handle.read().splitlines()
  assert names[:2] == ["token\tname\tgroup", "1\tToy Story (1995)\tAnimation"]
  assert len(names) == 1 + len(items)

  base_users = {row[0] for row in base}
  base_items = {row[1] for row in base}
  user_rows = {row[0]: row for row in users}
  genre_flags = [row[5:] for row in items if row[0] in base_items]
  genre_counts = {row[0]: row[5:].count("1") for row in items}
  expected = {
      "user": len(base_users),
      "movie": len(base_items),
      "gender": len({user_rows[u][2] for u in base_users}),
      "occupation": len({user_rows[u][3] for u in base_users}),
      "genres": sum(1 for g in range(19)
                    if any(flags[g] == "1" for flags in genre_flags)),
  }
  assert expected["gender"] == 2 and expected["genres"] == 19
  assert report["vocabulary_sizes"] == expected
  infos = feature_info_lib.read_feature_info(output)
  for name, size in expected.items():
    assert infos[name].size == size + 1
    assert infos[name].vocabulary_size == size
  assert infos["genres"].multivalent and not infos["user"].multivalent
  assert report["embedding_dims"]["user"] == infos["user"].embedding_dim

  vocabulary = _vocabulary(output, "user")
  assert sorted(vocabulary) == sorted(base_users)
  for split_name, raw in (("train", base), ("eval", test)):
    columns = _read_split(output, split_name)
    assert len(columns["label"]) == len(raw)
    assert sum(columns["label"]) == sum(float(row[2]) for row in raw)
    decoded = collections.Counter(
        vocabulary[i] if i < len(vocabulary) else "<oov>"
        for i in columns["user"])
    assert decoded == collections.Counter(
        row[0] if row[0] in base_users else "<oov>" for row in raw)
    assert all(0 <= i < 168 for i in columns["day_x_hour"])
    # Every genre flag of every rated movie became one token id.
    assert sum(len(ids) for ids in columns["genres"]) == sum(
        genre_counts[row[1]] for row in raw)
    assert all(0 <= i < infos["genres"].size
               for ids in columns["genres"] for i in ids)


def test_synthetic_split_by_rating_keeps_eval_users_known(
    synthetic_preprocessed):
  with open(os.path.join(synthetic_preprocessed, "run_report.json")) as f:
    report = json.load(f)
  written = report["rows_written"]
  assert written["train"] + written["eval"] == report["rows_read"]["ratings"]
  assert abs(written["eval"] / report["rows_read"]["ratings"] - 0.2) < 0.05
  train = _read_split(synthetic_preprocessed, "train")
  evaluation = _read_split(synthetic_preprocessed, "eval")
  oov = len(_vocabulary(synthetic_preprocessed, "user"))
  # The key is (user_id, item_id): a rating is on one side, its user on both.
  eval_oov = sum(1 for user in evaluation["user"] if user == oov)
  assert eval_oov / len(evaluation["user"]) < 0.02
  train_pairs = set(zip(train["user"], train["movie"]))
  eval_pairs = set(zip(evaluation["user"], evaluation["movie"]))
  assert not {(u, m) for u, m in train_pairs & eval_pairs if u != oov}
