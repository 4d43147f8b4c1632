"""The scale scenario end to end, each stage against its floor.

  python -m benchmarks.scale_bench [--quick] [--rows N --users U --items I]
      [--epochs 3] [--models mf,dnn] [--stages generate,preprocess,...]
      [--series 1000000,...]
      [--work DIR] [--keep]

Default: 20M ratings of 1M users x 500K movies (--quick: 200K ratings, 20K
users, 10K movies). The stages are the real commands, each in its own
process (`embeddings ...`, as the Makefile's `run` target calls them):

  generate        embeddings generate (reused from --work when its
                  truth/params.json has the same rows, users, items, seed
                  and generator version; never otherwise)
  preprocess      embeddings preprocess --spec configs/synthetic.yaml, vs
                  the pyarrow + numpy floor of the same job
                  (benchmarks/scale_floor.py preprocess)
  train           embeddings train, mf and dnn, --validation_fraction 0.1,
                  --epochs; per-epoch seconds from the report's history
                  (the mean after the first epoch, which also traces) vs
                  the same model on cached in-memory batches (floor train,
                  on a sample of --train_sample rows, scaled to the split);
                  the input mode `auto` chose, and --max_input_memory_mb
  export          embeddings export (mf)
  recommend       embeddings recommend-batch --seen ratings.csv -k 10
                  --index auto: users/s (the
                  whole process, and the job alone from its report) vs faiss
                  IndexFlatIP exact top-k with the bias and the seen items
                  (floor recommend, timed on 10K users, scaled to all), the
                  recall@10 of the job's rows for those users, and users in
                  = written + dead-lettered from its run_report.json
  neighbors       embeddings neighbors for the three most rated movies
  quality         eval RMSE of mf and dnn vs the noise floor (the RMSE of
                  E[rating | truth], floor quality), and planted-cluster
                  precision@10 of the mf movie vectors for a uniform sample
                  of movies, per rating and per band of training ratings,
                  each next to the data's ceiling (benchmarks/
                  quality_floor.py) and the generator's own factors
  dataflow        python -m deploy.dataflow_job --dry_run build of the same
                  preprocessing at this size: built or not, its step count
  runners         preprocess and recommend-batch under --preset direct
                  (in-process) and --preset direct_multiprocess (one SDK
                  worker process per core), one after the other: wall and
                  peak RSS of the second against the first
  series          with --series: generate + preprocess + recommend-batch at
                  each row count (users and items fixed; recommend-batch
                  with the scenario's export and that size's ratings as
                  --seen): seconds per row against the smallest size's (1.0
                  = linear) and peak RSS against the smallest's

Per stage: wall seconds, CPU seconds (user + system of every waited-for
process of the stage: resource.getrusage(RUSAGE_CHILDREN) before and after),
the peak RSS of the whole process tree (benchmarks.PeakRss: the sum over
the process and its descendants, sampled every 0.25 s; shared pages count
once per process, so multi-process runners are overstated a little), rows/s
(users/s for recommend-batch) and x_floor, the stage's time over its
floor's in this run. The machine may be shared: times are rough, ratios
within one run are what to compare.

Results: benchmarks/results/scale/scale_<rows>[_quick].json and .md
(the table), printed at the end.
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import benchmarks
from benchmarks import quality_floor
from benchmarks import run as run_lib
from core import layout
from pipelines import world_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
EMBEDDINGS = os.path.join(os.path.dirname(sys.executable), "embeddings")
SEED = 1
FULL = {"rows": 20_000_000, "users": 1_000_000, "items": 500_000}
QUICK = {"rows": 200_000, "users": 20_000, "items": 10_000}
STAGES = ("generate", "preprocess", "train", "export", "recommend",
          "neighbors", "quality", "dataflow", "runners")
DEFAULT_STAGES = tuple(s for s in STAGES if s != "runners")
RUNNER_PRESETS = ("direct", "direct_multiprocess")
MODELS = ("mf", "dnn")
SAMPLE_USERS = 10_000
TRAIN_SAMPLE_ROWS = 2_000_000
NEIGHBOR_QUERIES = 3
SAMPLE_INTERVAL = 0.25
K = 10


class StageError(RuntimeError):
  """A stage's command exited non-zero; the message ends with its log."""


def measure(name: str, argv: Sequence[str], log_path: str,
            env: Optional[Dict[str, str]] = None) -> Dict:
  """Runs one command to the end; its wall, CPU and peak tree RSS.

  Args:
    name: the stage, for messages.
    argv: the command.
    log_path: stdout and stderr go here.
    env: extra environment variables.

  Returns:
    {"wall_s", "cpu_s", "peak_rss_mb"}.

  Raises:
    StageError: the command failed.
  """
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                     PYTHONPATH=os.pathsep.join(
                         [REPO] + [p for p in [os.environ.get("PYTHONPATH")]
                                   if p]), **(env or {}))
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  began = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.Popen(list(argv), stdout=log,
                               stderr=subprocess.STDOUT, env=environment,
                               cwd=REPO)
    with benchmarks.PeakRss(process.pid, interval=SAMPLE_INTERVAL) as peak:
      status = process.wait()
  wall = time.perf_counter() - began
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if status != 0:
    with open(log_path, encoding="utf-8", errors="replace") as log:
      tail = log.read()[-2000:]
    raise StageError(f"{name}: exit {status}; log {log_path}:\n{tail}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
          "peak_rss_mb": peak.peak_mb}


def _read_json(path: str) -> Dict:
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def _floor(name: str, args: Sequence[str], work: str, label: str = ""
          ) -> Tuple[Dict, Dict]:
  """Runs `python -m benchmarks.scale_floor NAME ARGS`: (measure, result)."""
  base = os.path.join(work, f"floor_{name}{label}")
  measured = measure(f"floor {name}", [sys.executable, "-m",
                                       "benchmarks.scale_floor", name,
                                       "--result", base + ".json", *args],
                     base + ".log")
  return measured, _read_json(base + ".json")


def _with_floor(measured: Dict, name: str, args: Sequence[str], work: str,
                label: str = "") -> Optional[Dict]:
  """Adds the floor's measurement and result to `measured`; None (and
  measured["floor_error"]) when the floor failed."""
  try:
    floor_measured, result = _floor(name, args, work, label)
  except StageError as error:
    measured["floor_error"] = str(error).splitlines()[0][:300]
    return None
  measured["floor"] = dict(floor_measured, **result)
  return measured["floor"]


def generate_params(rows: int, users: int, items: int) -> Dict:
  """The params.json fields that decide whether data can be reused."""
  return {"rows": rows, "users": users, "items": items, "seed": SEED,
          "generator_version": world_params.GENERATOR_VERSION}


def reusable(data: str, wanted: Dict) -> bool:
  """Whether data/truth/params.json was written with `wanted`'s values.

  Args:
    data: a generated folder (may not exist).
    wanted: generate_params(...).

  Returns:
    True only when every field matches and ratings.csv exists.
  """
  path = os.path.join(data, "truth", "params.json")
  if not (os.path.exists(path) and
          os.path.exists(os.path.join(data, "ratings.csv"))):
    return False
  params = _read_json(path)
  return all(params.get(key) == value for key, value in wanted.items())


def generate(data: str, rows: int, users: int, items: int, work: str
            ) -> Dict:
  """The generate stage, or the reused data's recorded measurement."""
  wanted = generate_params(rows, users, items)
  record = os.path.join(data, "generate_stage.json")
  if reusable(data, wanted) and os.path.exists(record):
    return dict(_read_json(record), reused=True, params=wanted)
  shutil.rmtree(data, ignore_errors=True)
  measured = measure("generate", [
      EMBEDDINGS, "generate", "--output", data, "--rows", str(rows),
      "--users", str(users), "--items", str(items), "--seed", str(SEED)],
                     os.path.join(work, f"generate_{rows}.log"))
  measured.update(rows=rows, rows_per_s=round(rows / measured["wall_s"]))
  with open(record, "w", encoding="utf-8") as handle:
    json.dump(measured, handle)
  return dict(measured, reused=False, params=wanted)


def preprocess(data: str, output: str, work: str, rows: int,
               floor: bool = True, extra: Sequence[str] = (),
               label: str = "") -> Dict:
  """embeddings preprocess with configs/synthetic.yaml (and its floor)."""
  shutil.rmtree(output, ignore_errors=True)
  measured = measure("preprocess", [
      EMBEDDINGS, "preprocess", "--spec", SPEC, "--env", f"DATA_DIR={data}",
      "--output", output, *extra],
                     os.path.join(work, f"preprocess_{rows}{label}.log"))
  report = _read_json(os.path.join(output, "run_report.json"))
  measured.update(rows=rows, rows_per_s=round(rows / measured["wall_s"]),
                  rows_written=report.get("rows_written"),
                  rows_rejected=report.get("rows_rejected_total"))
  if floor:
    floor_out = os.path.join(work, "floor_preprocessed")
    shutil.rmtree(floor_out, ignore_errors=True)
    found = _with_floor(measured, "preprocess", [
        "--data", data, "--output", floor_out], work)
    shutil.rmtree(floor_out, ignore_errors=True)
    if found:
      measured["x_floor"] = round(measured["wall_s"] / found["wall_s"], 2)
      measured["x_floor_cpu"] = round(
          measured["cpu_s"] / max(found["cpu_s"], 1e-9), 2)
  return measured


def train(model_type: str, data: str, preprocessed: str, model_dir: str,
          epochs: int, work: str, sample_rows: int) -> Dict:
  """embeddings train MODEL_TYPE and its in-memory floor."""
  shutil.rmtree(model_dir, ignore_errors=True)
  measured = measure(f"train {model_type}", [
      EMBEDDINGS, "train", "--spec", SPEC, "--env", f"DATA_DIR={data}",
      "--preprocessed", preprocessed, "--model_dir", model_dir,
      "--model_type", model_type, "--epochs", str(epochs),
      "--validation_fraction", "0.1"],
                     os.path.join(work, f"train_{model_type}.log"))
  report_path = os.path.join(model_dir, "report.json")
  report = _read_json(report_path)
  history = report.get("train_history") or []
  per_epoch = [e["train_seconds"] for e in history if "train_seconds" in e]
  # The first epoch also traces the step; the floor's clock skips that.
  steady = per_epoch[1:] or per_epoch
  epoch_s = (sum(steady) / len(steady) if steady
             else report["fit_seconds"] / max(1, report["epochs_run"]))
  measured.update(
      model_type=model_type, train_rows=report["train_examples"],
      epochs_run=report["epochs_run"], epoch_s=round(epoch_s, 2),
      epoch_seconds_each=[round(x, 2) for x in per_epoch],
      epoch_s_from=("train_history[].train_seconds, mean after the first"
                    if per_epoch else "fit_seconds / epochs_run"),
      rows_per_s=round(report["train_examples"] / epoch_s),
      input_mode=report.get("input_mode"),
      max_input_memory_mb=report["config"].get("max_input_memory_mb"),
      eval_rmse=report["metrics"].get("rmse"),
      validation_rmse=(report.get("validation_metrics") or {}).get("rmse"),
      batch_size=report["batch_size"],
      embedding_dims=report.get("embedding_dims"))
  found = _with_floor(measured, "train", [
      "--preprocessed", preprocessed, "--report", report_path,
      "--sample", str(sample_rows)], work, f"_{model_type}")
  if found:
    measured["x_floor"] = round(epoch_s / found["epoch_seconds"], 2)
  return measured


def export(model_dir: str, preprocessed: str, output: str, work: str
          ) -> Dict:
  """embeddings export of the mf model."""
  shutil.rmtree(output, ignore_errors=True)
  return measure("export", [
      EMBEDDINGS, "export", "--model_dir", model_dir, "--preprocessed",
      preprocessed, "--output", output], os.path.join(work, "export.log"))


def recommend(embeddings: str, seen: str, output: str, work: str,
              label: str, floor: bool = True, extra: Sequence[str] = ()
             ) -> Dict:
  """embeddings recommend-batch, its accounting, and the faiss floor."""
  shutil.rmtree(output, ignore_errors=True)
  index = ["--index", "auto"]
  measured = measure("recommend-batch", [
      EMBEDDINGS, "recommend-batch", "--embeddings", embeddings, "--seen",
      seen, "--output", output, "-k", str(K), *index, *extra],
                     os.path.join(work, f"recommend_{label}.log"))
  report = _read_json(os.path.join(output, "run_report.json"))
  users = report.get("users") or {}
  measured.update(index=report.get("index"), users=users,
                  users_accounted=bool(users) and users.get("in") == (
                      users.get("written", 0) + users.get("dead_lettered", 0)),
                  seen_rows=report.get("seen_rows"))
  users_in = users.get("in") or report.get("counts", {}).get("users_read", 0)
  measured["users_per_s"] = round(users_in / measured["wall_s"], 1)
  measured["job_wall_s"] = report.get("wall_seconds")
  if floor:
    found = _with_floor(measured, "recommend", [
        "--export", embeddings, "--seen", seen, "--output", output,
        "--sample", str(SAMPLE_USERS), "-k", str(K)], work)
    if found:
      measured["x_floor"] = round(
          measured["wall_s"] / max(found["seconds_all_users"], 1e-9), 2)
      if measured["job_wall_s"]:
        measured["x_floor_job"] = round(
            measured["job_wall_s"] / max(found["seconds_all_users"], 1e-9), 2)
      measured[f"recall_at_{K}"] = found.get(f"recall_at_{K}")
  return measured


def most_frequent_movies(embeddings: str, count: int) -> List[str]:
  """The first `count` tokens of the movie table (its vocabulary is
  ordered by training frequency, so these are the most rated movies)."""
  path = layout.TableLayout(os.path.join(embeddings, "movie")).vocab
  with open(path, encoding="utf-8") as handle:
    return [line.rstrip("\n") for _, line in zip(range(count), handle)]


def neighbors(embeddings: str, work: str) -> Dict:
  """embeddings neighbors for the most rated movies."""
  queries = most_frequent_movies(embeddings, NEIGHBOR_QUERIES)
  items = [arg for item in queries for arg in ("--item", item)]
  measured = measure("neighbors", [
      EMBEDDINGS, "neighbors", "--embeddings", embeddings, "--table",
      "movie", *items, "-k", str(K)], os.path.join(work, "neighbors.log"))
  measured["queries"] = queries
  return measured


def quality(data: str, embeddings: Optional[str], work: str) -> Dict:
  """The noise floor and planted-cluster precision (floor quality)."""
  measured, result = _floor("quality", [
      "--data", data, "--sample", str(SAMPLE_USERS), "-k", str(K)] + (
          ["--export", embeddings] if embeddings else []), work)
  return dict(measured, **result)


def runners(data: str, embeddings: Optional[str], work: str, rows: int
           ) -> Dict:
  """preprocess (and recommend-batch, given an export) under --preset
  direct and --preset direct_multiprocess, one after the other."""
  result: Dict = {}
  for preset in RUNNER_PRESETS:
    flags = ["--preset", preset]
    output = os.path.join(work, f"runners_{preset}")
    result[f"preprocess {preset}"] = preprocess(
        data, os.path.join(output, "preprocessed"), work, rows, floor=False,
        extra=flags, label=f"_{preset}")
    if embeddings:
      result[f"recommend {preset}"] = recommend(
          embeddings, os.path.join(data, "ratings.csv"),
          os.path.join(output, "recommendations"), work, f"runners_{preset}",
          floor=False, extra=flags)
    shutil.rmtree(output, ignore_errors=True)
  single, multi = RUNNER_PRESETS
  for job in ("preprocess", "recommend"):
    if f"{job} {multi}" in result:
      base, other = result[f"{job} {single}"], result[f"{job} {multi}"]
      result[f"{job} x_in_process"] = {
          "wall": round(other["wall_s"] / base["wall_s"], 2),
          "peak_rss": round(other["peak_rss_mb"] / base["peak_rss_mb"], 2)}
  return result


def dataflow(data: str, work: str) -> Dict:
  """The offline Dataflow build (deploy/README.md) of this preprocessing."""
  job_file = os.path.join(work, "dataflow_job.json")
  log = os.path.join(work, "dataflow.log")
  try:
    measured = measure("dataflow", [
        sys.executable, "-m", "deploy.dataflow_job", "--spec", SPEC, "--env",
        f"DATA_DIR={data}", "--output", "gs://bench-bucket/preprocessed",
        "--preset", "dataflow", "--project", "bench-project", "--region",
        "us-central1", "--temp_location", "gs://bench-bucket/tmp",
        "--dataflow_job_file", job_file], log)
  except StageError as error:
    return {"built": False,
            "build_error": str(error).splitlines()[-1][:300]}
  with open(log, encoding="utf-8", errors="replace") as handle:
    found = re.search(r"(\d+) steps", handle.read())
  return dict(measured, built=True,
              steps=int(found.group(1)) if found else None)


def series(row_counts: Sequence[int], users: int, items: int,
           embeddings: Optional[str], work: str) -> List[Dict]:
  """generate + preprocess + recommend-batch at each size; growth ratios."""
  runs = []
  for rows in sorted(row_counts):
    data = os.path.join(work, f"series_{rows}", "data")
    stages = {"generate": generate(data, rows, users, items, work)}
    stages["preprocess"] = preprocess(
        data, os.path.join(work, f"series_{rows}", "preprocessed"), work,
        rows, floor=False)
    if embeddings:
      stages["recommend"] = recommend(
          embeddings, os.path.join(data, "ratings.csv"),
          os.path.join(work, f"series_{rows}", "recommendations"), work,
          f"series_{rows}", floor=False)
    runs.append({"rows": rows, "stages": stages})
  return growth(runs)


def growth(runs: List[Dict]) -> List[Dict]:
  """Per stage and size: seconds per row and RSS over the smallest size's.

  Args:
    runs: [{"rows", "stages": {stage: {"wall_s", "peak_rss_mb", ...}}}],
      smallest first.

  Returns:
    One row per (size, stage): rows, stage, wall_s, us_per_row,
    time_per_row_vs_smallest (1.0 = linear), peak_rss_mb,
    rss_vs_smallest.
  """
  table = []
  smallest = runs[0]
  for run in runs:
    for stage, measured in run["stages"].items():
      base = smallest["stages"].get(stage)
      if base is None or "wall_s" not in measured:
        continue
      per_row = measured["wall_s"] / run["rows"]
      base_per_row = base["wall_s"] / smallest["rows"]
      table.append({
          "rows": run["rows"], "stage": stage, "wall_s": measured["wall_s"],
          "us_per_row": round(1e6 * per_row, 2),
          "time_per_row_vs_smallest": round(per_row / base_per_row, 3),
          "peak_rss_mb": measured["peak_rss_mb"],
          "rss_vs_smallest": round(measured["peak_rss_mb"] /
                                   base["peak_rss_mb"], 3),
          "reused": measured.get("reused", False)})
  return table


def _row(stage: str, measured: Dict, rate: str = "",
         floor_s: object = "", note: str = "") -> Dict:
  if measured.get("floor_error"):
    note = f"{note}; FLOOR FAILED: {measured['floor_error']}".lstrip("; ")
  return {"stage": stage, "wall_s": measured.get("wall_s", ""),
          "cpu_s": measured.get("cpu_s", ""),
          "peak_rss_mb": measured.get("peak_rss_mb", ""), "rate": rate,
          "floor_s": floor_s, "x_floor": measured.get("x_floor", ""),
          "note": note}


def _train_row(t: Dict) -> Dict:
  floor = t.get("floor") or {}
  return _row(f"train {t['model_type']}", t,
              f"{t['rows_per_s']} rows/s/epoch", floor.get("epoch_seconds", ""),
              f"per epoch {t['epoch_s']} s vs in-memory "
              f"{floor.get('epoch_seconds', '-')} s (sample "
              f"{floor.get('sample_rows', '-')} rows); input "
              f"{t['input_mode']}, budget {t['max_input_memory_mb']} MB; "
              f"eval RMSE {t['eval_rmse']:.4f}")


def planted_note(planted: Dict) -> str:
  """Planted precision per query group: model / data ceiling."""
  if not planted:
    return "no export, no planted precision"
  groups = planted.get("groups", {})
  parts = [f"{group} {groups[group].get('model', '-')}/"
           f"{groups[group].get('data_ceiling', '-')}"
           for group in sorted(groups, key=quality_floor.group_order)]
  return (f"planted precision@{K} model/data ceiling: " + ", ".join(parts)
          + f" (truth factors {planted.get('truth_factors_precision', '-')}"
          f", {planted.get('queries', '-')} uniform queries of "
          f"{planted.get('items', '-')} movies)")


def table(stages: Dict) -> List[Dict]:
  """The printed rows: one per stage, its floor and the headline numbers.

  Args:
    stages: scenario()'s result.

  Returns:
    Flat dicts; a failed stage gets a row saying so.
  """
  rows = []
  for name, m in stages.items():
    if "error" in m:
      rows.append({"stage": name, "note": f"FAILED: {m['error']}"})
    elif name == "generate":
      rows.append(_row(name, m, f"{m.get('rows_per_s', '')} rows/s",
                       note="reused (its recorded run)" if m.get("reused")
                       else ""))
    elif name == "preprocess":
      floor = m.get("floor") or {}
      rows.append(_row(name, m, f"{m['rows_per_s']} rows/s",
                       floor.get("wall_s", ""),
                       f"full-spec floor; CPU x_floor "
                       f"{m.get('x_floor_cpu', '-')}; floor peak RSS "
                       f"{floor.get('peak_rss_mb', '-')} MB"))
    elif name.startswith("train_"):
      rows.append(_train_row(m))
    elif name == "recommend":
      users = m.get("users") or {}
      floor = m.get("floor") or {}
      rows.append(_row(
          "recommend-batch", m, f"{m['users_per_s']} users/s",
          floor.get("seconds_all_users", ""),
          f"faiss flat {floor.get('users_per_s', '-')} users/s on "
          f"{floor.get('sample_users', '-')}; job alone "
          f"{m.get('job_wall_s', '-')} s, x_floor "
          f"{m.get('x_floor_job', '-')}; recall@{K} "
          f"{m.get(f'recall_at_{K}', '-')}; users in {users.get('in')} = "
          f"written {users.get('written')} + dead "
          f"{users.get('dead_lettered')}; index "
          f"{(m.get('index') or {}).get('kind', '-')}"))
    elif name == "quality":
      floor = m["noise_floor"]
      rmse = ", ".join(f"{t} {stages[f'train_{t}']['eval_rmse']:.4f}"
                       for t in MODELS
                       if "eval_rmse" in stages.get(f"train_{t}", {}))
      rows.append(_row(name, m, note=(
          f"eval RMSE {rmse or '-'} vs noise floor "
          f"{floor['rmse_of_expected']:.4f} (expected "
          f"{floor['rmse_expected']:.4f}, noise {floor['noise']}); "
          + planted_note(m.get("planted", {})))))
    elif name == "runners":
      for job in ("preprocess", "recommend"):
        ratio = m.get(f"{job} x_in_process")
        for preset in RUNNER_PRESETS:
          if f"{job} {preset}" in m:
            rows.append(_row(f"{job} --preset {preset}",
                             m[f"{job} {preset}"],
                             note=(f"x in-process: wall {ratio['wall']}, "
                                   f"peak RSS {ratio['peak_rss']}")
                             if ratio and preset != RUNNER_PRESETS[0]
                             else ""))
    elif name == "dataflow":
      rows.append(_row("dataflow dry run", m, note=(
          f"built, {m.get('steps')} steps" if m.get("built")
          else f"not built: {m.get('build_error')}")))
    else:
      rows.append(_row(name, m))
  return rows


def markdown(rows: Sequence[Dict]) -> str:
  """Rows of flat dicts -> a markdown table."""
  columns: List[str] = []
  for row in rows:
    columns += [c for c in row if c not in columns]
  lines = ["| " + " | ".join(columns) + " |",
           "| " + " | ".join("---" for _ in columns) + " |"]
  lines += ["| " + " | ".join(str(row.get(c, "")).replace("|", "/")
                              for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def scenario(args: argparse.Namespace, work: str) -> Dict:
  """Runs the selected stages; a failed stage is recorded, later ones that
  need its output are skipped."""
  data = os.path.join(work, "data")
  preprocessed = os.path.join(work, "preprocessed")
  models_dir = {m: os.path.join(work, f"model_{m}") for m in MODELS}
  embeddings = os.path.join(work, "embeddings")
  stages: Dict = {}
  wanted = set(args.stages)

  def stage(name, fn, *fn_args):
    print(f"== {name} ...", flush=True)
    try:
      stages[name] = fn(*fn_args)
    except (StageError, OSError, KeyError, ValueError) as error:
      stages[name] = {"error": str(error).splitlines()[0][:300]}
      print(f"   failed: {error}", flush=True)

  if "generate" in wanted or not reusable(data, generate_params(
      args.rows, args.users, args.items)):
    stage("generate", generate, data, args.rows, args.users, args.items,
          work)
  if "preprocess" in wanted:
    stage("preprocess", preprocess, data, preprocessed, work, args.rows)
  if "train" in wanted:
    for model_type in args.models:
      stage(f"train_{model_type}", train, model_type, data, preprocessed,
            models_dir[model_type], args.epochs, work, args.train_sample)
  if "export" in wanted:
    stage("export", export, models_dir["mf"], preprocessed, embeddings, work)
  if "recommend" in wanted:
    stage("recommend", recommend, embeddings,
          os.path.join(data, "ratings.csv"),
          os.path.join(work, "recommendations"), work, "scenario")
  if "neighbors" in wanted:
    stage("neighbors", neighbors, embeddings, work)
  if "quality" in wanted:
    stage("quality", quality, data,
          embeddings if os.path.isdir(embeddings) else None, work)
  if "dataflow" in wanted:
    stage("dataflow", dataflow, data, work)
  if "runners" in wanted:
    stage("runners", runners, data,
          embeddings if os.path.isdir(embeddings) else None, work, args.rows)
  return stages


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the scenario and writes the results.

  Args:
    argv: flags (default: sys.argv[1:]).

  Returns:
    0 when every stage ran, else 1.
  """
  parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_bench",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help=f"{QUICK['rows']} rows, {QUICK['users']} users, "
                           f"{QUICK['items']} items (unless given)")
  parser.add_argument("--rows", type=int)
  parser.add_argument("--users", type=int)
  parser.add_argument("--items", type=int)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--models", default=",".join(MODELS),
                      help="the train stage's models, a subset of "
                           f"{','.join(MODELS)}")
  parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                      help=f"comma-separated subset of {','.join(STAGES)} "
                           f"(default: all but runners)")
  parser.add_argument("--series", default=None,
                      help="row counts, e.g. 1000000,5000000,20000000")
  parser.add_argument("--train_sample", type=int, default=TRAIN_SAMPLE_ROWS,
                      help="training rows the in-memory floor holds")
  parser.add_argument("--work", default=os.path.join(
      benchmarks.RESULTS_DIR, "scale", "work"))
  parser.add_argument("--keep", action="store_true",
                      help="keep models, outputs and preprocessed data "
                           "(generated data is always kept for reuse)")
  args = parser.parse_args(argv)
  sizes = QUICK if args.quick else FULL
  for name in ("rows", "users", "items"):
    if getattr(args, name) is None:
      setattr(args, name, sizes[name])
  args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
  unknown = sorted(set(args.stages) - set(STAGES))
  if unknown:
    parser.error(f"unknown stage(s) {unknown}; choose from {STAGES}")
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  if not args.models or set(args.models) - set(MODELS):
    parser.error(f"--models {','.join(args.models)}: choose from {MODELS}")
  world_params.Params(rows=args.rows, seed=SEED, users=args.users,
                      items=args.items)
  work = os.path.abspath(args.work)
  os.makedirs(work, exist_ok=True)
  started = time.time()
  stages = scenario(args, work)
  result = {"name": "scale", "command": " ".join(
      ["python -m benchmarks.scale_bench"] + list(
          sys.argv[1:] if argv is None else argv)),
            "sizes": {"rows": args.rows, "users": args.users,
                      "items": args.items},
            "epochs": args.epochs, "stages": stages,
            "machine": run_lib.machine()}
  if args.series:
    counts = [int(n) for n in args.series.split(",") if n.strip()]
    print("== series ...", flush=True)
    try:
      result["series"] = series(counts, args.users, args.items,
                                os.path.join(work, "embeddings")
                                if os.path.isdir(os.path.join(
                                    work, "embeddings")) else None, work)
    except (StageError, OSError, KeyError, ValueError) as error:
      result["series"] = [{"error": str(error).splitlines()[0][:300]}]
  result["table"] = table(stages)
  result["seconds"] = round(time.time() - started, 1)
  if not args.keep:
    for path in ["preprocessed", "recommendations", "embeddings"] + [
        f"model_{m}" for m in MODELS]:
      shutil.rmtree(os.path.join(work, path), ignore_errors=True)
  name = f"scale_{args.rows}" + ("_quick" if args.quick else "")
  folder = benchmarks.results_dir("scale")
  with open(os.path.join(folder, name + ".json"), "w",
            encoding="utf-8") as handle:
    json.dump(result, handle, indent=2, sort_keys=True, default=str)
  text = markdown(result["table"])
  if result.get("series"):
    text += "\n\nGrowth series\n\n" + markdown(result["series"])
  with open(os.path.join(folder, name + ".md"), "w",
            encoding="utf-8") as handle:
    handle.write(f"`{result['command']}`\n\n{text}\n")
  print(run_lib.format_table(result["table"]))
  if result.get("series"):
    print(run_lib.format_table(result["series"]))
  print(f"-> {os.path.join(folder, name)}.json/.md "
        f"({result['seconds']} s)")
  failed = [n for n, m in stages.items()
            if isinstance(m, dict) and "error" in m]
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
