"""`embeddings generate`: synthetic movie ratings with planted structure.

Writes:

  DIR/ratings.csv  user_id,item_id,rating,timestamp
                   (u17, m42, 1.0..5.0, unix seconds)
  DIR/users.csv    user_id,age,gender,occupation
  DIR/items.csv    item_id,title,genres  ("Action|Comedy")
  DIR/truth/       user_clusters.csv, item_clusters.csv, params.json,
                   {user,item}_factors.npy, {user,item}_bias.npy,
                   centroids.npy

The parameters and the rating model are in pipelines/world_params.py, who
rates what and how in pipelines/world.py; this module formats and writes.

Scale and determinism: the bytes depend on the Params only, not on
`--chunk_rows` (how many rows are formatted and written at a time). Memory
is O(users + items + block + chunk), independent of the number of ratings.
"""

import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from pipelines import options
from pipelines import world as world_lib
from pipelines import world_params

RATINGS_HEADER = ("user_id", "item_id", "rating", "timestamp")
USERS_HEADER = ("user_id", "age", "gender", "occupation")
ITEMS_HEADER = ("item_id", "title", "genres")

# Title words: no commas, quotes or newlines, so CSV fields never need quoting.
_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Frozen", "Lost",
    "Wild", "Dark", "Bright", "Burning", "Endless", "Secret", "Quiet", "Savage",
    "Electric", "Hollow", "Iron", "Midnight", "Northern", "Painted", "Restless",
    "Scarlet", "Shattered", "Sleeping", "Stolen", "Sunken", "Twisted",
    "Velvet", "Wandering", "Yellow", "Ancient", "Blue", "Cold", "Distant",
    "Empty", "Fading", "Glass", "Haunted", "Infinite", "Lonely", "Lucky",
    "Mad", "Neon", "Open", "Pale", "Rising", "Rusty", "Shadow", "Small",
    "Strange", "Sweet", "Tender", "Thin", "Violent", "Wicked", "Young",
    "Brave", "Falling", "Green", "Hungry", "Little", "Red")
_NOUNS = (
    "River", "City", "Garden", "Road", "Heart", "Dream", "Mountain", "Night",
    "Kingdom", "Summer", "Winter", "Shadow", "Island", "Storm", "Empire",
    "Horizon", "Harbor", "Letter", "Machine", "Mirror", "Ocean", "Planet",
    "Promise", "Rain", "Season", "Signal", "Song", "Station", "Stranger",
    "Tower", "Valley", "Voyage", "Angel", "Bridge", "Circus", "Desert",
    "Engine", "Forest", "Frontier", "Ghost", "Hotel", "Hunter", "Journey",
    "Legend", "Lighthouse", "Memory", "Moon", "Orchard", "Palace", "Prairie",
    "Queen", "Saint", "Secret", "Sky", "Soldier", "Sun", "Thief", "Train",
    "Voice", "War", "Wind", "Wolf", "World", "Zone")

DEFAULT_CHUNK_ROWS = options.DEFAULT_CHUNK_ROWS


def _id_strings(prefix: str, n: int) -> pa.Array:
  """["{prefix}1", ..., "{prefix}{n}"], 1-based like MovieLens."""
  return pa.array(np.char.add(prefix, np.arange(1, n + 1).astype("U")),
                  pa.string())


def _titles(title_ids: np.ndarray, years: np.ndarray) -> List[str]:
  """Unique titles: (adjective, noun, sequel number) is unique per id."""
  a, b = len(_ADJECTIVES), len(_NOUNS)
  titles = []
  for tid, year in zip(title_ids.tolist(), years.tolist()):
    sequel = tid // (a * b)
    name = f"{_ADJECTIVES[tid % a]} {_NOUNS[(tid // a) % b]}"
    if sequel:
      name += f" {sequel + 1}"
    titles.append(f"{name} ({year})")
  return titles


class _CsvFile:
  """A CSV file written in pieces; bytes do not depend on the pieces."""

  def __init__(self, path: str, header: Sequence[str], schema: pa.Schema):
    self._handle = open(path, "wb")
    self._handle.write((",".join(header) + "\n").encode("ascii"))
    # No field ever holds a comma, quote or newline, so nothing is quoted.
    self._writer = pa_csv.CSVWriter(
        self._handle, schema, write_options=pa_csv.WriteOptions(
            include_header=False, quoting_style="none"))
    self.rows = 0

  def write(self, batch: pa.RecordBatch) -> None:
    self._writer.write_batch(batch)
    self.rows += batch.num_rows

  def close(self) -> None:
    self._writer.close()
    self._handle.close()


def _ratings_batches(world: world_lib.World, chunk_rows: int
                     ) -> Iterator[Dict[str, np.ndarray]]:
  """Re-slices the per-block ratings into pieces of chunk_rows rows."""
  pending: List[Dict[str, np.ndarray]] = []
  pending_rows = 0
  for block in range(world.num_blocks):
    part = world.ratings_block(block)
    pending.append(part)
    pending_rows += len(part["user"])
    while pending_rows >= chunk_rows:
      merged = {key: np.concatenate([piece[key] for piece in pending])
                for key in pending[0]}
      yield {key: value[:chunk_rows] for key, value in merged.items()}
      rest = {key: value[chunk_rows:] for key, value in merged.items()}
      pending, pending_rows = [rest], pending_rows - chunk_rows
  if pending_rows:
    yield {key: np.concatenate([piece[key] for piece in pending])
           for key in pending[0]}


def _write_ratings(world: world_lib.World, path: str, chunk_rows: int) -> int:
  p = world.params
  user_ids = _id_strings("u", p.users)
  item_ids = _id_strings("m", p.items)
  steps = int(round(4.0 / p.rating_step)) + 1
  rating_text = pa.array([str(round(1.0 + i * p.rating_step, 6))
                          for i in range(steps)], pa.string())
  schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                      ("rating", pa.string()), ("timestamp", pa.int64())])
  out = _CsvFile(path, RATINGS_HEADER, schema)
  try:
    for piece in _ratings_batches(world, chunk_rows):
      step_index = np.round((piece["rating"] - 1.0) / p.rating_step)
      batch = pa.record_batch([
          user_ids.take(pa.array(piece["user"])),
          item_ids.take(pa.array(piece["item"])),
          rating_text.take(pa.array(step_index.astype(np.int32))),
          pa.array(piece["timestamp"]),
      ], schema=schema)
      out.write(batch)
  finally:
    out.close()
  return out.rows


def _write_table(path: str, header: Sequence[str], columns: Sequence[pa.Array],
                 chunk_rows: int) -> None:
  schema = pa.schema([(name, column.type)
                      for name, column in zip(header, columns)])
  out = _CsvFile(path, header, schema)
  try:
    n = len(columns[0])
    for start in range(0, n, chunk_rows):
      out.write(pa.record_batch(
          [column.slice(start, chunk_rows) for column in columns],
          schema=schema))
  finally:
    out.close()


def _write_users(world: world_lib.World, path: str, user_ids: pa.Array,
                 chunk_rows: int) -> None:
  users = world.users_table()
  _write_table(path, USERS_HEADER, [
      user_ids, pa.array(users["age"]),
      pa.array(["M", "F"], pa.string()).take(pa.array(users["gender"])),
      pa.array(world_params.OCCUPATIONS, pa.string()).take(
          pa.array(users["occupation"]))], chunk_rows)


def _write_items(world: world_lib.World, path: str, item_ids: pa.Array,
                 chunk_rows: int) -> None:
  items = world.items_table()
  genres = world_params.GENRES
  # Format each distinct genre set once: far fewer sets than items.
  masks = items["chosen"].astype(np.int64) @ (1 << np.arange(len(genres)))
  distinct, which = np.unique(masks, return_inverse=True)
  genre_text = pa.array(["|".join(g for j, g in enumerate(genres)
                                  if mask >> j & 1)
                         for mask in distinct.tolist()], pa.string())
  _write_table(path, ITEMS_HEADER, [
      item_ids, pa.array(_titles(items["title_ids"], items["years"]),
                         pa.string()),
      genre_text.take(pa.array(which))], chunk_rows)


def _write_truth(world: world_lib.World, truth: str, user_ids: pa.Array,
                 item_ids: pa.Array, chunk_rows: int) -> None:
  """The planted structure: clusters, factors, biases, every parameter."""
  _write_table(os.path.join(truth, "user_clusters.csv"),
               ("user_id", "cluster"),
               [user_ids, pa.array(world.user_cluster.astype(np.int64))],
               chunk_rows)
  _write_table(os.path.join(truth, "item_clusters.csv"),
               ("item_id", "cluster"),
               [item_ids, pa.array(world.item_cluster.astype(np.int64))],
               chunk_rows)
  for name, array in (("user_factors", world.user_factors),
                      ("item_factors", world.item_factors),
                      ("user_bias", world.user_bias),
                      ("item_bias", world.item_bias),
                      ("centroids", world.centroids.astype(np.float32))):
    np.save(os.path.join(truth, f"{name}.npy"), array)
  with open(os.path.join(truth, "params.json"), "w", encoding="utf-8") as f:
    json.dump(world.params.to_json(), f, indent=2, sort_keys=True)
    f.write("\n")


def generate(output: str, params: world_params.Params,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Dict:
  """Writes the dataset under `output` (created if missing).

  Args:
    output: destination directory.
    params: generation parameters (decide the bytes written).
    chunk_rows: rows formatted and written at a time; bounds memory and does
      not change the output.

  Returns:
    A summary: rows, users, items, clusters, seconds, rows_per_second.

  Raises:
    ValueError: chunk_rows is below 1.
  """
  if chunk_rows < 1:
    raise ValueError(f"--chunk_rows must be >= 1, got {chunk_rows}")
  began = time.perf_counter()
  truth = os.path.join(output, "truth")
  os.makedirs(truth, exist_ok=True)
  world = world_lib.World(params)
  p = params

  rows = _write_ratings(world, os.path.join(output, "ratings.csv"), chunk_rows)
  if rows != p.rows:
    raise AssertionError(f"wrote {rows} ratings, expected {p.rows}")
  user_ids = _id_strings("u", p.users)
  item_ids = _id_strings("m", p.items)
  _write_users(world, os.path.join(output, "users.csv"), user_ids, chunk_rows)
  _write_items(world, os.path.join(output, "items.csv"), item_ids, chunk_rows)
  _write_truth(world, truth, user_ids, item_ids, chunk_rows)

  seconds = time.perf_counter() - began
  return {"rows": rows, "users": p.users, "items": p.items,
          "clusters": p.clusters, "seconds": round(seconds, 3),
          "rows_per_second": round(rows / max(seconds, 1e-9))}


def run(argv: Optional[Sequence[str]] = None) -> Dict:
  """Entry point of `embeddings generate`.

  Args:
    argv: command-line flags (default: sys.argv[1:]).

  Returns:
    The summary `generate` returns.
  """
  args, _ = options.generate_parser().parse_known_args(argv)
  params = world_params.Params(
      rows=args.rows, seed=args.seed, users=args.users, items=args.items,
      clusters=args.clusters, dim=args.dim, noise=args.noise,
      affinity=args.affinity, spread=args.spread, in_cluster=args.in_cluster,
      item_zipf=args.item_zipf, rating_step=args.rating_step,
      block_rows=args.block_rows)
  summary = generate(args.output, params, chunk_rows=args.chunk_rows)
  logging.info("generated %s", summary)
  print(summary_line(args.output, summary))
  return summary


def summary_line(output: str, summary: Dict[str, Any]) -> str:
  """The one line `embeddings generate` ends with.

  Args:
    output: the folder written.
    summary: what `generate` returned.

  Returns:
    The line: rows, users, items, clusters, time and where.
  """
  return (f"embeddings generate: {summary['rows']:,} ratings of "
          f"{summary['users']:,} users x {summary['items']:,} items "
          f"({summary['clusters']} planted clusters) in "
          f"{summary['seconds']:.1f} s -> {output} (ratings.csv, users.csv, "
          f"items.csv)")


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  run()
