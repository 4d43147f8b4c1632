"""--seen files read alike by recommend and recommend-batch; dnn exports."""

import glob
import json

import numpy as np
import pytest

from core import artifacts
from core import layout
from retrieval import recommend
from workflows import recommend_batch as batch
from workflows import recommend_output

RATINGS_CSV = ("user_id,item_id,rating,timestamp\n"
               "1,10,4,881250949\n2,30,5,881250950\n2,20,3,881250951\n"
               "9,10,1,881250952\n")
U_DATA = ("1\t10\t4\t881250949\n2\t30\t5\t881250950\n2\t20\t3\t881250951\n"
          "9\t10\t1\t881250952\n")
# k = 2, by user . item, rated items left out; the tie of user 2 goes to
# the lower row.
EXPECTED = {"1": (["20", "30"], [0.5, 0.0]),
            "2": (["10", "40"], [0.0, 0.0]),
            "3": (["10", "20"], [1.0, 0.75])}


def _save_export(root, metadata=None):
  metadata = dict(metadata or {})
  users = artifacts.EmbeddingTable(
      "user", [[1, 0], [0, 1], [1, 0.5], [50, 50]], ["1", "2", "3", "[OOV_0]"],
      dict(metadata, vocabulary_size=3, num_oov_buckets=1))
  items = artifacts.EmbeddingTable(
      "movie", [[1, 0], [0.5, 0.5], [0, 1], [-1, 0], [100, 100]],
      ["10", "20", "30", "40", "[OOV_0]"],
      dict(metadata, vocabulary_size=4, num_oov_buckets=1))
  users.save(str(root / "user"))
  items.save(str(root / "movie"))
  return str(root)


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("seen")
  (root / "ratings.csv").write_text(RATINGS_CSV)
  (root / "u.data").write_text(U_DATA)
  return {"root": root, "export": _save_export(root / "export"),
          "dnn": _save_export(root / "dnn", {"model_type": "dnn",
                                             "score": "model"})}


def test_ratings_format_reads_header_and_delimiter():
  assert recommend.ratings_format("user_id,item_id,rating,timestamp\n") == (
      recommend.RatingsFormat(",", True, ("user_id", "item_id", "rating",
                                          "timestamp"), 0, 1))
  assert recommend.ratings_format("196\t242\t3\t881250949\n") == (
      recommend.RatingsFormat("\t", False, ("user_id", "item_id", "field_2",
                                            "field_3"), 0, 1))
  assert recommend.ratings_format("movie|user\n", user_column="user",
                                  item_column="movie") == (
                                      recommend.RatingsFormat(
                                          "|", True, ("movie", "user"), 1, 0))
  with pytest.raises(ValueError, match=r"lacks the column\(s\) \['item_id'\]"):
    recommend.ratings_format("user_id,movie\n")
  with pytest.raises(ValueError, match="cannot tell the delimiter"):
    recommend.ratings_format("196 242\n")


@pytest.mark.parametrize("name", ["ratings.csv", "u.data"])
def test_recommend_reads_both_files_alike(files_dir, name):
  seen = recommend.read_seen(str(files_dir["root"] / name))
  assert seen == {"1": {"10"}, "2": {"30", "20"}, "9": {"10"}}


def _records(output):
  return ({user: (row["items"], row["scores"]) for user, row in
           recommend_output.read_recommendations(output).items()},
          recommend_output.read_dead_letters(output))


@pytest.mark.parametrize("name", ["ratings.csv", "u.data"])
def test_batch_detects_header_and_delimiter_like_recommend(files_dir, name,
                                                           capsys):
  output = str(files_dir["root"] / f"out_{name}")
  assert batch.main(["--embeddings", files_dir["export"], "--output", output,
                     "-k", "2", "--seen", str(files_dir["root"] / name),
                     "--runner", "DirectRunner"]) == 0
  records, dead = _records(output)
  assert records == EXPECTED
  # The header is no rating, and no user "user_id" is dead-lettered.
  assert dead == [{"table": "seen", "reason": "user has ratings but no row in "
                   "the user table", "raw": {"user": "9"}}]
  with open(layout.RecommendationsLayout(output).report) as handle:
    report = json.load(handle)
  assert report["counts"]["seen_rows_read"] == 4
  assert report["users"] == {"in": 4, "written": 3, "dead_lettered": 1}
  [part] = report["files"]
  assert part.startswith(layout.RecommendationsLayout(output).prefix)
  paths = layout.RecommendationsLayout(output)
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"embeddings recommend-batch: top 2 items for 3 of 4 users in 1 jsonl "
      f"file(s) under {output}; 1 users and 0 rating rows dead-lettered in "
      f"{output}/dead_letter; report {paths.report}")


def test_batch_flags_override_the_detection(files_dir):
  options = batch.seen_csv_options(batch.RecommendBatchOptions(
      embeddings="E", output="O", seen=str(files_dir["root"] / "u.data"),
      seen_skip_header_lines=1))
  assert (options.seen_delimiter, options.seen_skip_header_lines,
          options.seen_columns) == ("\t", 1, ("user_id", "item_id",
                                              "field_2", "field_3"))
  with pytest.raises(ValueError, match="no file matches"):
    batch.seen_csv_options(batch.RecommendBatchOptions(
        embeddings="E", output="O", seen=str(files_dir["root"] / "none*")))


DNN_LINE = ("comes from a dnn model, whose prediction is not a dot product "
            "of user and item vectors, so ranking by them would not be the "
            "model's ranking; train and export an mf model for retrieval")


def test_recommend_refuses_a_dnn_export(files_dir, capsys):
  assert recommend.run(["--embeddings", files_dir["dnn"], "--users",
                        "1"]) == 2
  assert capsys.readouterr().err == (
      f"embeddings recommend: {files_dir['dnn']} {DNN_LINE}\n")
  users = artifacts.load(files_dir["dnn"], "user")
  items = artifacts.load(files_dir["dnn"], "movie")
  with pytest.raises(ValueError, match="comes from a dnn model"):
    recommend.recommendations_frame(users, items, ["1"])


def test_recommend_batch_refuses_a_dnn_export(files_dir, capsys):
  output = str(files_dir["root"] / "dnn_out")
  assert batch.main(["--embeddings", files_dir["dnn"], "--output", output,
                     "--runner", "DirectRunner"]) == 2
  assert capsys.readouterr().err == (
      f"embeddings recommend-batch: {files_dir['dnn']} {DNN_LINE}\n")
  assert not glob.glob(output + "*")


def test_recommend_ranks_a_hand_made_table_by_dot_product(files_dir):
  users = artifacts.load(files_dir["export"], "user")
  items = artifacts.load(files_dir["export"], "movie")
  frame = recommend.recommendations_frame(users, items, ["3"], k=2,
                                          seen={"3": {"10"}})
  assert frame.to_dict("records") == [
      {"user": "3", "rank": 1, "item": "20", "name": None, "score": 0.75},
      {"user": "3", "rank": 2, "item": "30", "name": None, "score": 0.5}]
  np.testing.assert_array_equal(users.vectors[:3], [[1, 0], [0, 1], [1, 0.5]])


def test_reading_back_refuses_a_user_written_twice(tmp_path):
  paths = layout.RecommendationsLayout(str(tmp_path))
  row = json.dumps({"user": "u1", "items": ["m1"], "scores": [0.5]})
  for shard in ("00000-of-00002", "00001-of-00002"):
    with open(f"{paths.prefix}-{shard}{layout.JSONL_SUFFIX}", "w") as handle:
      handle.write(row + "\n")
  with pytest.raises(ValueError, match="user 'u1' has two rows"):
    recommend_output.read_recommendations(str(tmp_path))
  assert recommend_output.read_recommendations(str(tmp_path), users=()) == {}
