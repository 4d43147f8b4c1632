"""Exact and approximate neighbour search, cluster precision, k-means, CLI."""

import json
import os

import numpy as np
import pytest

from core import artifacts
from retrieval import approximate as approximate_lib
from retrieval import catalog
from retrieval import clustering
from retrieval import index
from retrieval import neighbors
from trainer import export


def _brute_force(queries, items, k, bias=None, exclude=None):
  scores = queries @ items.T
  if bias is not None:
    scores = scores + bias
  if exclude is not None:
    for row, excluded in enumerate(exclude):
      scores[row, list(excluded)] = -np.inf
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  top = np.take_along_axis(scores, order, axis=1)
  return top, np.where(np.isfinite(top), order, -1)


@pytest.mark.parametrize("n,d,k,item_block,groups", [
    (5000, 8, 10, 1000, 8),     # two-stage selection, several item blocks
    (3001, 4, 7, 512, 32),      # ragged tail columns, fallback partition
    (40, 3, 64, 16, 4),         # k larger than the table
])
def test_top_k_equals_brute_force(n, d, k, item_block, groups):
  rng = np.random.default_rng(n)
  items = rng.standard_normal((n, d)).astype(np.float32)
  queries = rng.standard_normal((37, d)).astype(np.float32)
  bias = rng.standard_normal(n).astype(np.float32)
  exclude = [rng.choice(n, rng.integers(0, min(n, 30)), replace=False)
             for _ in range(len(queries))]
  scores, ids = index.top_k(queries, items, k, item_bias=bias,
                            exclude=exclude, query_block=16,
                            item_block=item_block, groups=groups)
  want_scores, want_ids = _brute_force(queries, items, min(k, n), bias,
                                       exclude)
  filled = min(k, n)
  np.testing.assert_array_equal(ids[:, :filled], want_ids)
  np.testing.assert_allclose(scores[:, :filled], want_scores, rtol=1e-5,
                             atol=1e-5)
  assert (ids[:, filled:] == -1).all()
  for row, excluded in enumerate(exclude):
    assert not set(ids[row].tolist()) & set(excluded.tolist())


def test_exact_index_cosine_ignores_length_and_breaks_ties_by_id():
  items = np.array([[1, 0], [10, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
  scores, ids = index.ExactIndex(items).search(np.array([[3, 0]]), 3)
  # Rows 0 and 1 point the same way: equal similarity, smaller id first.
  np.testing.assert_array_equal(ids, [[0, 1, 3]])
  np.testing.assert_allclose(scores, [[1, 1, np.sqrt(0.5)]], rtol=1e-6)
  _, ids = index.ExactIndex(items).search(np.array([[3, 0]]), 2,
                                          exclude=[[0]])
  np.testing.assert_array_equal(ids, [[1, 3]])


def test_approximate_recall_against_exact():
  rng = np.random.default_rng(7)
  vectors = rng.standard_normal((20000, 16)).astype(np.float32)
  queries = rng.standard_normal((300, 16)).astype(np.float32)
  approximate = approximate_lib.ApproximateIndex(vectors, seed=0)
  calibration = approximate.calibrate(k=10, sample=300)
  assert calibration.target == approximate_lib.DEFAULT_TARGET_RECALL
  assert calibration.recall >= 0.95
  _, found = approximate.search(queries, 10)
  _, truth = index.ExactIndex(vectors).search(queries, 10)
  assert approximate_lib.recall_at_k(found, truth) >= 0.95
  assert approximate_lib.recall_at_k(truth, truth) == 1.0


def test_recall_at_k_counts_overlap():
  assert approximate_lib.recall_at_k(np.array([[1, 2, 3], [4, 5, -1]]),
                           np.array([[3, 2, 9], [7, 8, 6]])) == 2 / 6


def test_neighbor_precision_exact_values():
  # Two fans of directions 0-11 degrees ("a") and 73-90 degrees ("b"); "odd"
  # is labelled "a" but sits at the edge of the b fan.
  vectors = np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1],
                      [0.2, 1], [0.3, 1]], np.float32)
  tokens = ["a1", "a2", "a3", "b1", "b2", "b3", "odd"]
  truth = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b", "b3": "b",
           "odd": "a"}
  # k=2 hits: a1, a2, a3, b1, b2 2 each; b3's nearest are odd and b2 (1);
  # odd's are b3 and b2 (0): 11 of 14.
  assert neighbors.neighbor_precision(vectors, tokens, truth, k=2) == (
      pytest.approx(11 / 14))
  separated = {t: t[0] for t in tokens[:6]}
  assert neighbors.neighbor_precision(vectors, tokens, separated, k=2) == 1.0
  assert neighbors.neighbor_precision(vectors, tokens, truth, k=2,
                                      approximate=True) == (
                                          pytest.approx(11 / 14))
  with pytest.raises(ValueError, match="truth label"):
    neighbors.neighbor_precision(vectors, tokens, {"a1": "a"}, k=2)


def test_planted_clusters_recovered_from_true_factors(synthetic_data):
  """The metric on generated data: the generator's own item factors."""
  truth = catalog.read_truth_clusters(
      os.path.join(synthetic_data, "truth", "item_clusters.csv"))
  factors = np.load(os.path.join(synthetic_data, "truth", "item_factors.npy"))
  tokens = list(truth)
  assert factors.shape[0] == len(tokens)
  precision = neighbors.neighbor_precision(factors, tokens, truth, k=10)
  assert precision >= 0.9
  rng = np.random.default_rng(0)
  noise = rng.standard_normal(factors.shape).astype(np.float32)
  assert neighbors.neighbor_precision(noise, tokens, truth, k=10) < 0.5


def test_kmeans_recovers_separated_blobs():
  from sklearn.datasets import make_blobs
  from sklearn.metrics import adjusted_rand_score
  vectors, labels = make_blobs(n_samples=600, centers=5, n_features=8,
                               cluster_std=0.5, center_box=(-20, 20),
                               random_state=3)
  result = clustering.kmeans(vectors, 5, seed=0)
  assert adjusted_rand_score(labels, result.assignments) == 1.0
  assert sorted(result.sizes().tolist()) == sorted(
      np.bincount(labels).tolist())
  members = result.members(int(result.assignments[0]))
  assert 0 in members
  sims = result.similarity[members]
  assert (np.diff(sims) <= 0).all()
  with pytest.raises(ValueError, match="k must be"):
    clustering.kmeans(vectors[:3], 4)


U_ITEM_LINES = [
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0"
    "|0|0|0|0",
    "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0"
    "|0|1|0|0",
    "3|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0"
    "|0|1|0|0",
    "4|Misérables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0"
    "|0|0|0|0|0|0|0",
]


@pytest.fixture(scope="module")
def movie_export(tmp_path_factory):
  """A small exported movie table whose neighbours are known."""
  root = tmp_path_factory.mktemp("neighbors_export")
  tokens = ["1", "2", "3", "4", "[OOV_0]"]
  vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0.3, 0],
                      [1, 0, 0.001]], np.float32)
  artifacts.EmbeddingTable("movie", vectors, tokens,
                           {"vocabulary_size": 4, "num_oov_buckets": 1}).save(
                               str(root / "export" / "movie"))
  names = root / "u.item"
  names.write_bytes("\n".join(U_ITEM_LINES).encode("latin-1") + b"\n")
  return str(root / "export"), str(names)


def test_read_attributes_movielens_and_csv(movie_export, tmp_path):
  _, names = movie_export
  attributes = catalog.read_attributes(names)
  assert attributes["4"]["title"] == "Misérables, Les (1995)"
  assert attributes["2"]["genres"] == "Action|Adventure|Thriller"
  csv_path = tmp_path / "items.csv"
  csv_path.write_text('item_id,title,genres\nm1,"Heat, The (1995)",'
                      'Action|Crime\n', encoding="utf-8")
  assert catalog.read_attributes(str(csv_path)) == {
      "m1": {"title": "Heat, The (1995)", "genres": "Action|Crime"}}


def test_find_row_by_token_title_and_fragment(movie_export):
  _, names = movie_export
  titles = catalog.titles(catalog.read_attributes(names))
  tokens = ["1", "2", "3", "4", "[OOV_0]"]
  assert catalog.find_row("3", tokens, titles) == 2
  assert catalog.find_row("Toy Story (1995)", tokens, titles) == 0
  assert catalog.find_row("goldeneye", tokens, titles) == 1
  with pytest.raises(catalog.UnknownItemError, match="several titles"):
    catalog.find_row("(1995)", tokens, titles)
  with pytest.raises(catalog.UnknownItemError, match="neither a token"):
    catalog.find_row("Heat", tokens, titles)


def test_neighbors_cli_prints_titles_and_skips_oov(movie_export, capsys):
  export, names = movie_export
  assert neighbors.run(["--embeddings", export, "--table", "movie", "--item",
                        "Toy Story (1995)", "-k", "3", "--names", names]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert "Toy Story (1995)" in lines[0]
  # Cosine order from the table above: 2 (0.994), 4 (0.936), 3 (0.0); the
  # OOV row is nearly identical to 1 but never returned.
  assert [line.split()[2] for line in lines[1:]] == ["2", "4", "3"]
  assert lines[1].endswith("GoldenEye (1995)")
  assert "Misérables" in lines[2]
  assert neighbors.run(["--embeddings", export, "--table", "movie", "--item",
                        "Heat", "--names", names]) == 1
  assert "neither a token" in capsys.readouterr().err


def test_neighbors_of_table_rows_exact_and_approximate_agree(movie_export):
  export, _ = movie_export
  table = artifacts.load(export, "movie")
  exact = neighbors.neighbors(table, [0, 2], 2, approximate=False)
  assert [[row for row, _ in found] for found in exact] == [[1, 3], [3, 1]]
  approximate = neighbors.neighbors(table, [0, 2], 2, approximate=True)
  assert [[row for row, _ in found] for found in approximate] == [[1, 3],
                                                                   [3, 1]]


def test_movielens_toy_story_neighbours_print_titles(trained_ml100k,
                                                     ml100k_dir, tmp_path,
                                                     capsys):
  """Toy Story's neighbours, titled, from the session's trained model."""
  exported = str(tmp_path / "embeddings")
  assert export.run(["--model_dir", trained_ml100k.config.model_dir,
                        "--output", exported, "--tables", "movie"]) == 0
  capsys.readouterr()
  u_item = os.path.join(ml100k_dir, "u.item")
  assert neighbors.run(["--embeddings", exported, "--table", "movie", "--item",
                        "Toy Story (1995)", "-k", "10", "--names",
                        u_item]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("nearest neighbours of 1 (Toy Story (1995))")
  titles = catalog.titles(catalog.read_attributes(u_item))
  table = artifacts.load(exported, "movie")
  assert len(lines) == 11
  similarities = []
  for line in lines[1:]:
    rank, similarity, *rest = line.split()
    if table.counts is not None:
      assert int(rest.pop(0)) >= neighbors.DEFAULT_MIN_COUNT
    token, *title = rest
    assert token in titles and token != "1"
    assert " ".join(title) == titles[token]
    assert token in table.tokens[:table.metadata["vocabulary_size"]]
    similarities.append(float(similarity))
  assert similarities == sorted(similarities, reverse=True)


def test_missing_table_names_the_tables_there(movie_export, capsys):
  export, _ = movie_export
  assert neighbors.run(["--embeddings", export, "--table", "film", "--item",
                        "1"]) == 2
  assert "no embedding table 'film'" in capsys.readouterr().err
  with pytest.raises(SystemExit, match="tables there: movie"):
    clustering.run(["--embeddings", export, "--table", "film"])


def test_cluster_cli_lists_members_and_writes_assignments(movie_export,
                                                          tmp_path, capsys):
  export, names = movie_export
  output = tmp_path / "clusters.csv"
  members = clustering.run(["--embeddings", export, "--table", "movie", "-k",
                            "2", "--names", names, "--output", str(output)])
  assert sorted(sorted(m) for m in members.values()) == [["1", "2", "4"],
                                                         ["3"]]
  printed = capsys.readouterr().out
  assert "3 members" in printed and "Four Rooms (1995)" in printed
  lines = output.read_text().splitlines()
  assert lines[0] == "token,cluster,similarity,title"
  assert len(lines) == 5 and not any("OOV" in line for line in lines)


NAMED_COUNTS = [10, 2, 7, 9, 0]


@pytest.fixture(scope="module")
def named_export(tmp_path_factory):
  """The movie table of movie_export with names, counts and groups."""
  root = tmp_path_factory.mktemp("named_export")
  tokens = ["1", "2", "3", "4", "[OOV_0]"]
  vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0.3, 0],
                      [1, 0, 0.001]], np.float32)
  artifacts.EmbeddingTable(
      "movie", vectors, tokens, {"vocabulary_size": 4, "num_oov_buckets": 1},
      names=["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)",
             "Misérables, Les (1995)", "[OOV_0]"],
      counts=NAMED_COUNTS,
      groups=["Animation", "Action", "Thriller", "Drama", ""]).save(
          str(root / "export" / "movie"))
  return str(root / "export")


def test_neighbors_frame_leaves_out_rarely_seen_rows(named_export):
  table = artifacts.load(named_export, "movie")
  frame = neighbors.neighbors_frame(table, "Toy Story (1995)", k=2)
  assert list(frame.columns) == ["query", "rank", "token", "name",
                                 "similarity", "count"]
  # "2" (GoldenEye) is the nearest, but seen in 2 training rows only.
  assert frame["query"].tolist() == ["1", "1"]
  assert frame["rank"].tolist() == [1, 2]
  assert frame["token"].tolist() == ["4", "3"]
  assert frame["name"].tolist() == ["Misérables, Les (1995)",
                                    "Four Rooms (1995)"]
  np.testing.assert_allclose(frame["similarity"], [0.8 / np.sqrt(0.73), 0.0],
                             atol=1e-6)
  assert frame["count"].tolist() == [9, 7]
  every = neighbors.neighbors_frame(table, ["1", "goldeneye"], k=3,
                                    min_count=0)
  assert list(zip(every["query"], every["token"])) == [
      ("1", "2"), ("1", "4"), ("1", "3"), ("2", "1"), ("2", "4"), ("2", "3")]
  with pytest.raises(catalog.UnknownItemError, match="neither a token"):
    neighbors.neighbors_frame(table, "Heat")


def test_neighbors_frame_without_counts_keeps_every_row(movie_export):
  export_dir, _ = movie_export
  frame = neighbors.neighbors_frame(artifacts.load(export_dir, "movie"), "1",
                                    k=3, min_count=5)
  assert frame["token"].tolist() == ["2", "4", "3"]
  assert frame["name"].tolist() == [None, None, None]
  assert frame["count"].isna().all()


def test_neighbors_cli_prints_the_exports_names_and_counts(named_export,
                                                           capsys):
  assert neighbors.run(["--embeddings", named_export, "--item", "Toy Story",
                        "-k", "2"]) == 0
  captured = capsys.readouterr()
  assert captured.out.splitlines() == [
      "nearest neighbours of 1 (Toy Story (1995)) in table 'movie', by "
      "cosine similarity (count: training rows):",
      "   1  +0.9363        9  4             Misérables, Les (1995)",
      "   2  +0.0000        7  3             Four Rooms (1995)"]
  assert captured.err.splitlines() == [
      "embeddings neighbors: 2 nearest neighbours of 1 item(s) in table "
      f"'movie' of {named_export}, printed above"]
  assert neighbors.run(["--embeddings", named_export, "--item", "1", "-k",
                        "1", "--min_count", "0", "--json"]) == 0
  assert json.loads(capsys.readouterr().out) == {
      "item": "1", "title": "Toy Story (1995)", "neighbors": [{
          "item": "2", "title": "GoldenEye (1995)", "similarity": 0.993884,
          "count": 2}]}


def test_names_flag_overrides_the_exports_names(named_export, movie_export,
                                                tmp_path, capsys):
  names = tmp_path / "items.csv"
  names.write_text("item_id,title\n4,Heat (1995)\n")
  assert neighbors.run(["--embeddings", named_export, "--item", "1", "-k",
                        "1", "--names", str(names)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("nearest neighbours of 1 in table")
  assert lines[1].endswith("4             Heat (1995)")


def test_min_count_is_off_with_a_note_without_counts(movie_export, capsys):
  export_dir, _ = movie_export
  assert neighbors.run(["--embeddings", export_dir, "--item", "1", "-k",
                        "1"]) == 0
  captured = capsys.readouterr()
  assert captured.out.splitlines()[1] == "   1  +0.9939  2"
  assert captured.err.splitlines()[0] == (
      "embeddings neighbors: note: table 'movie' has no training counts, so "
      "--min_count 5 is off")


def test_cluster_prints_the_exports_names(named_export, capsys):
  members = clustering.run(["--embeddings", named_export, "-k", "2"])
  assert sorted(sorted(m) for m in members.values()) == [["1", "2", "4"],
                                                         ["3"]]
  captured = capsys.readouterr()
  assert "Four Rooms (1995)" in captured.out
  assert captured.err == ("embeddings cluster: 2 clusters of 4 rows of table "
                          f"'movie' of {named_export}, printed above\n")


def test_a_missing_names_file_is_one_line(named_export, tmp_path, capsys):
  assert neighbors.run(["--embeddings", named_export, "--item", "1",
                        "--names", str(tmp_path / "missing.csv")]) == 2
  assert capsys.readouterr().err.startswith(
      "embeddings neighbors: [Errno 2] No such file or directory")
