"""Retrieval benchmarks, each against its target; run by benchmarks/run.py.

  python -m benchmarks.retrieval_bench [--quick] [--only exact,ann,...]

* exact: top-10 over a 1M x 32 table (100K with --quick), our blocked exact
  search (retrieval/index.py) against faiss.IndexFlatIP, both measured in
  this run, interleaved, best of `repeats`. Target: ratio >= 0.8.
* ann: the approximate index (retrieval/approximate.py: faiss IVF, nprobe
  calibrated to recall 0.96 on the table's own rows: 0.95 plus a sampling
  margin), then recall@10 and speed on held-out queries, against our exact
  search and faiss' flat index. Three data sets of unit vectors:
  "clustered" (1000 Gaussian blobs, offsets half as long as the centres),
  "overlapping" (offsets as long as the centres) and "uniform" (no
  structure: the worst case). Optionally hnswlib on the same data
  (--hnsw), the alternative the choice was measured against. Target:
  >= 10x faster than flat at recall@10 >= 0.95.
* batch: `embeddings recommend-batch` (workflows/recommend_batch.py,
  in-process Beam runner) in a fresh process per user count, against a
  fixed item table: wall and CPU time and peak RSS (os.wait4) per run, a
  least-squares line cpu_seconds = a + b * users, and the RSS spread;
  once with the seen-items join and once without it (the in-process runner
  holds a shuffled PCollection in memory, a distributed runner does not, so
  the variant without the join isolates the job's own memory). Target:
  linear time, flat memory.
* planted: neighbour precision@10 of item vectors against the planted
  clusters of generated data (truth/item_clusters.csv). With an export
  directory and data directory (--export, --data) it measures the trained
  movie table; without, the generator's own item factors (the ceiling a
  trained table can reach). Target: >= 0.9.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import faiss
import numpy as np

from core import artifacts
from core import layout
from pipelines import generate
from retrieval import approximate as approximate_lib
from retrieval import catalog
from retrieval import index
from retrieval import neighbors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The in-process Beam runner, named directly: "DirectRunner" first tries to
# fetch the Prism runner binary from the network.
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def _unit(rows: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(rows, axis=1, keepdims=True)
  return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def _mixture(n: int, d: int, rng: np.random.Generator, components: int = 1000,
             spread: float = 1.0) -> np.ndarray:
  """Embedding-like rows: Gaussian blobs around random centres, unit norm.

  With spread 1.0 a row's offset from its centre is as long as the centre
  itself, so blobs overlap: structured like trained tables (which group by
  taste or genre), far from the well-separated clusters that make any
  index look perfect.
  """
  centres = rng.standard_normal((components, d), dtype=np.float32)
  which = rng.integers(0, components, n)
  return _unit(centres[which] +
               spread * rng.standard_normal((n, d), dtype=np.float32))


def _timed(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    began = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - began)
  return best


def _faiss_flat_seconds(flat, queries: np.ndarray, k: int,
                        repeats: int = 1) -> Dict[int, float]:
  """faiss flat search time with its default OpenMP threads and with one.

  On a machine shared with other work OpenMP barriers can make the default
  slower than one thread; baselines use the faster of the two.
  """
  threads = faiss.omp_get_max_threads()
  seconds = {}
  try:
    for count in sorted({threads, 1}, reverse=True):
      faiss.omp_set_num_threads(count)
      seconds[count] = _timed(lambda: flat.search(queries, k), repeats)
  finally:
    faiss.omp_set_num_threads(threads)
  return seconds


def bench_exact(n: int, d: int = 32, queries: int = 1000, k: int = 10,
                repeats: int = 2, seed: int = 0) -> Dict:
  """Our exact top-k vs faiss.IndexFlatIP on the same table and queries.

  Args:
    n, d: table rows and dimension (random unit vectors).
    queries, k: query count and neighbours per query.
    repeats: interleaved timing rounds; the best of each is kept.
    seed: data seed.

  Returns:
    Queries/s of both, their ratio, and whether the ids agree.
  """
  rng = np.random.default_rng(seed)
  table = _unit(rng.standard_normal((n, d), dtype=np.float32))
  query = _unit(rng.standard_normal((queries, d), dtype=np.float32))
  flat = faiss.IndexFlatIP(d)
  flat.add(table)
  ours = index.ExactIndex(table)
  faiss_seconds: Dict[int, float] = {}
  our_seconds = float("inf")
  # Interleaved, so both see the same load on a shared machine.
  for _ in range(repeats):
    for count, seconds in _faiss_flat_seconds(flat, query, k).items():
      faiss_seconds[count] = min(seconds, faiss_seconds.get(count, seconds))
    our_seconds = min(our_seconds, _timed(lambda: ours.search(query, k), 1))
  _, faiss_ids = flat.search(query, k)
  _, our_ids = ours.search(query, k)
  faiss_qps = {count: queries / s for count, s in faiss_seconds.items()}
  best_faiss = max(faiss_qps.values())
  our_qps = queries / our_seconds
  return {
      "rows": n, "dim": d, "queries": queries, "k": k,
      "faiss_flat_qps": round(best_faiss, 1),
      "faiss_flat_qps_by_threads": {str(c): round(q, 1)
                                    for c, q in faiss_qps.items()},
      "exact_qps": round(our_qps, 1),
      "ratio_vs_faiss": round(our_qps / best_faiss, 3),
      "target_ratio": 0.8,
      "same_ids_as_faiss": float(np.mean(np.sort(faiss_ids, 1) ==
                                         np.sort(our_ids, 1))),
  }


def _ann_case(table: np.ndarray, held_out: np.ndarray, k: int,
              hnsw: bool, seed: int) -> Dict:
  queries = len(held_out)
  flat = faiss.IndexFlatIP(table.shape[1])
  flat.add(table)
  flat_seconds = min(_faiss_flat_seconds(flat, held_out, k).values())
  exact = index.ExactIndex(table)
  exact_seconds = _timed(lambda: exact.search(held_out, k), 1)
  _, truth = exact.search(held_out, k)
  began = time.perf_counter()
  approximate = approximate_lib.ApproximateIndex(table, seed=seed)
  build = time.perf_counter() - began
  calibration = approximate.calibrate(k=k, seed=seed)
  approximate.search(held_out[:10], k)
  ann_seconds = _timed(lambda: approximate.search(held_out, k), 2)
  _, found = approximate.search(held_out, k)
  result = {
      "method": "faiss IndexIVFFlat",
      "nlist": approximate.nlist, "nprobe": calibration.nprobe,
      "build_seconds": round(build, 2),
      "calibration_recall": round(calibration.recall, 4),
      "recall_at_10": round(approximate_lib.recall_at_k(found, truth), 4),
      "qps": round(queries / ann_seconds, 1),
      "exact_qps": round(queries / exact_seconds, 1),
      "faiss_flat_qps": round(queries / flat_seconds, 1),
      "speedup_vs_faiss_flat": round(flat_seconds / ann_seconds, 2),
      "speedup_vs_exact": round(exact_seconds / ann_seconds, 2),
  }
  if hnsw:
    # hnswlib is optional (the bench extra): only --hnsw needs it.
    import hnswlib  # pylint: disable=g-import-not-at-top
    began = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=table.shape[1])
    graph.init_index(max_elements=len(table), M=16, ef_construction=100,
                     random_seed=seed)
    graph.add_items(table)
    hnsw_build = time.perf_counter() - began
    sweep = []
    for ef in (32, 64, 128, 256, 512):
      graph.set_ef(ef)
      seconds = _timed(lambda: graph.knn_query(held_out, k=k), 1)
      ids, _ = graph.knn_query(held_out, k=k)
      sweep.append({"ef": ef, "recall_at_10": round(
          approximate_lib.recall_at_k(ids, truth), 4),
                    "speedup_vs_faiss_flat": round(flat_seconds / seconds, 2)})
    result["hnswlib"] = {"build_seconds": round(hnsw_build, 2),
                         "sweep": sweep}
  return result


def bench_ann(n: int, d: int = 32, queries: int = 1000, k: int = 10,
              hnsw: bool = False, seed: int = 0) -> Dict:
  """The approximate index on clustered, overlapping and uniform data.

  Args:
    n, d: table rows and dimension.
    queries, k: held-out queries and neighbours per query.
    hnsw: also sweep hnswlib's ef on the same data.
    seed: data and index seed.

  Returns:
    Per data set: calibration, recall@10, speedups, build time.
  """
  rng = np.random.default_rng(seed)
  cases = {}
  for name in ("clustered", "overlapping", "uniform"):
    if name == "uniform":
      data = _unit(rng.standard_normal((n + queries, d), dtype=np.float32))
    else:
      data = _mixture(n + queries, d, rng,
                      spread=0.5 if name == "clustered" else 1.0)
    case = _ann_case(data[:n], data[n:], k, hnsw, seed)
    case["meets_target"] = bool(case["recall_at_10"] >= 0.95 and
                                case["speedup_vs_faiss_flat"] >= 10)
    cases[name] = case
    del data
  return {"rows": n, "dim": d, "queries": queries, "cases": cases}


def _write_batch_inputs(root: str, users: int, items: int, d: int,
                        seen_per_user: int, seed: int) -> str:
  """An export (user, movie tables) and ratings for the batch job."""
  rng = np.random.default_rng(seed)
  export = os.path.join(root, "export")
  user_tokens = [f"u{i}" for i in range(users)] + ["[OOV_0]"]
  item_tokens = [f"m{i}" for i in range(items)] + ["[OOV_0]"]
  artifacts.EmbeddingTable(
      "user", rng.standard_normal((users + 1, d), dtype=np.float32),
      user_tokens, {"vocabulary_size": users, "num_oov_buckets": 1}).save(
          os.path.join(export, "user"))
  artifacts.EmbeddingTable(
      "movie", rng.standard_normal((items + 1, d), dtype=np.float32),
      item_tokens, {"vocabulary_size": items, "num_oov_buckets": 1}).save(
          os.path.join(export, "movie"))
  with open(os.path.join(root, "ratings.csv"), "w", encoding="utf-8") as f:
    f.write("user_id,item_id,rating,timestamp\n")
    picks = rng.integers(0, items, (users, seen_per_user))
    for user in range(users):
      f.write("".join(f"u{user},m{item},4.0,0\n" for item in picks[user]))
  return export


def _run_job(args: Sequence[str]) -> Dict:
  """Runs the batch job in a fresh process: wall and CPU seconds, peak RSS.

  CPU seconds (user + system, from os.wait4) are what the linearity fit
  uses: on a machine shared with other work, wall time mostly measures the
  neighbours.
  """
  began = time.perf_counter()
  process = subprocess.Popen(
      [sys.executable, "-m", "workflows.recommend_batch", *args], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - began
  stderr = process.stderr.read().decode(errors="replace")
  process.stderr.close()
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"recommend-batch failed:\n{stderr[-3000:]}")
  return {"wall_seconds": wall,
          "cpu_seconds": usage.ru_utime + usage.ru_stime,
          "peak_rss_mib": usage.ru_maxrss / 1024}


def bench_batch(user_counts: Sequence[int], items: int, d: int = 32,
                k: int = 10, block_size: int = 512, seen_per_user: int = 5,
                with_seen: bool = True, seed: int = 0) -> Dict:
  """recommend-batch time and peak memory as the number of users grows.

  With `with_seen` the job joins every user's rated items (CoGroupByKey);
  the in-process runner keeps a shuffled PCollection in memory, so that
  variant's RSS grows by the joined data (a distributed runner spills it),
  while the variant without the join shows the job's own memory.

  Args:
    user_counts: users per run (one fresh process each).
    items, d, k: item table rows, dimension, recommendations per user.
    block_size: the job's --block_size.
    seen_per_user: rated items per user in the ratings file.
    with_seen: pass the ratings as --seen.
    seed: data seed.

  Returns:
    Per run wall/CPU seconds and peak RSS, the linear fit and RSS spread.
  """
  root = tempfile.mkdtemp(prefix="retrieval_bench_")
  try:
    runs = []
    for users in user_counts:
      case = os.path.join(root, str(users))
      export = _write_batch_inputs(case, users, items, d, seen_per_user, seed)
      output = os.path.join(case, "out")
      seen = (["--seen", os.path.join(case, "ratings.csv"),
               "--seen_skip_header_lines", "1"] if with_seen else [])
      measured = _run_job([
          "--embeddings", export, "--output", output, "-k", str(k),
          "--block_size", str(block_size), *seen,
          f"--runner={FN_API_RUNNER}"])
      with open(layout.RecommendationsLayout(output).report) as handle:
        report = json.load(handle)
      if report["counts"]["users_scored"] != users:
        raise RuntimeError(f"scored {report['counts']['users_scored']} of "
                           f"{users} users")
      runs.append({"users": users,
                   "wall_seconds": round(measured["wall_seconds"], 2),
                   "pipeline_wall_seconds": report["wall_seconds"],
                   "cpu_seconds": round(measured["cpu_seconds"], 2),
                   "peak_rss_mib": round(measured["peak_rss_mib"], 1)})
      shutil.rmtree(case, ignore_errors=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return {"items": items, "dim": d, "k": k, "block_size": block_size,
          "seen_join": with_seen, "runs": runs, **_batch_fit(runs)}


def _batch_fit(runs: Sequence[Dict]) -> Dict:
  """The line cpu_seconds = a + b * users through the runs; RSS spread."""
  users = np.array([r["users"] for r in runs], dtype=np.float64)
  seconds = np.array([r["cpu_seconds"] for r in runs])
  slope, intercept = np.polyfit(users, seconds, 1)
  fitted = intercept + slope * users
  residual = float(np.sum((seconds - fitted) ** 2))
  total = float(np.sum((seconds - seconds.mean()) ** 2)) or 1.0
  rss = np.array([r["peak_rss_mib"] for r in runs])
  return {
      "cpu_seconds_per_1k_users": round(slope * 1000, 3),
      "fixed_cpu_seconds": round(intercept, 2),
      "linear_r2": round(1 - residual / total, 4),
      "max_relative_deviation_from_line": round(float(
          np.max(np.abs(seconds - fitted) / seconds)), 3),
      "rss_max_over_min": round(float(rss.max() / rss.min()), 3),
      "rss_mib_per_1k_users": round(float(np.polyfit(users, rss, 1)[0] *
                                          1000), 3),
  }


def bench_planted(export: Optional[str] = None, data: Optional[str] = None,
                  rows: int = 20000, seed: int = 3, k: int = 10) -> Dict:
  """Neighbour precision@k against the generator's planted item clusters.

  Args:
    export: a trained export (its movie table is measured), or None for
      the generator's own item factors.
    data: the generated data directory (generated here when None).
    rows, seed: generation size and seed when generating.
    k: neighbours per item.

  Returns:
    The precision, the source measured and the target.
  """
  temporary = None
  try:
    if data is None:
      temporary = tempfile.mkdtemp(prefix="retrieval_planted_")
      data = os.path.join(temporary, "data")
      generate.run(["--output", data, "--rows", str(rows), "--seed",
                    str(seed)])
    truth = catalog.read_truth_clusters(
        os.path.join(data, "truth", "item_clusters.csv"))
    if export is not None:
      table = artifacts.load(export, "movie")
      rows_ = table.real_rows
      vectors = table.vectors[rows_]
      tokens = [table.tokens[r] for r in rows_]
      source = f"trained table {export}/movie"
    else:
      vectors = np.load(os.path.join(data, "truth", "item_factors.npy"))
      tokens = list(truth)
      source = "generator item factors (truth/item_factors.npy)"
    precision = neighbors.neighbor_precision(vectors, tokens, truth, k=k)
    return {"source": source, "items": len(tokens), "k": k,
            "precision": round(precision, 4), "target": 0.9}
  finally:
    if temporary:
      shutil.rmtree(temporary, ignore_errors=True)


def run(quick: bool = False, only: Optional[Sequence[str]] = None,
        hnsw: bool = False, export: Optional[str] = None,
        data: Optional[str] = None) -> Dict:
  """Runs the retrieval benchmarks.

  Args:
    quick: smaller sizes (minutes instead of tens of minutes).
    only: a subset of "exact", "ann", "batch", "planted".
    hnsw: also measure hnswlib in the ann benchmark.
    export, data: a trained export and its generated data directory for the
      planted-cluster benchmark.

  Returns:
    Benchmark name -> results.
  """
  selected = set(only or ("exact", "ann", "batch", "planted"))
  results: Dict[str, Dict] = {"quick": quick}
  rows = 100_000 if quick else 1_000_000
  if "exact" in selected:
    results["exact"] = bench_exact(rows, queries=300 if quick else 1000)
  if "ann" in selected:
    results["ann"] = bench_ann(rows, queries=300 if quick else 1000,
                               hnsw=hnsw)
  if "batch" in selected:
    users = [2000, 4000, 8000] if quick else [10000, 20000, 40000, 80000]
    items = 20000 if quick else 100000
    results["batch"] = bench_batch(users, items=items)
    results["batch_without_seen"] = bench_batch(users, items=items,
                                                with_seen=False)
  if "planted" in selected:
    results["planted"] = bench_planted(export=export, data=data)
  results["table"] = _table(results)
  return results


def _table(results: Dict) -> List[Dict]:
  """One printed row per target."""
  rows = []
  if "exact" in results:
    exact = results["exact"]
    rows.append({"measure": f"exact top-10 qps / faiss flat qps "
                            f"({exact['rows']} x {exact['dim']})",
                 "value": exact["ratio_vs_faiss"], "target": ">= 0.8",
                 "detail": f"{exact['exact_qps']} vs "
                           f"{exact['faiss_flat_qps']} qps"})
  if "ann" in results:
    for name, case in results["ann"]["cases"].items():
      rows.append({"measure": f"ANN speedup vs faiss flat, {name} "
                              f"({results['ann']['rows']} rows)",
                   "value": case["speedup_vs_faiss_flat"],
                   "target": ">= 10 at recall >= 0.95",
                   "detail": f"recall@10 {case['recall_at_10']}, nprobe "
                             f"{case['nprobe']}/{case['nlist']}, build "
                             f"{case['build_seconds']} s"})
  for key in ("batch", "batch_without_seen"):
    if key not in results:
      continue
    batch = results[key]
    variant = "with seen join" if batch["seen_join"] else "no seen join"
    users = [run["users"] for run in batch["runs"]]
    rows.append({"measure": f"recommend-batch CPU time vs users "
                            f"{users[0]}..{users[-1]} ({variant}): R^2",
                 "value": batch["linear_r2"], "target": "~1 (linear)",
                 "detail": f"{batch['cpu_seconds_per_1k_users']} CPU s per "
                           f"1K users + {batch['fixed_cpu_seconds']} s "
                           f"fixed"})
    rows.append({"measure": f"recommend-batch peak RSS max/min "
                            f"({variant})",
                 "value": batch["rss_max_over_min"], "target": "~1 (flat)",
                 "detail": f"{batch['rss_mib_per_1k_users']} MiB per 1K "
                           f"users"})
  if "planted" in results:
    planted = results["planted"]
    rows.append({"measure": "planted-cluster neighbour precision@10",
                 "value": planted["precision"], "target": ">= 0.9",
                 "detail": planted["source"]})
  return rows


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--only", default=None,
                      help="comma list of exact,ann,batch,planted")
  parser.add_argument("--hnsw", action="store_true",
                      help="also measure hnswlib (slow to build)")
  parser.add_argument("--export", default=None,
                      help="trained export for the planted benchmark")
  parser.add_argument("--data", default=None,
                      help="generated data dir matching --export")
  args = parser.parse_args(argv)
  results = run(quick=args.quick,
                only=args.only.split(",") if args.only else None,
                hnsw=args.hnsw, export=args.export, data=args.data)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
