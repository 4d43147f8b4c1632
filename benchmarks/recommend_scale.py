"""recommend-batch at catalogue scale: memory against ratings, ANN recall.

  python -m benchmarks.recommend_scale [--users 1000000] [--items 500000] \\
      [--rows 1000000,20000000] [--work /tmp/recommend_scale] [--keep]

For each --rows count it generates a dataset (`embeddings generate`, the
same users and items every time), runs

  embeddings recommend-batch --embeddings E --seen DATA/ratings.csv \\
      --output O -k 10 --index auto --runner DirectRunner

under /usr/bin/time -v (the in-process runner: the peak RSS is the whole
job's) and reports wall and CPU seconds, peak RSS (time's, and the process
tree's sampled every 0.5 s with a coarse timeline of it, which tells the
stages apart), users/s, the index the
job chose and the recall@10 of its output against exact search (faiss
IndexFlatIP over the items augmented by their bias, seen items excluded)
on a sample of users. The export is written once, without training, from
the generator's true factors (truth/{user,item}_factors.npy and
item_bias.npy): an mf export with the planted structure a trained one
approximates. Targets: peak RSS at the most ratings at most 1.5 times the
peak at the fewest; recall@10 >= 0.95.

Generated data (about 60 bytes a rating) is deleted at the end unless
--keep; the result is printed and written to WORK/recommend_scale.json.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import faiss
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

import benchmarks
from core import artifacts
from core import layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDINGS = os.path.join(os.path.dirname(sys.executable), "embeddings")
K = 10
# [seconds, MiB] pairs in a run's RSS timeline.
TIMELINE_POINTS = 40
_TIME_FIELDS = {"Maximum resident set size (kbytes)": "peak_rss_kib",
                "User time (seconds)": "user_seconds",
                "System time (seconds)": "system_seconds",
                "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall"}


def _generate(data: str, users: int, items: int, rows: int, dim: int) -> None:
  if os.path.exists(os.path.join(data, "ratings.csv")):
    return
  subprocess.run([EMBEDDINGS, "generate", "--users", str(users), "--items",
                  str(items), "--rows", str(rows), "--dim", str(dim),
                  "--output", data], check=True, cwd=REPO)


def _export(data: str, export: str) -> str:
  """An mf-like export from the generator's true factors (written once)."""
  if os.path.exists(os.path.join(export, "movie", layout.METADATA_FILE)):
    return export
  truth = os.path.join(data, "truth")
  users = np.load(os.path.join(truth, "user_factors.npy")).astype(np.float32)
  items = np.load(os.path.join(truth, "item_factors.npy")).astype(np.float32)
  bias = np.load(os.path.join(truth, "item_bias.npy")).astype(np.float32)
  item_tokens = [f"m{i}" for i in range(1, len(items) + 1)]
  meta = {"model_type": "mf", "score": artifacts.DOT_SCORE,
          "num_oov_buckets": 0}
  artifacts.EmbeddingTable(
      "user", users, [f"u{i}" for i in range(1, len(users) + 1)],
      dict(meta, vocabulary_size=len(users))).save(
          os.path.join(export, "user"))
  item_meta = dict(meta, vocabulary_size=len(items))
  artifacts.EmbeddingTable("movie", items, item_tokens, item_meta).save(
      os.path.join(export, "movie"))
  artifacts.EmbeddingTable(layout.bias_table_name("movie"), bias[:, None],
                           item_tokens, item_meta).save(
                               os.path.join(export,
                                            layout.bias_table_name("movie")))
  return export


class RssTimeline:
  """The RSS of a process tree sampled every `interval` seconds.

  Usage: `with RssTimeline(pid) as timeline: ...`; then timeline.samples,
  [(seconds since the start, bytes)], and timeline.peak_bytes.
  """

  def __init__(self, pid: int, interval: float = 0.5):
    self._process = psutil.Process(pid)
    self._interval = interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self.samples: List[Tuple[float, int]] = []
    self.peak_bytes = 0

  def _sample(self) -> None:
    started = time.monotonic()
    while not self._stop.is_set():
      rss = benchmarks.tree_rss(self._process)
      self.samples.append((time.monotonic() - started, rss))
      self.peak_bytes = max(self.peak_bytes, rss)
      time.sleep(self._interval)

  def __enter__(self) -> "RssTimeline":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()

  def coarse(self, points: int) -> List[List[float]]:
    """About `points` [seconds, MiB] pairs, each the peak of its stretch."""
    step = max(1, -(-len(self.samples) // points))
    return [[round(self.samples[start][0]),
             round(max(rss for _, rss in self.samples[start:start + step])
                   / 2**20)]
            for start in range(0, len(self.samples), step)]


def _seconds(clock: str) -> float:
  parts = [float(part) for part in clock.split(":")]
  return sum(part * 60 ** power for power, part in enumerate(reversed(parts)))


def _run_job(export: str, seen: str, output: str,
             extra: Sequence[str]) -> Dict:
  """The job under /usr/bin/time -v: its report, wall, CPU, peak RSS."""
  shutil.rmtree(output, ignore_errors=True)
  job = subprocess.Popen(
      ["/usr/bin/time", "-v", EMBEDDINGS, "recommend-batch", "--embeddings",
       export, "--seen", seen, "--output", output, "-k", str(K), "--index",
       "auto", "--runner", "DirectRunner", *extra], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  timeline = RssTimeline(job.pid)
  with timeline:
    _, stderr = job.communicate()
  if job.returncode != 0:
    raise RuntimeError(f"recommend-batch failed:\n{stderr[-4000:]}")
  measured = {}
  for line in stderr.splitlines():
    name, _, value = line.strip().rpartition(": ")
    if name in _TIME_FIELDS:
      measured[_TIME_FIELDS[name]] = value
  with open(layout.RecommendationsLayout(output).report) as handle:
    report = json.load(handle)
  wall = _seconds(measured["wall"])
  progress = [line for line in stderr.splitlines()
              if re.match(r"embeddings recommend-batch: scored ", line)]
  return {"wall_seconds": round(wall, 1),
          "cpu_seconds": round(float(measured["user_seconds"]) +
                               float(measured["system_seconds"]), 1),
          "peak_rss_mib": round(int(measured["peak_rss_kib"]) / 1024, 1),
          "peak_tree_rss_mib": round(timeline.peak_bytes / 2**20, 1),
          "rss_timeline_mib": timeline.coarse(TIMELINE_POINTS),
          "users_per_second": round(report["counts"]["users_scored"] / wall),
          "index": report["index"], "users": report["users"],
          "seen_rows": report["seen_rows"],
          "chunks_packed": report["counts"]["chunks_packed"],
          "progress_lines": len(progress),
          "last_progress": progress[-1] if progress else None}


def _recall(export: str, seen_path: str, output: str, sample: int,
            seed: int = 0) -> float:
  """recall@K of the job's output against exact search on sampled users."""
  users = artifacts.load(export, "user")
  items = artifacts.load(export, "movie")
  bias = artifacts.find_bias(export, items)
  rng = np.random.default_rng(seed)
  rows = np.sort(rng.choice(users.size, min(sample, users.size),
                            replace=False))
  tokens = [users.tokens[r] for r in rows]
  ratings = pa_csv.read_csv(seen_path, convert_options=pa_csv.ConvertOptions(
      include_columns=["user_id", "item_id"],
      column_types={"user_id": pa.string(), "item_id": pa.string()}))
  ratings = ratings.filter(pc.is_in(ratings["user_id"],
                                    value_set=pa.array(tokens)))
  item_row = items.row_of()
  user_pos = {token: i for i, token in enumerate(tokens)}
  seen: List[set] = [set() for _ in tokens]
  for user, item in zip(ratings["user_id"].to_pylist(),
                        ratings["item_id"].to_pylist()):
    if item in item_row:
      seen[user_pos[user]].add(item_row[item])
  flat = faiss.IndexFlatIP(items.dimension + 1)
  flat.add(np.column_stack([items.vectors, bias]).astype(np.float32))
  queries = np.column_stack([users.vectors[rows],
                             np.ones(len(rows), np.float32)])
  depth = K + max(len(s) for s in seen)
  _, found = flat.search(np.ascontiguousarray(queries, np.float32), depth)
  truth = {token: [items.tokens[i] for i in row_ids
                   if i >= 0 and i not in seen[pos]][:K]
           for pos, (token, row_ids) in enumerate(zip(tokens, found))}
  hits = total = 0
  wanted = set(tokens)
  paths = layout.RecommendationsLayout(output)
  for name in sorted(os.listdir(paths.root)):
    if not name.startswith(os.path.basename(paths.prefix) + "-"):
      continue
    with open(os.path.join(paths.root, name)) as handle:
      for line in handle:
        user = line[10:line.index('"', 10)]
        if user not in wanted:
          continue
        record = json.loads(line)
        exact = truth[record["user"]]
        hits += len(set(exact) & set(record["items"]))
        total += len(exact)
  return round(hits / max(total, 1), 4)


def run(users: int, items: int, rows: Sequence[int], dim: int, work: str,
        sample: int, keep: bool, extra: Sequence[str] = ()) -> Dict:
  """Measures the job for each ratings count (see the module doc).

  Args:
    users, items: the catalogue.
    rows: ratings counts, one run each.
    dim: factor dimension.
    work: scratch folder.
    sample: users the recall is measured on.
    keep: keep the generated data and outputs.
    extra: further recommend-batch flags.

  Returns:
    {"runs": [...], "rss_ratio": peak RSS at the most ratings over the
    fewest (time's), "tree_rss_ratio": the same of the sampled tree}.
  """
  os.makedirs(work, exist_ok=True)
  export = os.path.join(work, "scale_export")
  runs = []
  try:
    for count in rows:
      data = os.path.join(work, f"rb_{count}")
      _generate(data, users, items, count, dim)
      _export(data, export)
      output = os.path.join(work, f"scale_out_{count}")
      measured = _run_job(export, os.path.join(data, "ratings.csv"), output,
                          extra)
      measured["rows"] = count
      measured["recall_at_10"] = _recall(
          export, os.path.join(data, "ratings.csv"), output, sample)
      runs.append(measured)
      print(json.dumps(measured), flush=True)
      if not keep:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)
  finally:
    if not keep:
      shutil.rmtree(export, ignore_errors=True)
  by_rows = sorted(runs, key=lambda run: run["rows"])
  result = {"users": users, "items": items, "dim": dim, "runs": runs,
            "rss_ratio": round(by_rows[-1]["peak_rss_mib"] /
                               by_rows[0]["peak_rss_mib"], 3),
            "tree_rss_ratio": round(by_rows[-1]["peak_tree_rss_mib"] /
                                    by_rows[0]["peak_tree_rss_mib"], 3)}
  with open(os.path.join(work, "recommend_scale.json"), "w") as handle:
    json.dump(result, handle, indent=2)
  return result


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--users", type=int, default=1_000_000)
  parser.add_argument("--items", type=int, default=500_000)
  parser.add_argument("--rows", default="1000000,20000000",
                      help="comma-separated ratings counts")
  parser.add_argument("--dim", type=int, default=32)
  parser.add_argument("--work", default="/tmp/recommend_scale")
  parser.add_argument("--sample", type=int, default=10_000)
  parser.add_argument("--keep", action="store_true")
  args, extra = parser.parse_known_args(argv)
  result = run(args.users, args.items,
               [int(r) for r in args.rows.split(",")], args.dim, args.work,
               args.sample, args.keep, extra)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
