"""benchmarks/scale_bench.py and scale_floor.py: the sampler and the math.

The scenario itself is a benchmark (minutes to hours); these check its
measuring pieces on tiny inputs.
"""

import json
import math
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


def test_expected_rating_without_noise_is_the_rounded_clipped_mean():
  value, variance = scale_floor.expected_rating(
      np.array([0.2, 2.4, 2.6, 7.0]), 0.0, 1.0)
  np.testing.assert_array_equal(value, [1.0, 2.0, 3.0, 5.0])
  np.testing.assert_array_equal(variance, [0.0] * 4)
  value, _ = scale_floor.expected_rating(np.array([2.2, 2.3]), 0.0, 0.5)
  np.testing.assert_array_equal(value, [2.0, 2.5])


def test_expected_rating_with_noise():
  # 3.0 is the middle of the clipped scale: symmetric, E = 3 exactly.
  value, _ = scale_floor.expected_rating(np.array([3.0, -50.0, 60.0]), 0.7,
                                         1.0)
  np.testing.assert_allclose(value, [3.0, 1.0, 5.0], atol=1e-12)
  # mean 1.0, noise 1.0, step 1: level l takes [l - 0.5, l + 0.5).
  phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
  cuts = [phi(c - 1.0) for c in (1.5, 2.5, 3.5, 4.5)]
  probs = np.diff([0.0] + cuts + [1.0])
  levels = np.arange(1.0, 6.0)
  mean = float(probs @ levels)
  value, variance = scale_floor.expected_rating(np.array([1.0]), 1.0, 1.0)
  assert value[0] == pytest.approx(mean, abs=1e-12)
  assert variance[0] == pytest.approx(float(probs @ levels ** 2) - mean ** 2,
                                      abs=1e-12)


def test_noise_floor():
  floor = scale_floor.noise_floor(np.array([3.0, 4.0]), np.array([3.0, 3.1]),
                                  0.0, 1.0)
  assert floor == {"rmse_of_expected": math.sqrt(0.5), "rmse_expected": 0.0,
                   "rows": 2}


def test_model_mean_is_the_generators_formula():
  start = 1_420_416_000
  params = {"start_timestamp": start, "global_mean": 3.0, "affinity": 1.5,
            "clusters": 3, "time_bias": np.arange(7 * 24).reshape(7, 24)
                                              .tolist()}
  truth = {"user_factors": np.array([[0, 0], [1, 2]], np.float32),
           "item_factors": np.array([[3, 4], [0, 0]], np.float32),
           "user_bias": np.array([0.0, 0.25], np.float32),
           "item_bias": np.array([-0.5, 0.0], np.float32)}
  batch = pa.record_batch({"user_id": ["u2"], "item_id": ["m1"],
                           "timestamp": [start + 86400 + 3 * 3600 + 59]})
  # 3 + 0.25 - 0.5 + (1*3 + 2*4) - 1.5/3 + time_bias[1][3] (= 27).
  np.testing.assert_allclose(
      scale_floor.model_mean(batch, params, truth), [40.25])


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


def test_cluster_precision():
  vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  labels = np.array([0, 0, 1, 1])
  queries = np.arange(4)
  assert scale_floor.cluster_precision(vectors, labels, queries, 1) == 1.0
  assert scale_floor.cluster_precision(vectors, labels, queries, 2) == 0.5


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
