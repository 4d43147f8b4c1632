"""The projector export, read back through a real TensorBoard process; maps."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from core import artifacts
from retrieval import maps
from retrieval import projector

TOKENS = ["m1", "m2", "m3", "m4", "m5", "m6"]
ITEMS_CSV = ("item_id,title,genres\n"
             "m1,\"Heat, The (1995)\",Action|Crime\n"
             "m2,Toy Story (1995),Animation|Comedy\n"
             "m3,Casino (1995),Crime|Drama\n"
             "m4,Babe (1995),Comedy\n"
             "m5,Jumanji (1995),Adventure\n")
CLUSTERS_CSV = "item_id,cluster\nm1,0\nm2,1\nm3,0\nm4,1\nm5,1\nm6,0\n"
TENSORBOARD_START_SECONDS = 240


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """An artifact exported through `embeddings projector` twice: ckpt, TSV."""
  import tensorflow as tf
  root = tmp_path_factory.mktemp("projector")
  rng = np.random.default_rng(5)
  vectors = rng.standard_normal((len(TOKENS) + 1, 4)).astype(np.float32)
  artifacts.EmbeddingTable(
      "movie", vectors, TOKENS + ["[OOV_0]"],
      {"vocabulary_size": len(TOKENS), "num_oov_buckets": 1}).save(
          str(root / "export" / "movie"))
  (root / "items.csv").write_text(ITEMS_CSV)
  (root / "item_clusters.csv").write_text(CLUSTERS_CSV)
  logdir = root / "logs"
  common = ["--embeddings", str(root / "export"), "--table", "movie",
            "--names", str(root / "items.csv"), "--labels",
            str(root / "item_clusters.csv")]
  written = projector.run(common + ["--output", str(logdir / "ckpt"),
                                    "--tensor_format", "checkpoint"])
  projector.run(common + ["--output", str(logdir / "tsv"),
                          "--tensor_format", "tsv", "--map_method", "tsne"])
  # TensorBoard lists a subdirectory as a run when it holds an event file.
  for run in ("ckpt", "tsv"):
    writer = tf.summary.create_file_writer(str(logdir / run))
    with writer.as_default():
      tf.summary.scalar("written", 1.0, step=0)
    writer.close()
  return {"logdir": str(logdir), "vectors": vectors[:len(TOKENS)],
          "written": written}


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> bytes:
  with urllib.request.urlopen(url, timeout=timeout) as response:
    return response.read()


@pytest.fixture(scope="module")
def tensorboard(exported):
  """A TensorBoard process on an ephemeral localhost port; always stopped."""
  deadline = time.monotonic() + TENSORBOARD_START_SECONDS
  for _ in range(3):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir",
         exported["logdir"], "--host", "127.0.0.1", "--port", str(port),
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
      while process.poll() is None and time.monotonic() < deadline:
        try:
          runs = json.loads(_get(base + "/runs"))
          if len(runs) >= 2:
            yield base
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
          pass
        time.sleep(1.0)
    finally:
      process.terminate()
      try:
        output = process.communicate(timeout=30)[0]
      except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0]
    if time.monotonic() >= deadline:
      break
  pytest.fail(f"TensorBoard did not serve the projector runs within "
              f"{TENSORBOARD_START_SECONDS}s; its output:\n"
              f"{output.decode(errors='replace')[-3000:]}")


def test_metadata_tsv_header_only_with_several_columns():
  assert projector.metadata_tsv({"label": ["a", "b\tc"]}) == "a\nb c\n"
  assert projector.metadata_tsv({"token": ["x"], "genre": ["y"]}) == (
      "token\tgenre\nx\ty\n")
  with pytest.raises(ValueError, match="differ in length"):
    projector.metadata_tsv({"a": ["1"], "b": []})


def test_tensorboard_lists_both_runs(tensorboard):
  assert sorted(json.loads(_get(tensorboard + "/runs"))) == ["ckpt", "tsv"]


@pytest.mark.parametrize("run,name", [
    ("ckpt", projector.tensor_name("movie")),
    ("tsv", "movie"),
])
def test_tensorboard_serves_the_exported_table(tensorboard, exported, run,
                                               name):
  info = json.loads(_get(f"{tensorboard}/info?run={run}"))
  [embedding] = info["embeddings"]
  assert embedding["tensorName"] == name
  assert [int(x) for x in embedding["tensorShape"]] == [len(TOKENS), 4]
  query = urllib.parse.urlencode({"run": run, "name": name})
  tensor = np.frombuffer(_get(f"{tensorboard}/tensor?{query}"), np.float32)
  # OOV rows are not exported; every real row comes back bit for bit.
  np.testing.assert_array_equal(tensor.reshape(len(TOKENS), 4),
                                exported["vectors"])
  metadata = _get(f"{tensorboard}/metadata?{query}").decode().splitlines()
  assert metadata[0].split("\t") == ["token", "title", "genres", "cluster"]
  assert metadata[1].split("\t") == ["m1", "Heat, The (1995)", "Action|Crime",
                                     "0"]
  assert metadata[6].split("\t") == ["m6", "", "", "0"]
  assert len(metadata) == 1 + len(TOKENS)


def test_map_png_written(exported):
  import matplotlib.image
  path = exported["written"]["movie_map"]
  image = matplotlib.image.imread(path)
  assert image.shape[:2] == (800, 800)
  # Not a blank canvas: the points and legend put colour on it.
  assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


def test_plot_map_colours_top_labels_and_greys_the_rest(tmp_path):
  labels = [str(i % 15) for i in range(300)] + ["0"] * 30
  coords = np.random.default_rng(0).standard_normal((330, 2))
  drawn = maps.plot_map(coords, labels, str(tmp_path / "map.png"))
  assert drawn["0"] == 50
  assert len(drawn) == maps.MAX_LEGEND + 1
  # Ties among the twenty-point labels go to the first seen: "1".."11".
  assert [label for label in drawn if label != "other"] == [
      str(i) for i in range(12)]
  assert drawn["other"] == 3 * 20
  assert os.path.getsize(tmp_path / "map.png") > 1000


def _grouped_table():
  return artifacts.EmbeddingTable(
      "movie", np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]],
      ["m1", "m2", "m3", "m4", "[OOV_0]"],
      {"vocabulary_size": 4, "num_oov_buckets": 1,
       "group_feature": "genres"},
      names=["Heat (1995)", "Babe (1995)", "m3", "m4", "[OOV_0]"],
      counts=[3, 1, 4, 1, 0], groups=["Action", "Comedy", "Action", "", ""])


def test_table_columns_carry_the_exports_names_counts_groups():
  table = _grouped_table()
  columns = projector.table_columns(table, table.real_rows, [])
  assert columns == {"token": ["m1", "m2", "m3", "m4"],
                     "name": ["Heat (1995)", "Babe (1995)", "m3", "m4"],
                     "count": ["3", "1", "4", "1"],
                     "group": ["Action", "Comedy", "Action", ""]}


def test_map_is_coloured_by_groups_else_by_kmeans():
  table = _grouped_table()
  rows = table.real_rows
  columns = projector.table_columns(table, rows, [])
  colors, title = projector.map_colors(table, table.vectors[rows], columns,
                                       None)
  assert (colors, title) == (["Action", "Comedy", "Action", ""], "genres")
  assert projector.map_colors(table, table.vectors[rows], columns,
                              "count") == (["3", "1", "4", "1"], "count")
  bare = artifacts.EmbeddingTable("movie", table.vectors, table.tokens,
                                  table.metadata)
  columns = projector.table_columns(bare, rows, [])
  colors, title = projector.map_colors(bare, bare.vectors[rows], columns,
                                       None)
  assert title == "k-means cluster (the export has no groups)"
  # Four orthogonal rows: one cluster each.
  assert sorted(colors) == ["0", "1", "2", "3"]
  assert columns[projector.KMEANS_COLUMN] == colors
  with pytest.raises(SystemExit, match="--color_by 'genre' is not"):
    projector.map_colors(bare, bare.vectors[rows], columns, "genre")


def test_projector_run_writes_names_and_groups(tmp_path, capsys):
  _grouped_table().save(str(tmp_path / "export" / "movie"))
  output = tmp_path / "logs"
  projector.run(["--embeddings", str(tmp_path / "export"), "--output",
                 str(output)])
  with open(output / "movie_metadata.tsv", encoding="utf-8") as handle:
    assert handle.read().splitlines()[:2] == [
        "token\tname\tcount\tgroup", "m1\tHeat (1995)\t3\tAction"]
  assert capsys.readouterr().err == (
      f"embeddings projector: 1 table(s) (movie) for the Embedding Projector "
      f"and their maps ({output}/movie_map.png) in {output}; view: "
      f"tensorboard --logdir {output} (PROJECTOR tab)\n")


def test_a_missing_labels_file_is_one_line(tmp_path):
  _grouped_table().save(str(tmp_path / "export" / "movie"))
  with pytest.raises(SystemExit, match=r"^embeddings projector: \[Errno 2\]"):
    projector.run(["--embeddings", str(tmp_path / "export"), "--output",
                   str(tmp_path / "logs"), "--labels",
                   str(tmp_path / "missing.csv")])
