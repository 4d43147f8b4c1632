"""Inputs from BigQuery (a table or a query) for `embeddings preprocess`.

Offline, with no credentials:

* the spec's `format: bigquery` validates (exactly one of table/query, no
  file fields), with exact messages naming the table and the field;
* what `check_inputs` and `check_bigquery_options` do before any Beam work;
* the step after Beam's ReadFromBigQuery (row dicts -> lists -> typed
  RecordBatches and dead letters) runs in a TestPipeline on row dicts like
  the ones ReadFromBigQuery yields (beam.Create stands in for BigQuery),
  with NULLs, bad values and the read = written + rejected counts;
* the complete Dataflow job for the shipped BigQuery MovieLens spec is built
  with Beam's DataflowRunner --dry_run, and its graph reads each table with
  BigQuery's export source, then joins, analyzes, transforms and writes.
"""

import base64
import datetime
import decimal
import json
import os

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import counts as counts_lib
from pipelines import inputs
from pipelines import parsers
from pipelines import preprocess
from pipelines import rows as rows_lib
from pipelines import runners
from pipelines import sources
from pipelines import steps
from transforms import loader
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
BQ_CONFIG = os.path.join(CONFIGS, "movielens100k_bigquery.yaml")


def _base():
  """A valid spec whose main table is a BigQuery query."""
  return {
      "name": "bq",
      "inputs": {
          "ratings": {"format": "bigquery",
                      "query": "SELECT * FROM `my-project.ml.ratings`",
                      "columns": ["user_id", "item_id", "rating", "ts",
                                  "genres"],
                      "types": {"rating": "float", "ts": "int"}},
          "users": {"format": "csv", "path": "users.csv", "key": "user_id",
                    "columns": ["user_id", "age"], "types": {"age": "int"}},
      },
      "main": "ratings",
      "joins": [{"table": "users", "by": "user_id"}],
      "split": {"key": ["user_id", "item_id"], "eval_fraction": 0.2},
      "label": {"column": "rating", "min": 1, "max": 5},
      "features": [
          {"name": "user", "kind": "vocabulary", "source": "user_id"},
          {"name": "item", "kind": "vocabulary", "source": "item_id"},
          {"name": "genres", "kind": "tokens", "source": "genres",
           "delimiter": "|"},
          {"name": "day", "kind": "day_of_week", "source": "ts"},
          {"name": "age", "kind": "bucketized", "source": "age",
           "num_buckets": 3},
      ],
  }


def _ratings(raw):
  return raw["inputs"]["ratings"]


# --- the spec -----------------------------------------------------------------

def test_bigquery_query_input_parses():
  spec = loader.parse_spec(_base())
  table = spec.main_table
  assert table.format == "bigquery" and table.is_bigquery
  assert table.query == "SELECT * FROM `my-project.ml.ratings`"
  assert table.use_standard_sql is True
  assert (table.path, table.table, table.eval_path) == (None, None, None)
  assert table.bigquery_project is None
  assert table.types == {"user_id": "string", "item_id": "string",
                         "rating": "float", "ts": "int", "genres": "string"}
  assert not spec.inputs["users"].is_bigquery


def test_bigquery_legacy_query_and_multiline_yaml_query(tmp_path):
  raw = _base()
  _ratings(raw)["query"] = ("SELECT user_id, item_id, rating, ts, genres\n"
                            "FROM [my-project:ml.ratings]\n")
  _ratings(raw)["use_standard_sql"] = False
  path = tmp_path / "spec.yaml"
  path.write_text(yaml.safe_dump(raw))
  table = loader.load_spec(str(path)).main_table
  assert table.query == ("SELECT user_id, item_id, rating, ts, genres\n"
                         "FROM [my-project:ml.ratings]")
  assert table.use_standard_sql is False


@pytest.mark.parametrize("reference,project", [
    ("my-project:movielens.ratings", "my-project"),
    ("my-project.movielens.ratings", "my-project"),
    ("example.com:my-project.movielens.ratings", "example.com:my-project"),
    ("movielens.ratings", None),
    ("movielens.ratings$20240107", None),
])
def test_bigquery_table_references(reference, project):
  from apache_beam.io.gcp import bigquery_tools
  raw = _base()
  del _ratings(raw)["query"]
  _ratings(raw)["table"] = reference
  table = loader.parse_spec(raw).main_table
  assert (table.table, table.query) == (reference, None)
  assert table.bigquery_project == project
  # Beam's own parser reads the same project, dataset and table.
  parsed = bigquery_tools.parse_table_reference(reference)
  assert parsed.projectId == project
  assert parsed.datasetId == "movielens"
  assert parsed.tableId.startswith("ratings")


def test_bigquery_table_and_query_expand_variables(monkeypatch):
  monkeypatch.setenv("BQ_DATASET", "from-env.ml")
  raw = _base()
  _ratings(raw)["query"] = "SELECT * FROM `${BQ_DATASET}.ratings`"
  spec = loader.parse_spec(raw, {"BQ_DATASET": "override.ml"})
  assert spec.main_table.query == "SELECT * FROM `override.ml.ratings`"
  raw["inputs"]["users"] = {"format": "bigquery", "key": "user_id",
                            "table": "${BQ_DATASET}.users",
                            "columns": ["user_id", "age"],
                            "types": {"age": "int"}}
  spec = loader.parse_spec(raw)
  assert spec.inputs["users"].table == "from-env.ml.users"
  assert spec.inputs["users"].bigquery_project == "from-env"


def _set(input_name, **fields):
  def change(raw):
    raw["inputs"][input_name].update(fields)
  return change


def _drop(table, field):
  def change(raw):
    del raw["inputs"][table][field]
  return change


def _both(raw):
  _ratings(raw)["table"] = "my-project:ml.ratings"


def _neither(raw):
  del _ratings(raw)["query"]


def _table_with_sql_dialect(raw):
  del _ratings(raw)["query"]
  _ratings(raw).update(table="my-project:ml.ratings", use_standard_sql=True)


def _no_split(raw):
  del raw["split"]


BQ_ERRORS = [
    ("both_table_and_query", _both,
     "input 'ratings': format 'bigquery' needs exactly one of field 'table' "
     "or field 'query', got both"),
    ("neither_table_nor_query", _neither,
     "input 'ratings': format 'bigquery' needs exactly one of field 'table' "
     "or field 'query', got neither"),
    ("path_given", _set("ratings", path="gs://b/ratings.csv"),
     "input 'ratings': field(s) ['path'] do not apply to format 'bigquery'"),
    ("file_fields_given", _set("ratings", eval_path="e.csv", delimiter="\t",
                               header=True),
     "input 'ratings': field(s) ['delimiter', 'eval_path', 'header'] do not "
     "apply to format 'bigquery'"),
    ("table_on_csv", _set("users", table="my-project:ml.users"),
     "input 'users': field(s) ['table'] do not apply to format 'csv'"),
    ("query_on_parquet", _set("users", format="parquet", query="SELECT 1",
                              use_standard_sql=False),
     "input 'users': field(s) ['query', 'use_standard_sql'] do not apply to "
     "format 'parquet'"),
    ("path_missing_on_csv", _drop("users", "path"),
     "input 'users': missing required field 'path'"),
    ("malformed_table", lambda raw: (_neither(raw), _ratings(raw).update(
        table="ratings")),
     "input 'ratings': field 'table' must be PROJECT:DATASET.TABLE, "
     "PROJECT.DATASET.TABLE or DATASET.TABLE, got 'ratings'"),
    ("sql_dialect_with_table", _table_with_sql_dialect,
     "input 'ratings': field 'use_standard_sql' applies only to field "
     "'query'"),
    ("sql_dialect_not_boolean", _set("ratings", use_standard_sql="yes"),
     "input 'ratings': field 'use_standard_sql' must be true or false, got "
     "'yes'"),
    ("blank_query", _set("ratings", query="  "),
     "input 'ratings': field 'query' must be a non-empty string, got '  '"),
    ("query_not_text", _set("ratings", query=["SELECT 1"]),
     "input 'ratings': field 'query' must be a non-empty string, got "
     "['SELECT 1']"),
    ("unset_variable", _set("ratings", query="SELECT * FROM `${BQ_UNSET}.r`"),
     "input 'ratings': field 'query': environment variable ${BQ_UNSET} is "
     "not set (set it, or give a default as ${BQ_UNSET:-value})"),
    ("unknown_format", _set("ratings", format="bq"),
     "input 'ratings': field 'format' must be one of ('csv', 'parquet', "
     "'tfrecord', 'bigquery'), got 'bq'"),
    ("bigquery_main_needs_split", _no_split,
     "spec: missing required field 'split'"),
]


@pytest.mark.parametrize("change,message", [case[1:] for case in BQ_ERRORS],
                         ids=[case[0] for case in BQ_ERRORS])
def test_wrong_bigquery_input_fails_naming_table_and_field(change, message,
                                                           monkeypatch):
  monkeypatch.delenv("BQ_UNSET", raising=False)
  raw = _base()
  change(raw)
  with pytest.raises(spec_lib.SpecError) as error:
    loader.parse_spec(raw)
  assert str(error.value) == message


def test_shipped_bigquery_config_matches_the_file_config():
  spec = loader.load_spec(BQ_CONFIG, {"BQ_DATASET": "my-project.movielens"})
  files = loader.load_spec(os.path.join(CONFIGS, "movielens100k.yaml"),
                             {"ML100K_DIR": "/data", "ML100K_FOLD": "u1"})
  ratings = spec.main_table
  assert ratings.query == ("SELECT user_id, item_id, rating, `timestamp` "
                           "FROM `my-project.movielens.ratings`")
  assert ratings.use_standard_sql is True
  assert spec.inputs["users"].table == "my-project.movielens.users"
  assert spec.inputs["items"].table == "my-project.movielens.items"
  for name in ("ratings", "users", "items"):
    table = spec.inputs[name]
    assert table.is_bigquery and table.path is None
    assert (table.columns, table.types, table.key) == (
        files.inputs[name].columns, files.inputs[name].types,
        files.inputs[name].key)
  # Same features, label, joins and model: only where rows come from and
  # how they split differ.
  assert spec.features == files.features
  assert (spec.label, spec.joins, spec.model) == (
      files.label, files.joins, files.model)
  assert spec.split == spec_lib.Split(key=("user_id", "item_id"),
                                      eval_fraction=0.2, seed=0)
  with pytest.raises(spec_lib.SpecError,
                     match=r"input 'ratings': field 'query': environment "
                           r"variable \$\{BQ_DATASET\} is not set"):
    loader.load_spec(BQ_CONFIG, {})


# --- before any Beam work -----------------------------------------------------

def test_check_inputs_skips_bigquery_tables_and_still_checks_files(tmp_path):
  raw = _base()
  users = tmp_path / "users.csv"
  users.write_text("u1,20\n")
  raw["inputs"]["users"]["path"] = str(users)
  spec = loader.parse_spec(raw)
  assert inputs.check_inputs(spec) == {
      "ratings": {"paths": [], "header": None},
      "users": {"paths": [str(users)], "header": None}}
  rules = inputs.plan_inputs(spec)
  assert rules["ratings"].columns == ("user_id", "item_id", "rating", "ts",
                                      "genres")
  assert rules["ratings"].nonempty == {"user_id", "item_id"}
  users.write_text("")
  with pytest.raises(inputs.InputError,
                     match="input 'users': every file matching"):
    inputs.check_inputs(spec)


def _options(*args):
  return PipelineOptions(list(args))


def test_bigquery_reads_need_a_gcs_temp_location_and_a_project():
  spec = loader.parse_spec(_base())
  with pytest.raises(inputs.InputError) as error:
    inputs.check_bigquery_options(spec, _options("--project", "p"))
  assert str(error.value) == (
      "input 'ratings': a BigQuery read exports to Cloud Storage; give "
      "--temp_location gs://BUCKET/PATH (got None)")
  with pytest.raises(inputs.InputError) as error:
    inputs.check_bigquery_options(
        spec, _options("--project", "p", "--temp_location", "/tmp/beam"))
  assert "(got '/tmp/beam')" in str(error.value)
  with pytest.raises(inputs.InputError) as error:
    inputs.check_bigquery_options(
        spec, _options("--temp_location", "gs://b/tmp"))
  assert str(error.value) == (
      "input 'ratings': a BigQuery query runs its jobs in --project; give "
      "--project PROJECT")
  inputs.check_bigquery_options(
      spec, _options("--temp_location", "gs://b/tmp", "--project", "p"))

  raw = _base()
  del _ratings(raw)["query"]
  _ratings(raw)["table"] = "ml.ratings"
  with pytest.raises(inputs.InputError) as error:
    inputs.check_bigquery_options(loader.parse_spec(raw),
                                  _options("--temp_location", "gs://b/t"))
  assert str(error.value) == (
      "input 'ratings': a BigQuery table without a project runs its jobs in "
      "--project; give --project PROJECT")
  _ratings(raw)["table"] = "my-project:ml.ratings"
  inputs.check_bigquery_options(loader.parse_spec(raw),
                                _options("--temp_location", "gs://b/t"))
  # File inputs need neither.
  raw = _base()
  _ratings(raw).pop("query")
  _ratings(raw).update(format="csv", path="r.csv")
  inputs.check_bigquery_options(loader.parse_spec(raw), _options())


def _display_data(transform):
  items = {}
  for entry in transform.get("displayData", []):
    payload = beam_runner_api_pb2.LabelledPayload.FromString(
        base64.b64decode(entry["payload"]))
    items[payload.key] = getattr(payload, payload.WhichOneof("value"))
  return items


def _transforms_named(pipeline_json, suffix):
  return {t["uniqueName"]: t
          for t in pipeline_json["components"]["transforms"].values()
          if t["uniqueName"].endswith(suffix)}


@pytest.mark.parametrize("source,expected", [
    ({"table": "my-project:ml.ratings"},
     {"query": "None", "method": "EXPORT", "export_file_format": "AVRO"}),
    ({"query": "SELECT 1 AS x"},
     {"query": "SELECT 1 AS x", "use_legacy_sql": False, "table": "None",
      "method": "EXPORT"}),
    ({"query": "SELECT 1 AS x", "use_standard_sql": False},
     {"query": "SELECT 1 AS x", "use_legacy_sql": True}),
])
def test_reader_uses_beams_bigquery_export_read(source, expected):
  from google.protobuf import json_format
  raw = _base()
  del _ratings(raw)["query"]
  _ratings(raw).update(source)
  table = loader.parse_spec(raw).main_table
  # Only the graph is built: nothing runs, so nothing reaches BigQuery.
  pipeline = beam.Pipeline(options=_options(
      "--project", "my-project", "--temp_location", "gs://b/tmp"))
  _ = sources.read_table(pipeline, table, None, "ReadMain")
  proto = json_format.MessageToDict(pipeline.to_runner_api())
  reads = _transforms_named(proto, "/Read")
  assert list(reads) == ["ReadMain/ReadFromBigQuery/Read"]
  read = reads["ReadMain/ReadFromBigQuery/Read"]
  assert read["spec"]["urn"] == "beam:transform:read:v1"
  data = _display_data(read)
  assert data["source"] == "apache_beam.io.gcp.bigquery._CustomBigQuerySource"
  for key, value in expected.items():
    assert data[key] == value, key
  if "table" in source:
    assert "projectId: 'my-project'" in data["table"]
    assert "tableId: 'ratings'" in data["table"]
  assert _transforms_named(proto, "ReadMain/BatchRows")


# --- row dicts -> typed batches, dead letters, counts -----------------------

def _row(user_id, item_id, rating, ts, genres, **extra):
  return {"user_id": user_id, "item_id": item_id, "rating": rating, "ts": ts,
          "genres": genres, **extra}


UTC_2024 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
NO_ITEM = {"user_id": "u8", "rating": 4.0, "ts": 881250949, "genres": "War"}

# (row dict as ReadFromBigQuery yields it, expected typed row or None,
#  (reason, detail) when rejected)
BQ_ROWS = [
    (_row("u1", "m1", 4.0, 881250949, "Action|Comedy"),
     ("u1", "m1", 4.0, 881250949, "Action|Comedy"), None),
    # INT64 ids become their text; a NULL string is the empty field.
    (_row(17, "m2", 3, 881250950, None),
     ("17", "m2", 3.0, 881250950, ""), None),
    (_row("u3", "m3", "abc", 881250950, "Drama"), None,
     ("unparsable_number", "column 'rating': 'abc' is not float")),
    (_row(None, "m4", 4.0, 881250950, "Drama"), None,
     ("empty_key", "key column 'user_id' is empty")),
    (_row("u5", "m5", 4.5, None, "Drama"), None,
     ("missing_value", "column 'ts' has no value")),
    (_row("u6", "m6", 9.0, 881250950, "Drama"), None,
     ("label_out_of_range", "label 'rating' = 9.0 is outside [1.0, 5.0]")),
    # NUMERIC arrives as Decimal; a whole FLOAT64 fits an int column.
    (_row("u7", "m7", decimal.Decimal("3.5"), 881250951.0, "Drama"),
     ("u7", "m7", 3.5, 881250951, "Drama"), None),
    (NO_ITEM, None,
     ("missing_value", "column 'item_id' is not in the BigQuery row")),
    # A TIMESTAMP is not unix seconds: select UNIX_SECONDS(ts) instead.
    (_row("u9", "m9", 2.0, UTC_2024, "Drama"), None,
     ("unparsable_number", f"column 'ts': {UTC_2024!r} is not int")),
    (_row("u10", "m10", 2.0, 881250952, ["Drama"]), None,
     ("wrong_field_count", "column 'genres' is a REPEATED or RECORD value, "
                           "expected one value")),
    (_row("u11", "m11", float("nan"), 881250952, "Drama"), None,
     ("non_finite_number", "column 'rating' is nan")),
    (_row("u12", 12, 5.0, 881250953, "Drama", extra="not in the spec"),
     ("u12", "12", 5.0, 881250953, "Drama"), None),
]


def _ratings_rules():
  """The ratings table's rules in a spec without the side table."""
  raw = _base()
  del raw["inputs"]["users"], raw["joins"]
  raw["features"] = [f for f in raw["features"] if f["name"] != "age"]
  return inputs.plan_inputs(loader.parse_spec(raw))["ratings"]


def _raw_json(row):
  kept = {k: v for k, v in row.items() if k != "extra"}
  return json.dumps(kept, default=str, sort_keys=True)


def _typed_rows(batch):
  return [(r["user_id"], r["item_id"], r["rating"], r["ts"], r["genres"],
           r[rows_lib.RAW_COLUMN]) for r in batch.to_pylist()]


def _letter_tuple(letter):
  return letter["table"], letter["reason"], letter["detail"], letter["raw"]


def test_bigquery_rows_parse_into_batches_and_dead_letters():
  rules = _ratings_rules()
  rows = [row for row, _, _ in BQ_ROWS]
  good = [expected + (_raw_json(row),)
          for row, expected, _ in BQ_ROWS if expected is not None]
  bad = [("ratings",) + rejected + (_raw_json(row),)
         for row, _, rejected in BQ_ROWS if rejected is not None]
  assert len(good) + len(bad) == len(rows) == 12

  with test_pipeline.TestPipeline() as pipeline:
    raw = (pipeline
           | "BigQueryRows" >> beam.Create(rows)
           | "BatchRows" >> sources.BatchRowDicts(batch_size=5))
    parsed = steps.parse_table(raw, spec_lib.BIGQUERY, rules, None, "Main")
    assert_that(parsed.rows | "Typed" >> beam.FlatMap(_typed_rows),
                equal_to(good), label="Rows")
    schemas_ok = (parsed.rows
                  | "Schema" >> beam.Map(
                      lambda batch: batch.schema.equals(rules.schema))
                  | "AllSchemas" >> beam.CombineGlobally(all))
    assert_that(schemas_ok, equal_to([True]), label="Schemas")
    assert_that(parsed.dead_letters | "Letters" >> beam.Map(_letter_tuple),
                equal_to(bad), label="DeadLetters")
    # The run report's counts: read = written + rejected, per reason.
    written = parsed.rows | "Written" >> beam.Map(
        lambda batch: (("rows_out", "ratings"), batch.num_rows))
    rejected = parsed.dead_letters | "CountDead" >> beam.ParDo(
        steps.CountDeadLetters())
    counts = ((parsed.counts, written, rejected)
              | "AllCounts" >> beam.Flatten()
              | "Sum" >> beam.CombinePerKey(sum))
    assert_that(counts, equal_to([
        (("read", "ratings"), 12),
        (("rows_out", "ratings"), 4),
        (("rejected", "ratings", "empty_key"), 1),
        (("rejected", "ratings", "label_out_of_range"), 1),
        (("rejected", "ratings", "missing_value"), 2),
        (("rejected", "ratings", "non_finite_number"), 1),
        (("rejected", "ratings", "unparsable_number"), 2),
        (("rejected", "ratings", "wrong_field_count"), 1),
    ]), label="Counts")


def test_parse_row_dicts_reconciles_without_beam():
  rules = _ratings_rules()
  batch, letters, read, _ = parsers.parse_row_dicts(
      rules, [row for row, _, _ in BQ_ROWS])
  assert read == 12 == batch.num_rows + len(letters)
  assert batch.schema.equals(rules.schema)
  assert batch.column("ts").to_pylist() == [881250949, 881250950, 881250951,
                                            881250953]
  summary = counts_lib.summarize_counts(
      {("read", "ratings"): read, ("written", "train"): batch.num_rows,
       **{("rejected", "ratings", reason): sum(
           1 for l in letters if l["reason"] == reason)
          for reason in {l["reason"] for l in letters}}}, ["ratings"])
  assert summary["rows_rejected_total"] == {"ratings": 8}
  with pytest.raises(counts_lib.RejectedRowsError,
                     match=r"input 'ratings': 8 of 12 rows \(66.67%\)"):
    counts_lib.check_rejections(summary, "ratings", 0.5)


# --- the Dataflow job, built offline ---------------------------------------

@pytest.fixture(scope="module")
def bigquery_job(tmp_path_factory):
  from deploy import dataflow_job as dataflow_job_lib
  job_file = str(tmp_path_factory.mktemp("dataflow_bq") / "job.json")
  built = dataflow_job_lib.build_preprocess_job([
      "--spec", BQ_CONFIG, "--env", "BQ_DATASET=my-project.movielens",
      "--output", "gs://my-bucket/ml100k/preprocessed",
      "--preset", "dataflow", "--project", "my-project",
      "--region", "us-central1", "--temp_location", "gs://my-bucket/tmp",
      "--no_auth", "--dataflow_job_file", job_file])
  return built, job_file


def test_dataflow_job_reads_every_table_from_bigquery(bigquery_job):
  built, job_file = bigquery_job
  steps = built.steps
  expected = ["ReadMain", "ParseMain", "ReadSideUsers", "ParseSideUsers",
              "JoinUsers", "ReadSideItems", "ParseSideItems", "JoinItems",
              "SplitAndConvert", "Analyze", "WriteTransformFn",
              "TransformTrain", "TransformEval", "WriteTrain", "WriteEval",
              "WriteDeadLetters", "WriteCounts"]
  assert set(expected) <= set(steps), set(expected) - set(steps)
  position = {step: i for i, step in enumerate(steps)}
  for before, after in [("ReadMain", "ParseMain"),
                        ("ReadSideUsers", "JoinUsers"),
                        ("ReadSideItems", "JoinItems"),
                        ("JoinItems", "SplitAndConvert"),
                        ("SplitAndConvert", "Analyze"),
                        ("Analyze", "TransformTrain"),
                        ("TransformTrain", "WriteTrain"),
                        ("TransformEval", "WriteEval")]:
    assert position[before] < position[after], (before, after)

  with open(job_file + ".pipeline.json", encoding="utf-8") as handle:
    pipeline = json.load(handle)
  assert pipeline == built.pipeline
  reads = _transforms_named(pipeline, "/Read")
  assert sorted(reads) == ["ReadMain/ReadFromBigQuery/Read",
                           "ReadSideItems/ReadFromBigQuery/Read",
                           "ReadSideUsers/ReadFromBigQuery/Read"]
  data = {name.split("/")[0]: _display_data(t) for name, t in reads.items()}
  for name, read in reads.items():
    assert read["spec"]["urn"] == "beam:transform:read:v1"
    source = data[name.split("/")[0]]
    assert source["source"] == (
        "apache_beam.io.gcp.bigquery._CustomBigQuerySource")
    assert (source["method"], source["export_file_format"]) == (
        "EXPORT", "AVRO")
  assert data["ReadMain"]["query"] == (
      "SELECT user_id, item_id, rating, `timestamp` "
      "FROM `my-project.movielens.ratings`")
  assert data["ReadMain"]["use_legacy_sql"] is False
  for side in ("users", "items"):
    table = data[f"ReadSide{side.capitalize()}"]["table"]
    assert "projectId: 'my-project'" in table
    assert "datasetId: 'movielens'" in table
    assert f"tableId: '{side}'" in table
  names = {t["uniqueName"]
           for t in pipeline["components"]["transforms"].values()}
  # Nothing is read from files; BigQuery's exported files are removed after.
  assert not any(n.startswith("ReadMain/Match") for n in names)
  assert "ReadMain/ReadFromBigQuery/_PassThroughThenCleanup" in names
  assert "ReadMain/BatchRows/Batch" in names
  assert any(n.startswith("Analyze/") for n in names)
  assert any(n.startswith("WriteDeadLetters/") for n in names)

  with open(job_file, encoding="utf-8") as handle:
    job = json.load(handle)
  options = job["environment"]["sdkPipelineOptions"]["options"]
  # The export lands under --temp_location (the job's own folder there),
  # its jobs run in --project.
  assert options["temp_location"].startswith("gs://my-bucket/tmp/")
  assert options["project"] == "my-project"


def test_dataflow_job_with_bigquery_fails_fast_without_project(tmp_path):
  from deploy import dataflow_job as dataflow_job_lib
  with open(BQ_CONFIG, encoding="utf-8") as handle:
    raw = yaml.safe_load(handle)
  ratings = raw["inputs"]["ratings"]
  del ratings["query"], ratings["use_standard_sql"]
  ratings["table"] = "movielens.ratings"
  spec_path = tmp_path / "spec.yaml"
  spec_path.write_text(yaml.safe_dump(raw))
  # The dataflow preset insists on --project itself; a DirectRunner job
  # with a BigQuery table that names no project is refused by our check.
  with pytest.raises(inputs.InputError) as error:
    preprocess.run(["--spec", str(spec_path), "--env",
                    "BQ_DATASET=my-project.movielens",
                    "--output", str(tmp_path / "out"),
                    "--temp_location", "gs://my-bucket/tmp"])
  assert str(error.value) == (
      "input 'ratings': a BigQuery table without a project runs its jobs in "
      "--project; give --project PROJECT")
  # Refused before a staging directory was made.
  assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]
  with pytest.raises(runners.PresetError, match="--project"):
    dataflow_job_lib.build_preprocess_job([
        "--spec", str(spec_path), "--env", "BQ_DATASET=my-project.movielens",
        "--output", "gs://b/out", "--preset", "dataflow",
        "--region", "us-central1", "--temp_location", "gs://b/tmp"])
