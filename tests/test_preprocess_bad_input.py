"""Nothing silently lost, reused or rejected by `embeddings preprocess`.

Bytes a column nothing reads cannot decode never reject a row; a display
column shows them as U+FFFD; main rows lost to a rejected side row are
counted and named; blank lines are counted; --env names the spec never
references, `split` beside `eval_path`, a YAML `on:` in a join and a
directory given as an input path are one-line errors before Beam starts;
leftovers of killed runs to the same output are removed; the raw schema
and the side tables' names are written. One tiny end-to-end run checks
the output files exactly.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import tensorflow_transform as tft
import yaml

from core import layout
from core import outputs
from deploy import dataflow_job
from pipelines import counts as counts_lib
from pipelines import inputs
from pipelines import options as options_lib
from pipelines import parsers
from pipelines import preprocess
from pipelines import progress
from pipelines import rows as rows_lib
from transforms import loader
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAMED_SPEC = """
name: named
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
    columns: [user_id, age, gender, occupation, zip_code]
    types: {age: int}
  items:
    format: csv
    path: ${DATA_DIR}/items.csv
    header: true
    key: item_id
    display_column: title
    group_feature: genres
    columns: [item_id, title, genres]
main: ratings
joins:
  - {table: users, by: user_id}
  - {table: items, by: item_id}
split: {key: [user_id, item_id], eval_fraction: 0.3, seed: 1}
label: {column: rating, min: 1, max: 5}
features:
  - {name: user, kind: vocabulary, source: user_id}
  - {name: movie, kind: vocabulary, source: item_id}
  - {name: gender, kind: vocabulary, source: gender}
  - {name: genres, kind: tokens, source: genres, delimiter: "|"}
max_rejected_fraction: 1.0
"""

RATINGS = (b"user_id,item_id,rating,timestamp\n"
           b"u1,m1,4.0,1000\nu1,m2,3.0,2000\n\nu2,m1,5.0,3000\n"
           b"u2,m3,1.0,4000\nu3,m2,2.0,5000\nu2,m2,4.0,6000\n")
# u2's zip code (read by nothing) and u3's gender (a feature) hold a byte
# that is not UTF-8.
USERS = (b"user_id,age,gender,occupation,zip_code\n"
         b"u1,20,M,student,111\nu2,30,F,writer,2\xff2\n"
         b"u3,40,\xffM,doctor,333\n")
# m2's title (display only) holds one too.
ITEMS = (b"item_id,title,genres\n"
         b"m1,One,Action|Comedy\nm2,T\xe9wo,Drama\nm3,Three,\n")
NAMES_TSV = ("token\tname\tgroup\n"
             "m1\tOne\tAction\n"
             "m2\tT\ufffdwo\tDrama\n"
             "m3\tThree\t\n")


def _write_named(folder) -> str:
  folder = str(folder)
  os.makedirs(folder, exist_ok=True)
  for name, body in (("ratings.csv", RATINGS), ("users.csv", USERS),
                     ("items.csv", ITEMS)):
    with open(os.path.join(folder, name), "wb") as handle:
      handle.write(body)
  spec_path = os.path.join(folder, "spec.yaml")
  with open(spec_path, "w") as handle:
    handle.write(NAMED_SPEC)
  return spec_path


def _spec(text: str, **env) -> spec_lib.FeatureSpec:
  return loader.parse_spec(yaml.safe_load(text), env)


# ------------------------------------------------------------ parsing rows


def test_bytes_in_unread_columns_never_reject_and_blank_lines_count(tmp_path):
  _write_named(tmp_path)
  spec = _spec(NAMED_SPEC, DATA_DIR=str(tmp_path))
  rules = inputs.plan_inputs(spec)
  users = parsers.parse_csv_block(
      rules["users"], USERS.split(b"\n", 1)[1] + b"\n")
  assert users.read == 4 and users.blank == 1
  assert users.rows.column("user_id").to_pylist() == ["u1", "u2"]
  assert "zip_code" not in users.rows.schema.names
  assert users.dead_letters == [{
      "table": "users", "reason": rows_lib.INVALID_ENCODING,
      "detail": "column 'gender' is not utf-8",
      "raw": "u3,40,\\xffM,doctor,333", "key": "u3"}]
  items = parsers.parse_csv_block(rules["items"], ITEMS.split(b"\n", 1)[1])
  assert items.dead_letters == []
  assert items.rows.column("title").to_pylist() == ["One", "T\ufffdwo",
                                                    "Three"]
  # The joined rows do not carry the display column.
  assert rules["items"].without_display().columns == ("item_id", "genres")


def test_ml100k_items_without_an_encoding_lose_no_movie(ml100k_dir):
  spec = loader.load_spec(os.path.join(REPO, "configs", "movielens100k.yaml"),
                          {"ML100K_DIR": ml100k_dir})
  items = spec.inputs["items"]
  assert items.encoding == "latin-1"
  spec = dataclasses.replace(spec, inputs={
      **spec.inputs, "items": dataclasses.replace(items, encoding="utf-8")})
  rules = inputs.plan_inputs(spec)["items"]
  with open(os.path.join(ml100k_dir, "u.item"), "rb") as handle:
    parsed = parsers.parse_csv_block(rules, handle.read())
  assert parsed.dead_letters == []
  assert parsed.rows.num_rows == parsed.read == 1682
  titles = parsed.rows.column("title").to_pylist()
  assert sum("\ufffd" in title for title in titles) == 9


# ------------------------------------------------- the spec and the options


def test_spec_errors_are_one_line_naming_the_field(tmp_path):
  base = NAMED_SPEC
  with pytest.raises(spec_lib.SpecError, match=(
      r"^joins\[0\]: YAML reads the key 'on' as the boolean true; name the "
      r"main table's join column with 'by:' instead$")):
    _spec(base.replace("{table: users, by: user_id}",
                       "{table: users, on: user_id}"), DATA_DIR="d")
  eval_spec = base.replace("    header: true\n    columns: [user_id, item_id",
                           "    header: true\n    eval_path: e.csv\n"
                           "    columns: [user_id, item_id")
  with pytest.raises(spec_lib.SpecError, match=(
      r"^spec: field 'split' and input 'ratings' field 'eval_path' both "
      r"choose the eval rows; keep one$")):
    _spec(eval_spec, DATA_DIR="d")
  assert _spec(eval_spec.replace(
      "split: {key: [user_id, item_id], eval_fraction: 0.3, seed: 1}\n", ""),
               DATA_DIR="d").split is None
  with pytest.raises(spec_lib.SpecError,
                     match="input 'items': field 'display_column' names "
                           "column 'name' that is not in 'columns'"):
    _spec(base.replace("display_column: title", "display_column: name"),
          DATA_DIR="d")
  with pytest.raises(spec_lib.SpecError,
                     match="input 'items': field 'group_feature' must name a "
                           "tokens or vocabulary feature, got 'nope'"):
    _spec(base.replace("group_feature: genres", "group_feature: nope"),
          DATA_DIR="d")
  with pytest.raises(spec_lib.SpecError, match="feature 'user' reads "
                                               r"column\(s\) \['user_id'\]"):
    _spec(base.replace("group_feature: genres", "group_feature: user"),
          DATA_DIR="d")
  spec = _spec(base.replace("${DATA_DIR}/items.csv",
                            "${ITEMS:-/data}/items.csv"), DATA_DIR="/x")
  assert spec.env == {"DATA_DIR": "/x", "ITEMS": "/data"}
  assert spec.named_tables() == {"movie": "items"}


def _main(argv, capsys):
  status = preprocess.main(argv)
  return status, capsys.readouterr().err.splitlines()


def test_unknown_env_names_and_directories_fail_before_beam(tmp_path, capsys):
  spec_path = _write_named(tmp_path / "data")
  output = str(tmp_path / "out")
  status, err = _main(["--spec", spec_path, "--output", output,
                       "--env", f"DATA_DIR={tmp_path / 'data'}",
                       "--env", "DATA_DIRR=/elsewhere"], capsys)
  assert (status, err) == (1, [
      f"embeddings preprocess: error: --env DATA_DIRR: {spec_path} never "
      f"references it; it references ${{DATA_DIR}}"])
  os.makedirs(tmp_path / "dirs" / "ratings.csv")
  _write_named(tmp_path / "dirs2")
  for name in ("users.csv", "items.csv"):
    os.rename(tmp_path / "dirs2" / name, tmp_path / "dirs" / name)
  status, err = _main(["--spec", spec_path, "--output", output,
                       "--env", f"DATA_DIR={tmp_path / 'dirs'}"], capsys)
  ratings = tmp_path / "dirs" / "ratings.csv"
  assert (status, err) == (1, [
      f"embeddings preprocess: error: input 'ratings': '{ratings}' is a "
      f"directory; give a file, or a pattern such as '{ratings}/*'"])
  assert sorted(os.listdir(tmp_path)) == ["data", "dirs", "dirs2"]


def test_preset_errors_are_one_usage_line_with_status_2(tmp_path, capsys):
  spec_path = _write_named(tmp_path)
  argv = ["--spec", spec_path, "--output", str(tmp_path / "out"),
          "--preset", "dataflow", "--region", "us-central1",
          "--temp_location", "gs://bucket/tmp"]
  status, err = _main(argv, capsys)
  assert (status, err) == (2, [
      "embeddings preprocess: error: --preset dataflow: --project is "
      "required (the GCP project that runs the job) (see embeddings "
      "preprocess --help)"])
  status, err = _main(["--spec", spec_path, "--output", str(tmp_path / "o"),
                       "--env", f"DATA_DIR={tmp_path}",
                       "--max_rejected_fraction", "2"], capsys)
  assert (status, err) == (2, [
      "embeddings preprocess: error: --max_rejected_fraction must be in "
      "[0, 1], got 2.0 (see embeddings preprocess --help)"])
  assert dataflow_job.main(argv) == 2
  assert capsys.readouterr().err.splitlines() == [
      "python -m deploy.dataflow_job: error: --preset dataflow: --project is "
      "required (the GCP project that runs the job) (see python -m "
      "deploy.dataflow_job --help)"]
  with pytest.raises(SystemExit) as raised:
    dataflow_job.main(["--spec", spec_path])
  assert raised.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("usage: python -m deploy.dataflow_job ")
  assert err.splitlines()[-1] == ("python -m deploy.dataflow_job: error: the "
                                  "following arguments are required: --output")


def test_header_false_on_a_file_with_a_header_warns(tmp_path):
  _write_named(tmp_path)
  spec = _spec(NAMED_SPEC.replace("header: true", "header: false"),
               DATA_DIR=str(tmp_path))
  with open(tmp_path / "ratings.csv", "wb") as handle:
    handle.write(b"user,item,stars,time\nu1,m1,4.0,1000\n")
  warnings = inputs.header_warnings(spec, inputs.check_inputs(spec))
  assert warnings == [
      f"input 'ratings': the first line of {tmp_path / 'ratings.csv'} looks "
      f"like a header ('user,item,stars,time') but the spec says header: "
      f"false; it is read as a row (set header: true if it is one)",
      f"input 'users': the first line of {tmp_path / 'users.csv'} looks like "
      f"a header ('user_id,age,gender,occupation,zip_code') but the spec "
      f"says header: false; it is read as a row (set header: true if it is "
      f"one)",
      f"input 'items': the first line of {tmp_path / 'items.csv'} looks like "
      f"a header ('item_id,title,genres') but the spec says header: false; "
      f"it is read as a row (set header: true if it is one)"]
  with open(tmp_path / "ratings.csv", "wb") as handle:
    handle.write(b"u1,m1,4.0,1000\n")
  assert len(inputs.header_warnings(spec, inputs.check_inputs(spec))) == 2


def test_counts_that_do_not_add_up_are_refused():
  summary = counts_lib.summarize_counts({
      ("read", "main"): 10, ("blank", "main"): 1,
      ("rejected", "main", "rejected_side_row"): 2,
      ("lost", "main", "side"): 2, ("read", "side"): 3,
      ("written", "train"): 6, ("written", "eval"): 1}, ["main", "side"])
  assert summary["rows_lost_to_rejected_side_rows"] == {"main": {"side": 2},
                                                        "side": {}}
  counts_lib.check_rejections(summary, "main", 1.0)
  with pytest.raises(counts_lib.RejectedRowsError, match=(
      r"input 'main': 2 of 9 rows \(22.22%\) were rejected, more than "
      r"max_rejected_fraction 0.2 allows \(rejected_side_row: 2\); 2 lost "
      r"because their row of 'side' was rejected$")):
    counts_lib.check_rejections(summary, "main", 0.2)
  summary["rows_written"]["eval"] = 0
  with pytest.raises(counts_lib.UnreconciledCountsError,
                     match="10 rows read but 6 written"):
    counts_lib.check_rejections(summary, "main", 1.0)


def test_leftovers_of_other_outputs_are_kept(tmp_path):
  mine = [".out.staging-20260101-000000-deadbeef",
          ".out.staging-20260101-000000-deadbeef.previous"]
  others = [".out2.staging-20260101-000000-cafebabe",
            ".out.staging-x.staging-20260101-000000-abcdef12", "out2"]
  for name in mine + others:
    os.makedirs(tmp_path / name / "train")
  assert outputs.remove_stale_staging(str(tmp_path / "out")) == sorted(
      str(tmp_path / name) for name in mine)
  assert sorted(os.listdir(tmp_path)) == sorted(others)
  with pytest.raises(ValueError, match="run id"):
    outputs.new_staging_dir(str(tmp_path / "out"), run_id="a.b")


def test_the_flags_load_without_tensorflow_or_beam():
  code = ("import sys, pipelines.options as o; o.preprocess_parser(); "
          "o.generate_parser(); "
          "assert 'tensorflow' not in sys.modules, 'tensorflow'; "
          "assert 'apache_beam' not in sys.modules, 'apache_beam'")
  subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
  for parser in (options_lib.generate_parser(),
                 options_lib.preprocess_parser()):
    for action in parser._actions:
      assert action.help, action.dest
  assert "(default: 16)" in options_lib.generate_parser().format_help()


def test_progress_lines_are_throttled(monkeypatch, capsys):
  clock = [100.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
  progress.start()
  for now, rows in ((100.0, 1000), (105.0, 1000), (110.0, 1000),
                    (115.0, 1000), (121.0, 1000)):
    clock[0] = now
    progress.rows_read(progress.ONE_PASS, rows)
  progress.announce_once("analyzing")
  progress.announce_once("analyzing")
  assert capsys.readouterr().out.splitlines() == [
      "embeddings preprocess: reading the inputs",
      "embeddings preprocess: reading: 3,000 rows read (300 rows/s)",
      "embeddings preprocess: reading: 5,000 rows read (238 rows/s)",
      "embeddings preprocess: analyzing"]


# ------------------------------------------------------ one run, end to end


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
  """The named job, run over leftovers of earlier runs: (folder, report,
  stdout lines)."""
  folder = tmp_path_factory.mktemp("named")
  spec_path = _write_named(folder / "data")
  stale = folder / ".out.staging-20260101-000000-deadbeef"
  other = folder / ".other.staging-20260101-000000-deadbeef"
  for path in (stale / "train", other / "train",
               folder / "out" / "train" / "beam-temp-part-0123"):
    os.makedirs(path)
  (folder / "out" / layout.SUCCESS_FILE).write_text("{}")
  capture = folder / "stdout.txt"
  with open(capture, "w") as handle:
    subprocess.run([sys.executable, "-m", "pipelines.preprocess",
                    "--spec", spec_path, "--output", str(folder / "out"),
                    "--env", f"DATA_DIR={folder / 'data'}"],
                   cwd=REPO, stdout=handle, stderr=subprocess.DEVNULL,
                   check=True)
  with open(folder / "out" / layout.RUN_REPORT_FILE) as handle:
    report = json.load(handle)
  return folder, report, capture.read_text().splitlines()


def test_named_run_counts_every_row(named_run):
  folder, report, _ = named_run
  assert report["rows_read"] == {"ratings": 7, "users": 3, "items": 3}
  assert report["rows_blank"] == {"ratings": 1, "users": 0, "items": 0}
  assert sum(report["rows_written"].values()) == 5
  assert report["rows_rejected"] == {
      "ratings": {"rejected_side_row": 1},
      "users": {"invalid_encoding": 1}, "items": {}}
  assert report["rows_lost_to_rejected_side_rows"]["ratings"] == {"users": 1}
  assert report["env"] == {"DATA_DIR": str(folder / "data")}
  assert report["inputs"]["ratings"] == {
      "path": str(folder / "data" / "ratings.csv"),
      "files": [str(folder / "data" / "ratings.csv")]}
  assert report["warnings"] == []
  letters = []
  for name in os.listdir(folder / "out" / layout.DEAD_LETTER_DIR):
    with open(folder / "out" / layout.DEAD_LETTER_DIR / name) as handle:
      letters.extend(json.loads(line) for line in handle)
  assert sorted((l["table"], l["reason"], l["raw"]) for l in letters) == [
      ("ratings", "rejected_side_row", "u3,m2,2.0,5000"),
      ("users", "invalid_encoding", "u3,40,\\xffM,doctor,333")]


def test_named_run_writes_names_and_the_raw_schema(named_run):
  folder, report, _ = named_run
  out = layout.PreprocessedLayout(str(folder / "out"))
  with open(out.names("movie"), encoding="utf-8") as handle:
    assert handle.read() == NAMES_TSV
  assert report["names"] == {"movie": out.names("movie")}
  raw = tft.TFTransformOutput(out.root).raw_metadata
  assert sorted(f.name for f in raw.schema.feature) == sorted(
      ["rating", "user_id", "item_id", "gender", "genres"])


def test_named_run_removes_only_its_own_leftovers(named_run):
  folder, _, _ = named_run
  assert sorted(os.listdir(folder)) == [
      ".other.staging-20260101-000000-deadbeef", "data", "out",
      "stdout.txt"]
  assert not [d for d, _, _ in os.walk(folder / "out") if "beam-temp" in d]


def test_named_run_prints_phases_and_one_summary(named_run):
  folder, report, lines = named_run
  assert lines[0].startswith("embeddings preprocess: removed 2 folder(s)")
  assert lines[1:4] == [
      "embeddings preprocess: analysis pass: reading the inputs (the "
      "transform pass reads them again once the analysis is done)",
      "embeddings preprocess: read every input "
      f"({report['rows_written']['train']:,} train rows); analyzing on train",
      "embeddings preprocess: analyzed; transforming and writing"]
  assert lines[-1] == preprocess.summary_line(report)
  written = report["rows_written"]
  assert lines[-1].startswith(
      f"embeddings preprocess: wrote {written['train']} train + "
      f"{written['eval']} eval rows to {folder / 'out'} (7 rows of 'ratings' "
      f"in, 1 rejected, 1 blank lines; side rows rejected: 1 of 'users'); "
      f"dead letters in {folder / 'out' / 'dead_letter'} (")
