"""recommend-batch at scale: the sharded seen join, the approximate index."""

import json
import shutil

from apache_beam.utils import shared
import numpy as np
import pyarrow as pa
import pytest

from core import artifacts
from core import layout
from retrieval import approximate
from retrieval import index as index_lib
from workflows import recommend_batch as batch
from workflows import recommend_batch_options as batch_options
from workflows import recommend_chunks as chunks
from workflows import recommend_index
from workflows import recommend_output
from workflows import recommend_seen
from workflows import recommend_tables as tables

DIM, K, SHARDS = 3, 4, 4


def _save(root, users, user_tokens, items, item_tokens, bias):
  """An mf-like export: user and movie tables, the movie bias table."""
  export = root / "export"
  artifacts.EmbeddingTable(
      "user", users, user_tokens,
      {"vocabulary_size": len(user_tokens), "num_oov_buckets": 0}).save(
          str(export / "user"))
  meta = {"vocabulary_size": len(item_tokens), "num_oov_buckets": 0}
  artifacts.EmbeddingTable("movie", items, item_tokens, meta).save(
      str(export / "movie"))
  artifacts.EmbeddingTable(layout.bias_table_name("movie"), bias[:, None],
                           item_tokens, meta).save(
                               str(export / layout.bias_table_name("movie")))
  return str(export)


def _ratings(path, pairs, extra_lines=()):
  lines = ["user_id,item_id,rating,timestamp"]
  lines += [f"{user},{item},4.0,0" for user, item in pairs]
  path.write_text("\n".join(lines + list(extra_lines)) + "\n")
  return str(path)


def _brute_force(users, items, bias, seen, k):
  """Rows of the k best unseen items per user, ties by the smaller row."""
  scores = users @ items.T + bias
  result = []
  for row, user_scores in enumerate(scores):
    order = [int(i) for i in np.argsort(-user_scores, kind="stable")
             if int(i) not in seen.get(row, set())]
    result.append(order[:k])
  return result, scores


def _outputs(output):
  return (recommend_output.read_recommendations(output),
          recommend_output.read_dead_letters(output))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """30 users x 12 items; u0 has seen every item, u1 all but two; a ghost."""
  root = tmp_path_factory.mktemp("scale_tiny")
  rng = np.random.default_rng(5)
  users = rng.standard_normal((30, DIM)).astype(np.float32)
  items = rng.standard_normal((12, DIM)).astype(np.float32)
  bias = rng.standard_normal(12).astype(np.float32)
  seen = {0: set(range(12)), 1: set(range(2, 12))}
  for row in range(2, 30):
    seen[row] = set(int(i) for i in rng.choice(12, rng.integers(0, 6),
                                               replace=False))
  pairs = [(f"u{row}", f"m{item}") for row in sorted(seen)
           for item in sorted(seen[row])]
  # A repeated rating, an unknown item, a ghost user; a row without a user
  # and a line that is no row.
  pairs += [("u3", "m0"), ("u3", "m0"), ("u4", "m99"), ("ghost", "m1"),
            ("ghost", "m2")]
  ratings = _ratings(root / "ratings.csv", pairs, [",m5,4.0,0", "u5;m1"])
  seen[3].add(0)
  return {"root": root, "users": users, "items": items, "bias": bias,
          "seen": seen, "ratings": ratings, "rows": len(pairs) + 2,
          "export": _save(root, users, [f"u{i}" for i in range(30)], items,
                          [f"m{i}" for i in range(12)], bias)}


@pytest.mark.parametrize("kind", [batch_options.EXACT,
                                  batch_options.APPROXIMATE])
def test_sharded_join_equals_brute_force(tiny, kind):
  output = str(tiny["root"] / f"out_{kind}")
  report = batch.run(["--embeddings", tiny["export"], "--output", output,
                      "-k", str(K), "--seen", tiny["ratings"], "--index",
                      kind, "--shards", str(SHARDS), "--block_size", "4",
                      "--runner", "DirectRunner"])
  expected, scores = _brute_force(tiny["users"], tiny["items"], tiny["bias"],
                                  tiny["seen"], K)
  records, dead = _outputs(output)
  assert sorted(records) == sorted(f"u{i}" for i in range(30))
  for row, want in enumerate(expected):
    record = records[f"u{row}"]
    assert record["items"] == [f"m{i}" for i in want], row
    np.testing.assert_allclose(record["scores"], scores[row, want],
                               rtol=1e-5, atol=1e-5)
  # Every item seen: nothing left; all but two: those two.
  assert records["u0"]["items"] == []
  assert sorted(records["u1"]["items"]) == ["m0", "m1"]
  assert sorted((d["reason"], json.dumps(d["raw"])) for d in dead) == [
      (chunks.BAD_CSV_ROW, json.dumps("u5;m1")),
      (chunks.MISSING_ID, json.dumps({"user": None, "item": "m5"})),
      (chunks.NO_EMBEDDING, json.dumps({"user": "ghost"}))]
  counts = report["counts"]
  assert report["users"] == {"in": 31, "written": 30, "dead_lettered": 1}
  assert report["seen_rows"] == {"in": tiny["rows"],
                                 "used": tiny["rows"] - 4,
                                 "dead_lettered": 4, "items_unknown": 1}
  assert counts["users_scored"] == 30
  # Packed chunks, not ratings, cross the shuffle: at most one per shard,
  # kind and flush (a flush holds users, or seen rows and unknown users),
  # and a flush per bundle of each side here.
  assert counts["chunks_packed"] <= 2 * SHARDS * counts["chunk_flushes"]
  assert counts["chunk_flushes"] <= 4
  assert counts["chunks_packed"] < counts["seen_rows_read"]
  assert report["index"]["kind"] == kind
  if kind == batch_options.APPROXIMATE:
    assert report["index"]["calibration_queries"] == 30
    assert report["index"]["calibrated_recall"] >= (
        approximate.DEFAULT_TARGET_RECALL)
    assert 1 <= report["index"]["nprobe"] <= report["index"]["nlist"]
  else:
    assert report["index"]["nprobe"] is None


def _clustered(rng, centres, n, spread):
  picks = rng.integers(0, len(centres), n)
  return (centres[picks] + spread * rng.standard_normal(
      (n, centres.shape[1]))).astype(np.float32)


def test_approximate_recall_and_seen_exclusion(tmp_path):
  rng = np.random.default_rng(9)
  centres = rng.standard_normal((40, 16)).astype(np.float32)
  items = _clustered(rng, centres, 4000, 0.5)
  users = _clustered(rng, centres, 300, 0.5)
  bias = (0.1 * rng.standard_normal(4000)).astype(np.float32)
  # Each user has seen some of their own best items, so exclusion matters.
  best = np.argsort(-(users @ items.T + bias), axis=1)[:, :40]
  seen = {row: set(int(i) for i in rng.choice(best[row], rng.integers(0, 30),
                                               replace=False))
          for row in range(300)}
  ratings = _ratings(tmp_path / "ratings.csv",
                     [(f"u{row}", f"m{i}") for row in seen
                      for i in sorted(seen[row])])
  export = _save(tmp_path, users, [f"u{i}" for i in range(300)], items,
                 [f"m{i}" for i in range(4000)], bias)
  output = str(tmp_path / "out")
  report = batch.run(["--embeddings", export, "--output", output, "-k", "10",
                      "--seen", ratings, "--index", "approximate",
                      "--runner", "DirectRunner"])
  assert report["index"]["kind"] == batch_options.APPROXIMATE
  assert report["index"]["nprobe"] < report["index"]["nlist"]
  expected, _ = _brute_force(users, items, bias, seen, 10)
  records, _ = _outputs(output)
  hits = 0
  for row, want in enumerate(expected):
    got = [int(item[1:]) for item in records[f"u{row}"]["items"]]
    assert len(got) == 10
    assert not set(got) & seen[row]
    hits += len(set(got) & set(want))
  assert hits / (10 * len(expected)) >= 0.95


def test_search_unseen_falls_back_to_exact_when_cells_run_out():
  rng = np.random.default_rng(2)
  table = rng.standard_normal((400, 4)).astype(np.float32)
  index = approximate.ApproximateIndex(table, metric=index_lib.DOT,
                                       nlist=10, nprobe=1)
  queries = rng.standard_normal((3, 4)).astype(np.float32)
  # Query 0 has seen all but 5 rows: its one cell cannot hold 5 unseen.
  rows = np.zeros(395, np.int64)
  excluded = (rows, np.arange(5, 400))

  def exact(subset, pairs):
    return index_lib.top_k(queries[subset], table, 8, excluded_pairs=pairs)

  scores, ids = approximate.search_unseen(index, queries, 8, excluded, exact)
  assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4]
  assert (ids[0, 5:] == -1).all() and np.isneginf(scores[0, 5:]).all()
  assert (ids[1:] >= 0).all()


def test_auto_index_by_the_number_of_items():
  assert recommend_index.index_kind(batch_options.AUTO, 10, threshold=9) == (
      batch_options.APPROXIMATE)
  assert recommend_index.index_kind(batch_options.AUTO, 9, threshold=9) == (
      batch_options.EXACT)
  assert recommend_index.index_kind(batch_options.EXACT, 10**7) == (
      batch_options.EXACT)


@pytest.mark.parametrize("collide", [False, True])
def test_token_rows_maps_tokens_exactly(monkeypatch, collide):
  if collide:
    # Every token one hash: only the check against the tokens tells them
    # apart.
    monkeypatch.setattr(tables, "token_hashes",
                        lambda tokens: np.zeros(len(tokens), np.uint64))
  rows = tables.TokenRows(pa.array(["b", "a", "c", "a", "d"]))
  np.testing.assert_array_equal(
      rows.rows_of(pa.array(["a", "d", "zz", "b", "c", "a", ""])),
      [1, 4, -1, 0, 2, 1, -1])
  assert rows.token_list(np.array([4, 0])) == ["d", "b"]
  np.testing.assert_array_equal(tables.TokenRows(pa.array([], pa.string()))
                                .rows_of(pa.array(["a"])), [-1])


def test_pack_seen_sends_table_rows_and_unknown_users_once(tiny):
  loader = tables.TablesLoader(
      tables.ItemLoader(tiny["export"], "movie", True),
      tables.UserRowsLoader(tiny["export"], "user"))
  pack = recommend_seen.PackSeenBatches("user_id", "item_id", loader,
                                        shared.Shared(), shards=1)
  pack.setup()
  pack.start_bundle()
  batch_ = pa.RecordBatch.from_arrays(
      [pa.array(["u7", "ghost", "u3", "ghost", "u7"]),
       pa.array(["m2", "m1", "m99", "m4", "m0"])], ["user_id", "item_id"])
  assert not list(pack.process(batch_))
  flushed = sorted((output.value[1] for output in pack.finish_bundle()),
                   key=lambda chunk: chunk[0])
  (seen_kind, pairs), (unknown_kind, users, ratings) = flushed
  assert (seen_kind, unknown_kind) == (chunks.SEEN, chunks.UNKNOWN_USERS)
  user_rows, item_rows = chunks.unpack_pairs(pairs)
  assert (user_rows.dtype, item_rows.dtype) == (np.int32, np.int32)
  # By user row; an item the table lacks is row -1.
  np.testing.assert_array_equal(user_rows, [3, 7, 7])
  np.testing.assert_array_equal(item_rows, [-1, 2, 0])
  assert (users.to_pylist(), ratings.tolist()) == (["ghost"], [2])


def test_pairs_pack_into_fewer_bytes_and_back():
  rng = np.random.default_rng(3)
  users = rng.integers(0, 10**6, 5000).astype(np.int32)
  items = rng.integers(-1, 5 * 10**5, 5000).astype(np.int32)
  packed = chunks.pack_pairs(users, items)
  assert len(packed) < 8 * len(users)
  back_users, back_items = chunks.unpack_pairs(packed)
  order = np.argsort(users, kind="stable")
  np.testing.assert_array_equal(back_users, users[order])
  np.testing.assert_array_equal(back_items, items[order])
  assert [part.tolist() for part in chunks.unpack_pairs(chunks.pack_pairs(
      np.zeros(0, np.int32), np.zeros(0, np.int32)))] == [[], []]


def test_a_rated_user_whose_line_is_rejected_is_dead_lettered(tiny, tmp_path):
  export = tmp_path / "export"
  shutil.copytree(tiny["export"], export)
  word2vec = export / "user" / "word2vec.txt"
  lines = word2vec.read_text().splitlines()
  assert lines[3].startswith("u2 ")
  lines[3] = "u2 1 x 3"
  word2vec.write_text("\n".join(lines) + "\n")
  output = str(tmp_path / "out")
  report = batch.run(["--embeddings", str(export), "--output", output,
                      "-k", str(K), "--seen", tiny["ratings"], "--shards",
                      str(SHARDS), "--index", "exact",
                      "--runner", "DirectRunner"])
  records, dead = _outputs(output)
  assert sorted(records) == sorted(f"u{i}" for i in range(30) if i != 2)
  assert sorted((d["reason"], json.dumps(d["raw"])) for d in dead) == [
      (chunks.BAD_CSV_ROW, json.dumps("u5;m1")),
      (chunks.MISSING_ID, json.dumps({"user": None, "item": "m5"})),
      (chunks.NO_EMBEDDING, json.dumps({"user": "ghost"})),
      (chunks.NO_EMBEDDING, json.dumps({"user": "u2"})),
      (chunks.BAD_VECTOR, json.dumps("u2 1 x 3"))]
  rated = len(tiny["seen"][2])
  assert report["seen_rows"] == {"in": tiny["rows"],
                                 "used": tiny["rows"] - 4 - rated,
                                 "dead_lettered": 4 + rated,
                                 "items_unknown": 1}
  # u2 is counted as a rejected line and as a rater without an embedding.
  assert report["users"] == {"in": 32, "written": 29, "dead_lettered": 3}
