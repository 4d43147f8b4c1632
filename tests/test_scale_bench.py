"""benchmarks/scale_bench.py and scale_floor.py: the sampler and the math.

The scenario itself is a benchmark (minutes to hours); these check its
measuring pieces on tiny inputs.
"""

import json
import os
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import scale_bench
from benchmarks import scale_floor

# A child that starts a grandchild holding 200 MB (every page written) for
# a while, and waits for it: only a sampler that sums the tree sees it.
_GRANDCHILD = "import time; block = b'x' * (200 << 20); time.sleep(2.0)"
_CHILD = textwrap.dedent(f"""
    import subprocess, sys
    subprocess.run([sys.executable, "-c", {_GRANDCHILD!r}], check=True)
""")


def test_measure_sums_the_process_tree(tmp_path):
  measured = scale_bench.measure(
      "tree", [sys.executable, "-c", _CHILD], str(tmp_path / "log"))
  assert measured["peak_rss_mb"] >= 200
  assert measured["cpu_s"] >= 0
  assert measured["wall_s"] >= 2.0


def test_measure_names_a_failed_command(tmp_path):
  with pytest.raises(scale_bench.StageError, match=r"boom: exit 3"):
    scale_bench.measure("boom", [sys.executable, "-c",
                                 "import sys; print('x'); sys.exit(3)"],
                        str(tmp_path / "log"))


def test_recall_at_k():
  found = {"a": ["1", "2", "3"], "b": ["9"]}
  truth = {"a": ["1", "2", "4"], "b": ["5", "6"], "c": ["7"]}
  assert scale_floor.recall_at_k(found, truth, 3) == pytest.approx(2 / 9)
  assert scale_floor.recall_at_k(truth, truth, 3) == 1.0


def test_exact_top_k_folds_in_the_bias_and_skips_seen():
  users = np.array([[1.0, 0.0]])
  items = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
  # Scores with the bias: 1.0, 1.5, 0.0.
  np.testing.assert_array_equal(scale_floor.exact_top_k(
      users, items, np.array([0.0, 1.0, 0.0]), [[]], 3), [[1, 0, 2]])
  np.testing.assert_array_equal(scale_floor.exact_top_k(
      users, items, np.array([0.0, 1.0, 0.0]), [[1]], 3), [[0, 2, -1]])
  np.testing.assert_array_equal(scale_floor.exact_top_k(
      users, items, None, [[]], 2), [[0, 1]])


def test_growth_is_relative_to_the_smallest_size():
  runs = [{"rows": 100, "stages": {"preprocess": {"wall_s": 1.0,
                                                  "peak_rss_mb": 100.0}}},
          {"rows": 400, "stages": {"preprocess": {"wall_s": 8.0,
                                                  "peak_rss_mb": 150.0}}}]
  rows = scale_bench.growth(runs)
  assert [(r["rows"], r["time_per_row_vs_smallest"], r["rss_vs_smallest"])
          for r in rows] == [(100, 1.0, 1.0), (400, 2.0, 1.5)]
  assert rows[1]["us_per_row"] == 20000.0


def test_data_is_reused_only_with_the_same_parameters(tmp_path):
  data = str(tmp_path)
  wanted = scale_bench.generate_params(200, 20, 10)
  assert not scale_bench.reusable(data, wanted)
  os.makedirs(os.path.join(data, "truth"))
  with open(os.path.join(data, "truth", "params.json"), "w") as handle:
    json.dump(dict(wanted, noise=0.5), handle)
  open(os.path.join(data, "ratings.csv"), "w").close()
  assert scale_bench.reusable(data, wanted)
  assert not scale_bench.reusable(
      data, scale_bench.generate_params(200, 21, 10))


def test_neighbour_queries_are_the_most_rated_movies(tmp_path):
  movie = tmp_path / "movie"
  movie.mkdir()
  (movie / "vocab.txt").write_text("m17\nm4\nm250\nm9\n", encoding="utf-8")
  assert scale_bench.most_frequent_movies(str(tmp_path), 3) == [
      "m17", "m4", "m250"]


def test_table_rows_of_quality_and_runners():
  planted = {"truth_factors_precision": 1.0, "queries": 4, "items": 9,
             "groups": {"band 200+": {"model": 1.0, "data_ceiling": 1.0},
                        "band 20-49": {"model": 0.8, "data_ceiling": 0.9},
                        "uniform": {"model": 0.5, "data_ceiling": 0.75}}}
  assert scale_bench.planted_note(planted) == (
      "planted precision@10 model/data ceiling: uniform 0.5/0.75, band 20-49 "
      "0.8/0.9, band 200+ 1.0/1.0 (truth factors 1.0, 4 uniform queries of "
      "9 movies)")
  run = {"wall_s": 10.0, "cpu_s": 12.0, "peak_rss_mb": 100.0}
  rows = scale_bench.table({"runners": {
      "preprocess direct": run,
      "preprocess direct_multiprocess": dict(run, wall_s=8.0),
      "preprocess x_in_process": {"wall": 0.8, "peak_rss": 1.0}}})
  assert [(r["stage"], r["wall_s"], r["note"]) for r in rows] == [
      ("preprocess --preset direct", 10.0, ""),
      ("preprocess --preset direct_multiprocess", 8.0,
       "x in-process: wall 0.8, peak RSS 1.0")]
