"""The preprocessing benchmark: tf.Transform on DirectRunner vs a floor.

One job, three implementations, measured in the same run on the same
generated ratings (`embeddings generate`, cached under
benchmarks/results/data/). The job is benchmarks/preprocess_bench.yaml: read
ratings.csv (no joins), split train/eval by a hash of user_id (the
pipeline's own `pipelines.split.eval_mask`), learn on train only two
vocabularies (user_id, item_id, by count), a quantile bucketing of the
timestamp (10 buckets), and a hashed cross user_id x item_id; transform both
splits and write gzipped tf.Example TFRecords.

  floor   pyarrow + numpy, no Beam: two streaming passes over the CSV
          (analyze, then transform), vocabularies by Arrow value counts
          ordered like tf.Transform's (count, then token, descending),
          quantiles with tfx_bsl's QuantilesSketch (the sketch tft.bucketize
          uses, same epsilon), the cross with tf.sparse.cross_hashed (the op
          behind the pipeline's and Keras' crosses), records encoded with
          tfx_bsl's RecordBatchToExamplesEncoder, written with
          tf.io.TFRecordWriter. It does not validate rows (no dead letters),
          which the pipeline does: it is a lower bound.
  keras   the same I/O and split, with Keras preprocessing layers
          (tf.keras, Keras 3 here): StringLookup, Discretization,
          HashedCrossing; update_state per batch + finalize_state (adapt,
          streamed), then apply.
  tft     the real job: `pipelines.preprocess.run` with the spec, on
          DirectRunner (in-process).
  tft_mp  the same with `--direct_running_mode multi_processing
          --direct_num_workers <cpus>` (opt-in, --variants).

Each implementation runs in its own process; the parent samples the peak RSS
of that process tree (benchmarks.PeakRss). `seconds` is measured inside the
child from just before the job starts (after imports) to the last byte
written; rows/s = input rows / seconds; x_floor = seconds / floor seconds at
the same size. On the smallest size the floor's output is checked against
the pipeline's: identical vocabulary files, identical multisets of user,
movie, cross ids and labels per split, and the share of rows in the same
time bucket (quantile sketches are approximate and merge differently).

Usage:
  python -m benchmarks.run --only preprocess          # 1M rows
  python -m benchmarks.preprocess_bench --scale       # 100K, 1M, 10M rows
  python -m benchmarks.preprocess_bench --rows 200000 --variants floor,tft
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

import benchmarks
from core import layout
from pipelines import generate
from pipelines import split as split_lib
from pipelines import world_params
from transforms import kinds
from transforms import loader
from transforms import spec as spec_lib

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "preprocess_bench.yaml")
VARIANTS = ("floor", "keras", "tft", "tft_mp")
DEFAULT_VARIANTS = ("floor", "keras", "tft")
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
SCALE_ROWS = (100_000, 1_000_000, 10_000_000)
SEED = 1
# CSV bytes per streamed block (about 130K ratings).
BLOCK_BYTES = 4 << 20
_ARROW_TYPES = {"string": pa.string(), "int": pa.int64(),
                "float": pa.float64()}


class _Job:
  """The benchmark spec's features, as the floor and Keras variants need."""

  def __init__(self, spec: spec_lib.FeatureSpec):
    self.spec = spec
    used = {f.kind for f in spec.features}
    allowed = {kinds.VOCABULARY, kinds.CROSS, kinds.BUCKETIZED}
    if not used <= allowed or spec.joins or spec.split is None:
      raise ValueError(f"{SPEC_PATH}: the floor handles vocabulary, cross "
                       f"and bucketized features with a hash split and no "
                       f"joins")
    self.table = spec.main_table
    self.vocabularies = [f for f in spec.features
                         if f.kind == kinds.VOCABULARY]
    self.crosses = [f for f in spec.features if f.kind == kinds.CROSS]
    self.buckets = [f for f in spec.features if f.kind == kinds.BUCKETIZED]
    for cross in self.crosses:
      for member in cross.features:
        if spec.feature(member).kind != kinds.VOCABULARY:
          raise ValueError(f"cross {cross.name!r}: the floor crosses raw "
                           f"vocabulary columns only")

  def cross_columns(self, cross: spec_lib.Feature) -> List[str]:
    return [self.spec.feature(member).source for member in cross.features]

  def batches(self) -> Iterator[pa.RecordBatch]:
    """The main table's CSV as typed Arrow batches, streamed."""
    types = {c: _ARROW_TYPES[t] for c, t in self.table.types.items()}
    reader = pa_csv.open_csv(
        self.table.path,
        read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(delimiter=self.table.delimiter),
        convert_options=pa_csv.ConvertOptions(column_types=types))
    for batch in reader:
      yield batch


class _SplitCache:
  """eval/train per split key, hashing each distinct key once per run.

  The same rule as the pipeline (`pipelines.split.eval_fraction_of`).
  """

  def __init__(self, split: spec_lib.Split):
    self._split = split
    self._keys = pa.array([], pa.string())
    self._in_eval = np.zeros(0, dtype=bool)

  def eval_mask(self, keys: pa.Array) -> np.ndarray:
    encoded = pc.dictionary_encode(keys)
    distinct = encoded.dictionary
    where = pc.index_in(distinct, value_set=self._keys)
    new = pc.is_null(where).to_numpy(zero_copy_only=False)
    if new.any():
      fresh = distinct.filter(pa.array(new))
      flags = np.array([split_lib.eval_fraction_of(key, self._split.seed)
                        < self._split.eval_fraction
                        for key in fresh.to_pylist()], dtype=bool)
      self._keys = pa.concat_arrays([self._keys, fresh])
      self._in_eval = np.concatenate([self._in_eval, flags])
      where = pc.index_in(distinct, value_set=self._keys)
    per_key = self._in_eval[where.to_numpy(zero_copy_only=False)]
    return per_key[encoded.indices.to_numpy(zero_copy_only=False)]


class _ExampleWriter:
  """Columns -> tf.Examples (tfx_bsl's encoder) -> one gzipped TFRecord."""

  def __init__(self, folder: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfx_bsl.public import tfxio  # pylint: disable=import-outside-toplevel
    os.makedirs(folder, exist_ok=True)
    self._writer = tf.io.TFRecordWriter(
        os.path.join(folder, "part-00000-of-00001.tfrecord.gz"),
        tf.io.TFRecordOptions(compression_type="GZIP"))
    self._encoder = tfxio.RecordBatchToExamplesEncoder()
    self.rows = 0

  def write(self, columns: Mapping[str, np.ndarray]) -> None:
    n = len(next(iter(columns.values())))
    offsets = pa.array(np.arange(n + 1, dtype=np.int64))
    batch = pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(offsets, pa.array(values))
         for values in columns.values()], names=list(columns))
    for record in self._encoder.encode(batch):
      self._writer.write(record)
    self.rows += n

  def close(self) -> None:
    self._writer.close()


def _split_batches(job: _Job, cache: _SplitCache
                  ) -> Iterator[Tuple[str, pa.RecordBatch]]:
  for batch in job.batches():
    in_eval = cache.eval_mask(split_lib.split_keys(batch, job.spec.split.key))
    for name, mask in ((layout.TRAIN, ~in_eval),
                       (layout.EVAL, in_eval)):
      if mask.any():
        yield name, batch.filter(pa.array(mask))


def _strings(column: pa.Array):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.constant(column.to_numpy(zero_copy_only=False))


def _float32(column: pa.Array) -> np.ndarray:
  # tft.bucketize sees the column cast to float32 (transforms/preprocessing).
  return column.to_numpy(zero_copy_only=False).astype(np.float32)


def run_floor(job: _Job, output: str) -> Dict:
  """pyarrow + numpy (+ tfx_bsl sketch/encoder, TF's cross hash and writer).

  Args:
    job: the spec.
    output: folder for train/, eval/ and vocabularies/.

  Returns:
    rows_read and rows written per split.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tfx_bsl import sketches  # pylint: disable=import-outside-toplevel
  cache = _SplitCache(job.spec.split)
  counts: Dict[str, List[pa.Table]] = {f.name: [] for f in job.vocabularies}
  sketch = {f.name: sketches.QuantilesSketch(
      min(1.0 / f.num_buckets, 0.01), 1 << 32, 1) for f in job.buckets}
  rows_read = 0
  for name, batch in _split_batches(job, cache):
    rows_read += batch.num_rows
    if name != layout.TRAIN:
      continue
    for feature in job.vocabularies:
      tally = pc.value_counts(batch.column(feature.source)).flatten()
      parts = counts[feature.name]
      parts.append(pa.table({"token": tally[0], "count": tally[1]}))
      if len(parts) >= 16:
        counts[feature.name] = [_sum_counts(parts)]
    for feature in job.buckets:
      sketch[feature.name].AddValues(pa.array(_float32(
          batch.column(feature.source))))

  vocab_dir = os.path.join(output, "vocabularies")
  os.makedirs(vocab_dir, exist_ok=True)
  vocabularies = {}
  for feature in job.vocabularies:
    # tf.Transform's order: count descending, ties by token descending.
    table = _sum_counts(counts[feature.name]).sort_by(
        [("count", "descending"), ("token", "descending")])
    tokens = table.column("token").combine_chunks()
    if feature.frequency_threshold:
      tokens = tokens.filter(pc.greater_equal(
          table.column("count"), feature.frequency_threshold))
    if feature.top_k:
      tokens = tokens.slice(0, feature.top_k)
    vocabularies[feature.name] = tokens
    with open(os.path.join(vocab_dir, feature.name), "w",
              encoding="utf-8") as handle:
      handle.write("".join(f"{t}\n" for t in tokens.to_pylist()))
  boundaries = {}
  for feature in job.buckets:
    quantiles = sketch[feature.name].GetQuantiles(
        feature.num_buckets).to_pylist()[0]
    boundaries[feature.name] = np.array(quantiles[1:-1], dtype=np.float32)

  writers = {name: _ExampleWriter(os.path.join(output, name))
             for name in layout.SPLITS}
  for name, batch in _split_batches(job, cache):
    columns = {}
    for feature in job.vocabularies:
      vocab = vocabularies[feature.name]
      ids = pc.index_in(batch.column(feature.source), value_set=vocab)
      columns[feature.name] = pc.fill_null(ids, len(vocab)).to_numpy(
          ).astype(np.int64)
    for feature in job.crosses:
      members = [tf.expand_dims(_strings(batch.column(c)), 1)
                 for c in job.cross_columns(feature)]
      columns[feature.name] = tf.sparse.cross_hashed(
          members, num_buckets=feature.hash_bucket_size).values.numpy()
    for feature in job.buckets:
      columns[feature.name] = np.searchsorted(
          boundaries[feature.name], _float32(batch.column(feature.source)),
          side="right").astype(np.int64)
    columns["label"] = _float32(batch.column(job.spec.label.column))
    writers[name].write(columns)
  for writer in writers.values():
    writer.close()
  return {"rows_read": rows_read,
          "rows_written": {n: w.rows for n, w in writers.items()}}


def _sum_counts(parts: Sequence[pa.Table]) -> pa.Table:
  merged = pa.concat_tables(parts).group_by("token").aggregate(
      [("count", "sum")])
  return merged.rename_columns(["token", "count"])


def run_keras(job: _Job, output: str) -> Dict:
  """Keras preprocessing layers, streamed adapt (update_state) then apply.

  Args:
    job: the spec.
    output: folder for train/ and eval/.

  Returns:
    rows_read and rows written per split.
  """
  # Keras 3 itself: once tensorflow_transform is imported, `tf.keras` may
  # resolve to tf_keras (Keras 2).
  import keras  # pylint: disable=import-outside-toplevel
  keras_layers = keras.layers
  cache = _SplitCache(job.spec.split)
  lookups = {f.name: keras_layers.StringLookup(
      num_oov_indices=f.num_oov_buckets) for f in job.vocabularies}
  discretizers = {f.name: keras_layers.Discretization(
      num_bins=f.num_buckets, epsilon=min(1.0 / f.num_buckets, 0.01))
                  for f in job.buckets}
  crosses = {f.name: keras_layers.HashedCrossing(
      num_bins=f.hash_bucket_size) for f in job.crosses}
  adapting = list(lookups.values()) + list(discretizers.values())
  for layer in adapting:
    layer.reset_state()
  rows_read = 0
  for name, batch in _split_batches(job, cache):
    rows_read += batch.num_rows
    if name != layout.TRAIN:
      continue
    for feature in job.vocabularies:
      lookups[feature.name].update_state(
          _strings(batch.column(feature.source)))
    for feature in job.buckets:
      discretizers[feature.name].update_state(
          _float32(batch.column(feature.source)))
  for layer in adapting:
    layer.finalize_state()

  writers = {name: _ExampleWriter(os.path.join(output, name))
             for name in layout.SPLITS}
  for name, batch in _split_batches(job, cache):
    columns = {}
    raw = {}
    for feature in job.vocabularies:
      raw[feature.source] = _strings(batch.column(feature.source))
      columns[feature.name] = lookups[feature.name](
          raw[feature.source]).numpy().astype(np.int64)
    for feature in job.crosses:
      members = tuple(raw[c] for c in job.cross_columns(feature))
      columns[feature.name] = crosses[feature.name](members).numpy()
    for feature in job.buckets:
      columns[feature.name] = discretizers[feature.name](
          _float32(batch.column(feature.source))).numpy().astype(np.int64)
    columns["label"] = _float32(batch.column(job.spec.label.column))
    writers[name].write(columns)
  for writer in writers.values():
    writer.close()
  return {"rows_read": rows_read,
          "rows_written": {n: w.rows for n, w in writers.items()}}


def run_tft(data: str, output: str, beam_args: Sequence[str]) -> Dict:
  """`embeddings preprocess` with the benchmark spec.

  Args:
    data: the generated dataset folder (DATA_DIR).
    output: the preprocess output folder.
    beam_args: extra pipeline options.

  Returns:
    rows_read and rows written per split, from the run report.
  """
  from pipelines import preprocess  # pylint: disable=import-outside-toplevel
  report = preprocess.preprocess(preprocess.PreprocessOptions(
      spec=SPEC_PATH, output=output, env=(("DATA_DIR", data),)), beam_args)
  return {"rows_read": sum(report["rows_read"].values()),
          "rows_written": report["rows_written"],
          "rows_rejected": sum(report["rows_rejected_total"].values())}


def _beam_args(variant: str) -> List[str]:
  if variant == "tft_mp":
    return ["--direct_running_mode", "multi_processing",
            "--direct_num_workers", str(os.cpu_count() or 2)]
  return []


def _child(variant: str, data: str, output: str, result: str) -> None:
  """Runs one variant in this (fresh) process and writes its result."""
  # Imports first: `seconds` counts the job, not interpreter start-up.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel,unused-import
  from tfx_bsl import sketches  # pylint: disable=import-outside-toplevel,unused-import
  from tfx_bsl.public import tfxio  # pylint: disable=import-outside-toplevel,unused-import
  if variant == "keras":
    import keras  # pylint: disable=import-outside-toplevel,unused-import
  if variant.startswith("tft"):
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel,unused-import
  # TF's runtime starts on the first eager op (about a second, once per
  # process); every variant pays it here, outside the clock.
  tf.sparse.cross_hashed([tf.constant([["a"]]), tf.constant([["b"]])],
                         num_buckets=2)
  job = _Job(loader.load_spec(SPEC_PATH, {"DATA_DIR": data}))
  began = time.perf_counter()
  if variant == "floor":
    summary = run_floor(job, output)
  elif variant == "keras":
    summary = run_keras(job, output)
  else:
    summary = run_tft(data, output, _beam_args(variant))
  summary["seconds"] = round(time.perf_counter() - began, 3)
  with open(result, "w", encoding="utf-8") as handle:
    json.dump(summary, handle)


def _read_examples(folder: str) -> Dict[str, np.ndarray]:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  files = sorted(tf.io.gfile.glob(os.path.join(folder, "*.tfrecord.gz")))
  features = None
  columns: Dict[str, List[np.ndarray]] = {}
  for raw in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(
      1 << 16):
    if features is None:
      example = tf.train.Example.FromString(raw[0].numpy())
      features = {
          name: tf.io.FixedLenFeature(
              [], tf.float32 if value.HasField("float_list") else tf.int64)
          for name, value in example.features.feature.items()}
    for name, values in tf.io.parse_example(raw, features).items():
      columns.setdefault(name, []).append(values.numpy())
  return {name: np.concatenate(parts) for name, parts in columns.items()}


def _compare(floor_out: str, tft_out: str, result: str) -> None:
  """Floor output vs the pipeline's; writes the findings as JSON."""
  job = _Job(loader.load_spec(SPEC_PATH, {"DATA_DIR": "."}))
  found = {"vocabularies_identical": {}, "splits": {}}
  for feature in job.vocabularies:
    with open(os.path.join(floor_out, "vocabularies", feature.name),
              "rb") as a, open(os.path.join(
                  tft_out, "transform_fn", "assets", feature.name), "rb") as b:
      found["vocabularies_identical"][feature.name] = a.read() == b.read()
  for name in layout.SPLITS:
    floor = _read_examples(os.path.join(floor_out, name))
    tft = _read_examples(os.path.join(tft_out, name))
    same = {}
    for column in sorted(floor):
      if column in {f.name for f in job.buckets}:
        continue
      same[column] = bool(len(floor[column]) == len(tft[column]) and
                          np.array_equal(np.sort(floor[column]),
                                         np.sort(tft[column])))
    for feature in job.buckets:
      a = np.bincount(floor[feature.name], minlength=feature.num_buckets)
      b = np.bincount(tft[feature.name], minlength=feature.num_buckets)
      size = max(len(a), len(b))
      a, b = np.pad(a, (0, size - len(a))), np.pad(b, (0, size - len(b)))
      same[f"{feature.name}_histogram_overlap"] = round(
          float(np.minimum(a, b).sum() / max(1, b.sum())), 4)
    found["splits"][name] = {"rows_floor": int(len(floor["label"])),
                             "rows_tft": int(len(tft["label"])),
                             "identical_multisets": same}
  with open(result, "w", encoding="utf-8") as handle:
    json.dump(found, handle)


def dataset(rows: int, seed: int = SEED) -> str:
  """The generated dataset for `rows`, made once and cached.

  Args:
    rows: ratings.
    seed: generator seed.

  Returns:
    Its folder under benchmarks/results/data/.
  """
  folder = benchmarks.results_dir("data", f"ratings_{rows}_seed{seed}")
  params_path = os.path.join(folder, "truth", "params.json")
  if os.path.exists(params_path):
    with open(params_path, encoding="utf-8") as handle:
      params = json.load(handle)
    if (params.get("rows") == rows and params.get("seed") == seed and
        params.get("generator_version") == world_params.GENERATOR_VERSION):
      return folder
  staging = folder + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  generate.generate(staging, world_params.Params(rows=rows, seed=seed))
  shutil.rmtree(folder, ignore_errors=True)
  os.rename(staging, folder)
  return folder


def _subprocess(args: Sequence[str], log_path: str) -> Tuple[float, float]:
  """Runs `python -m benchmarks.preprocess_bench ARGS`; (wall s, peak MB)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=os.pathsep.join(
                 [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  began = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.preprocess_bench"] + list(args),
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    with benchmarks.PeakRss(process.pid) as peak:
      status = process.wait()
  wall = time.perf_counter() - began
  if status != 0:
    with open(log_path, encoding="utf-8", errors="replace") as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f"{' '.join(args[:2])} failed (exit {status}); "
                       f"log {log_path}:\n{tail}")
  return wall, peak.peak_mb


def measure(variant: str, data: str, work: str) -> Dict:
  """One variant on one dataset, in a fresh process.

  Args:
    variant: one of VARIANTS.
    data: the dataset folder.
    work: scratch folder; the output goes to work/<variant>.

  Returns:
    rows_read, rows_written, seconds (in the child, after imports),
    wall_s (the whole process, imports included), peak_rss_mb.
  """
  output = os.path.join(work, variant)
  shutil.rmtree(output, ignore_errors=True)
  result_path = os.path.join(work, f"{variant}.json")
  wall, peak_mb = _subprocess(
      ["--child", variant, "--data", data, "--output", output,
       "--result", result_path], os.path.join(work, f"{variant}.log"))
  with open(result_path, encoding="utf-8") as handle:
    result = json.load(handle)
  result.update({"wall_s": round(wall, 1), "peak_rss_mb": peak_mb})
  return result


def bench(rows_list: Sequence[int], variants: Sequence[str],
          keep: bool = False, check: bool = True) -> Dict:
  """Measures every variant at every size.

  Args:
    rows_list: dataset sizes.
    variants: subset of VARIANTS; "floor" is always measured first.
    keep: keep the TFRecord outputs (benchmarks/results/work/).
    check: compare the floor's output with tft's on the smallest size.

  Returns:
    {"spec", "sizes": {rows: {variant: measurement}}, "check", "table"}.
  """
  variants = ["floor"] + [v for v in variants if v != "floor"]
  results: Dict[str, Dict] = {}
  table = []
  check_result = None
  for rows in sorted(rows_list):
    data = dataset(rows)
    work = benchmarks.results_dir("work", f"preprocess_{rows}")
    measured = {}
    for variant in variants:
      print(f"  {rows} rows: {variant} ...", flush=True)
      measured[variant] = measure(variant, data, work)
      if measured[variant]["rows_read"] != rows:
        raise RuntimeError(f"{variant} read {measured[variant]['rows_read']} "
                           f"of {rows} rows")
    floor_seconds = measured["floor"]["seconds"]
    for variant, m in measured.items():
      m["rows_per_s"] = round(rows / m["seconds"])
      m["x_floor"] = round(m["seconds"] / floor_seconds, 2)
      table.append({"rows": rows, "variant": variant,
                    "seconds": m["seconds"], "rows_per_s": m["rows_per_s"],
                    "us_per_row": round(1e6 * m["seconds"] / rows, 2),
                    "x_floor": m["x_floor"], "peak_rss_mb": m["peak_rss_mb"],
                    "wall_s": m["wall_s"]})
    if check and check_result is None and "tft" in measured:
      path = os.path.join(work, "check.json")
      _subprocess(["--compare", os.path.join(work, "floor"),
                   os.path.join(work, "tft"), "--result", path],
                  os.path.join(work, "check.log"))
      with open(path, encoding="utf-8") as handle:
        check_result = dict(json.load(handle), rows=rows)
    results[str(rows)] = measured
    if not keep:
      for variant in variants:
        shutil.rmtree(os.path.join(work, variant), ignore_errors=True)
  return {"spec": os.path.relpath(SPEC_PATH, os.path.dirname(
      os.path.dirname(SPEC_PATH))), "joins": False, "sizes": results,
          "check": check_result, "table": table}


def run(quick: bool) -> Dict:
  """The `python -m benchmarks.run` entry: 1M rows, or 100K when quick.

  Args:
    quick: measure 100K rows instead of 1M.

  Returns:
    See bench().
  """
  return bench([QUICK_ROWS if quick else DEFAULT_ROWS], DEFAULT_VARIANTS)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: sizes and variants beyond run()'s defaults.

  Args:
    argv: flags (default: sys.argv[1:]).

  Returns:
    The exit status.
  """
  parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess_bench",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, nargs="+", default=None,
                      help=f"sizes (default {DEFAULT_ROWS})")
  parser.add_argument("--scale", action="store_true",
                      help=f"sizes {', '.join(map(str, SCALE_ROWS))}")
  parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                      help=f"comma-separated subset of {','.join(VARIANTS)}")
  parser.add_argument("--keep", action="store_true",
                      help="keep outputs under benchmarks/results/work/")
  parser.add_argument("--no_check", action="store_true",
                      help="skip the floor-vs-pipeline output comparison")
  parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument("--compare", nargs=2, help=argparse.SUPPRESS)
  parser.add_argument("--data", help=argparse.SUPPRESS)
  parser.add_argument("--output", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    _child(args.child, args.data, args.output, args.result)
    return 0
  if args.compare:
    _compare(args.compare[0], args.compare[1], args.result)
    return 0
  variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variant(s) {unknown}; choose from {VARIANTS}")
  rows = list(SCALE_ROWS) if args.scale else (args.rows or [DEFAULT_ROWS])
  from benchmarks import run as run_lib  # pylint: disable=import-outside-toplevel
  started = time.time()
  result = bench(rows, variants, keep=args.keep, check=not args.no_check)
  result.update({"name": "preprocess", "command": " ".join(
      ["python -m benchmarks.preprocess_bench"] + list(argv or sys.argv[1:])),
                 "machine": run_lib.machine(),
                 "seconds": round(time.time() - started, 1)})
  suffix = "_".join(str(r) for r in sorted(rows))
  path = os.path.join(benchmarks.results_dir(), f"preprocess_{suffix}.json")
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(result, handle, indent=2, sort_keys=True)
  print(run_lib.format_table(result["table"]))
  if result["check"]:
    print("check (floor vs tft):", json.dumps(result["check"]))
  print(f"-> {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
