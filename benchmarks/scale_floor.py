"""The floors and checks of benchmarks/scale_bench.py, one command each.

Each floor does a stage's work with the least machinery that does it, in
its own process (so the parent measures it like the stage itself):

  preprocess  configs/synthetic.yaml in pyarrow + numpy, no Beam: ratings
              streamed twice (analyze on train, then transform both
              splits), users and items joined by key lookup, the split by
              `pipelines.split.eval_mask` on the spec's key, vocabularies
              (user, movie, gender, occupation, genre tokens) ordered like
              tf.Transform's (count, then token, descending), age
              quantiles by tfx_bsl's QuantilesSketch (what tft.bucketize
              uses), day and hour by integer arithmetic, the three crosses
              by tf.sparse.cross_hashed (the pipeline's op), tf.Examples by
              tfx_bsl's encoder, one gzipped TFRecord per split. No row
              validation or dead letters: a lower bound.
  train       the trained model's setting (from its report.json) on
              in-memory tensors: a shuffled sample of parsed batches,
              cached, one warm-up pass, then one timed pass (the
              benchmarks.trainer_bench "memory" baseline; a timed pass
              includes fit's own start, a few ms).
  recommend   faiss IndexFlatIP exact top-k over the export's vectors, the
              item bias folded in (user [u, 1] . item [v, b]), seen items
              excluded, for a sample of users; also the recall@k of the
              batch job's own output rows for those users against it.
  quality     the noise floor and planted-cluster precision with its
              ceilings (benchmarks/quality_floor.py).

Usage (scale_bench runs these): python -m benchmarks.scale_floor
  {preprocess,train,recommend,quality} --result OUT.json ...
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import tensorflow as tf
import tf_keras as keras
from tfx_bsl import sketches
from tfx_bsl.public import tfxio

from benchmarks import quality_floor
from core import artifacts
from core import layout
from pipelines import split as split_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import models
from trainer import optimizers
from transforms import feature_info
from transforms import loader
from workflows import recommend_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
SEED = 1


# ---------------------------------------------------------------- math


def recall_at_k(found: Mapping[str, Sequence[str]],
                truth: Mapping[str, Sequence[str]], k: int) -> float:
  """Mean share of each user's exact top-k that `found` also has.

  Args:
    found: user -> items returned (a user missing counts as none found).
    truth: user -> exact top items, best first.
    k: the cut-off.

  Returns:
    The mean over users of truth of |found[:k] & truth[:k]| / |truth[:k]|.
  """
  shares = []
  for user, best in truth.items():
    best = list(best)[:k]
    if not best:
      continue
    got = set(list(found.get(user, ()))[:k])
    shares.append(len(got & set(best)) / len(best))
  return float(np.mean(shares)) if shares else 0.0


def exact_top_k(users: np.ndarray, items: np.ndarray,
                item_bias: Optional[np.ndarray],
                seen: Sequence[Sequence[int]], k: int) -> np.ndarray:
  """faiss IndexFlatIP top-k of user [u, 1] . item [v, b], seen excluded.

  Args:
    users: [n, d] user vectors.
    items: [m, d] item vectors.
    item_bias: [m] item bias, or None (then plain u . v).
    seen: per user, item rows never to return.
    k: results per user.

  Returns:
    int64 [n, k] item rows, best first (-1 where fewer than k remain).
  """
  users = np.asarray(users, dtype=np.float32)
  items = np.asarray(items, dtype=np.float32)
  if item_bias is not None:
    users = np.hstack([users, np.ones((len(users), 1), np.float32)])
    items = np.hstack([items, np.asarray(item_bias, np.float32)[:, None]])
  flat = faiss.IndexFlatIP(items.shape[1])
  flat.add(np.ascontiguousarray(items))
  extra = max([len(s) for s in seen] + [0])
  depth = min(len(items), k + extra)
  _, ids = flat.search(np.ascontiguousarray(users), depth)
  out = np.full((len(users), k), -1, dtype=np.int64)
  for row, (found, excluded) in enumerate(zip(ids, seen)):
    skip = set(int(i) for i in excluded)
    kept = [int(i) for i in found if i >= 0 and int(i) not in skip][:k]
    out[row, :len(kept)] = kept
  return out


# ------------------------------------------------------- recommend


def _read_output(folder: str, wanted: set) -> Dict[str, List[str]]:
  """The batch job's items for `wanted` users (jsonl or parquet)."""
  return {user: row["items"] for user, row in
          recommend_output.read_recommendations(folder, wanted).items()}


def recommend(export: str, seen_path: str, output: Optional[str],
              sample: int, k: int) -> Dict:
  """Exact faiss top-k with seen items excluded for a sample of users.

  Args:
    export: the mf export (user and movie tables, bias_movie).
    seen_path: the ratings CSV whose items are excluded.
    output: recommend-batch's output folder to score, or None.
    sample: users timed.
    k: recommendations per user.

  Returns:
    Users/s of the exact search (seen lookup built outside the clock),
    the users in the table, and recall@k of the job's rows.
  """
  users = artifacts.load(export, "user")
  items = artifacts.load(export, "movie")
  bias = artifacts.find_bias(export, items)
  user_rows = list(users.real_rows)
  item_rows = np.asarray(items.real_rows)
  rng = np.random.default_rng(SEED)
  picked = np.sort(rng.choice(len(user_rows), min(sample, len(user_rows)),
                              replace=False))
  rows = [user_rows[i] for i in picked]
  tokens = [users.tokens[r] for r in rows]
  item_tokens = pa.array([items.tokens[r] for r in item_rows], pa.string())
  seen: Dict[str, List[int]] = {t: [] for t in tokens}
  wanted = pa.array(tokens, pa.string())
  for batch in quality_floor.read_ratings(seen_path, ("user_id", "item_id")):
    part = batch.filter(pc.is_in(batch.column("user_id"), value_set=wanted))
    where = pc.index_in(part.column("item_id"), value_set=item_tokens)
    for user, item in zip(part.column("user_id").to_pylist(),
                          where.to_pylist()):
      if item is not None:
        seen[user].append(item)
  began = time.perf_counter()
  top = exact_top_k(users.vectors[rows], items.vectors[item_rows],
                    None if bias is None else bias[item_rows],
                    [seen[t] for t in tokens], k)
  seconds = time.perf_counter() - began
  truth = {t: [items.tokens[item_rows[i]] for i in found if i >= 0]
           for t, found in zip(tokens, top)}
  result = {"sample_users": len(rows), "users_in_table": len(user_rows),
            "items": int(len(item_rows)), "bias": bias is not None,
            "seconds": round(seconds, 3),
            "users_per_s": round(len(rows) / seconds, 1),
            "seconds_all_users": round(seconds * len(user_rows) / len(rows),
                                       1)}
  if output:
    found = _read_output(output, set(tokens))
    result["rows_found"] = len(found)
    result[f"recall_at_{k}"] = round(recall_at_k(found, truth, k), 4)
  return result


# ------------------------------------------------------------ train


def train(preprocessed: str, report_path: str, sample_rows: int) -> Dict:
  """The trained model's setting on cached in-memory batches, one epoch.

  Args:
    preprocessed: the preprocessing output.
    report_path: the trained model's report.json (its config).
    sample_rows: most training rows held in memory; the epoch time is
      scaled from them to the whole split.

  Returns:
    examples/s and the per-epoch seconds scaled to the split.
  """
  with open(report_path, encoding="utf-8") as handle:
    report = json.load(handle)
  trained = report["config"]
  spec = loader.load_spec(trained["spec_path"], dict(trained["spec_env"]))
  keep = ("model_type", "batch_size", "mf_dim", "hidden_units", "dropout",
          "hybrid", "features", "user_side_features", "item_side_features",
          "optimizer", "learning_rate", "shuffle_buffer", "seed", "l2_user",
          "l2_item", "l2_embedding", "l2_bias", "l2_dense")
  config = config_lib.build_config(
      spec, {name: trained[name] for name in keep if name in trained},
      preprocessed_dir=preprocessed, model_dir="unused",
      spec_path=trained["spec_path"])
  infos = feature_info.read_feature_info(preprocessed)
  batch = config.batch_size
  train_rows = int(report["train_examples"])
  steps = max(1, min(train_rows, sample_rows) // batch)
  names = models.model_features(config, spec)
  options = data_lib.InputOptions(
      batch_size=batch, shuffle=True, shuffle_buffer=config.shuffle_buffer,
      seed=config.seed, repeat=False)
  cached = data_lib.tfrecord_dataset(preprocessed, "train", options,
                                     names).take(steps).cache().repeat()
  keras.utils.set_random_seed(config.seed)
  model = models.build_model(config, spec, infos,
                             label_mean=float(report["label_mean"]))
  models.compile_model(model, config, spec, optimizers.make_optimizer(
      config.optimizer, config.learning_rate))
  # The first pass fills the cache; the second, timed, reads tensors.
  model.fit(cached, epochs=1, steps_per_epoch=steps, verbose=0)
  began = time.perf_counter()
  model.fit(cached, epochs=1, steps_per_epoch=steps, verbose=0)
  rate = steps * batch / (time.perf_counter() - began)
  return {"model_type": config.model_type, "batch_size": batch,
          "sample_rows": steps * batch, "train_rows": train_rows,
          "examples_per_s": round(rate), "epoch_seconds": round(
              train_rows / rate, 2),
          "sample": "the first shuffled batches of the train split, "
                    "cached; epoch time scaled to the split"}


# ------------------------------------------------------- preprocess


class _Writer:
  """Columns (values, row offsets) -> tf.Examples -> one gzipped TFRecord."""

  def __init__(self, folder: str):
    os.makedirs(folder, exist_ok=True)
    self._writer = tf.io.TFRecordWriter(
        os.path.join(folder, "part-00000-of-00001.tfrecord.gz"),
        tf.io.TFRecordOptions(compression_type="GZIP"))
    self._encoder = tfxio.RecordBatchToExamplesEncoder()
    self.rows = 0

  def write(self, columns: Mapping[str, Tuple[np.ndarray, np.ndarray]]
           ) -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
         for values, offsets in columns.values()], names=list(columns))
    for record in self._encoder.encode(batch):
      self._writer.write(record)
    self.rows += batch.num_rows

  def close(self) -> None:
    self._writer.close()


def _sum_counts(parts: Sequence[pa.Table]) -> pa.Table:
  return pa.concat_tables(parts).group_by("token").aggregate(
      [("count", "sum")]).rename_columns(["token", "count"])


def _vocabulary(counts: List[pa.Table]) -> pa.Array:
  # tf.Transform's order: count descending, ties by token descending.
  return _sum_counts(counts).sort_by([("count", "descending"),
                         ("token", "descending")]).column(
                             "token").combine_chunks()


def preprocess(data: str, output: str) -> Dict:
  """configs/synthetic.yaml's job in pyarrow + numpy (module docstring).

  Args:
    data: the generated folder.
    output: gets train/, eval/ and vocabularies/.

  Returns:
    rows_read, rows_joined (with a user and an item) and rows written per
    split.
  """
  spec = loader.load_spec(SPEC, {"DATA_DIR": data})
  users = pa_csv.read_csv(os.path.join(data, "users.csv"),
                          convert_options=pa_csv.ConvertOptions(
                              column_types={"user_id": pa.string(),
                                            "age": pa.int64(),
                                            "gender": pa.string(),
                                            "occupation": pa.string()}))
  items = pa_csv.read_csv(os.path.join(data, "items.csv"),
                          convert_options=pa_csv.ConvertOptions(
                              column_types={"item_id": pa.string(),
                                            "genres": pa.string()},
                              include_columns=["item_id", "genres"]))
  key, fraction, seed = quality_floor.split_settings(spec.split)
  age_buckets = spec.feature("age_bucket").num_buckets

  counted = {"read": 0, "joined": 0}

  def joined() -> Iterator[Tuple[str, pa.Table]]:
    cache: Dict[str, bool] = {}
    counted.update(read=0, joined=0)
    for batch in quality_floor.read_ratings(
        os.path.join(data, "ratings.csv"),
        ("user_id", "item_id", "rating", "timestamp")):
      counted["read"] += batch.num_rows
      user = pc.index_in(batch.column("user_id"), value_set=users["user_id"])
      item = pc.index_in(batch.column("item_id"), value_set=items["item_id"])
      found = pc.and_(pc.is_valid(user), pc.is_valid(item))
      batch = batch.filter(found)
      counted["joined"] += batch.num_rows
      user, item = user.filter(found), item.filter(found)
      table = pa.Table.from_batches([batch]).append_column(
          "age", users["age"].take(user)).append_column(
              "gender", users["gender"].take(user)).append_column(
                  "occupation", users["occupation"].take(user)).append_column(
                      "genres", items["genres"].take(item))
      in_eval = split_lib.eval_mask(
          split_lib.split_keys(table.combine_chunks().to_batches()[0], key),
          fraction, seed, cache)
      for name, mask in ((layout.TRAIN, ~in_eval), (layout.EVAL, in_eval)):
        if mask.any():
          yield name, table.filter(pa.array(mask))

  def genre_tokens(table: pa.Table) -> pa.ListArray:
    pieces = pc.split_pattern(table.column("genres").combine_chunks(), "|")
    stripped = pc.utf8_trim_whitespace(pieces.flatten())
    keep = pc.greater(pc.utf8_length(stripped), 0)
    lengths = pc.list_value_length(pieces).to_numpy(zero_copy_only=False)
    kept = np.add.reduceat(keep.to_numpy(zero_copy_only=False).astype(
        np.int64), np.concatenate([[0], np.cumsum(lengths)[:-1]])
                           ) if len(lengths) else np.zeros(0, np.int64)
    kept = np.where(lengths > 0, kept, 0)
    offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets),
                                    stripped.filter(keep))

  vocab_sources = {"user": "user_id", "movie": "item_id", "gender": "gender",
                   "occupation": "occupation"}
  counts: Dict[str, List[pa.Table]] = {n: [] for n in
                                       list(vocab_sources) + ["genres"]}
  sketch = sketches.QuantilesSketch(min(1.0 / age_buckets, 0.01), 1 << 32, 1)
  for name, table in joined():
    if name != layout.TRAIN:
      continue
    columns = {n: table.column(s).combine_chunks()
               for n, s in vocab_sources.items()}
    columns["genres"] = genre_tokens(table).flatten()
    for feature, values in columns.items():
      tally = pc.value_counts(values).flatten()
      counts[feature].append(pa.table({"token": tally[0],
                                       "count": tally[1]}))
      if len(counts[feature]) >= 16:
        counts[feature] = [_sum_counts(counts[feature])]
    sketch.AddValues(pa.array(table.column("age").to_numpy().astype(
        np.float32)))
  vocabularies = {n: _vocabulary(c) for n, c in counts.items()}
  os.makedirs(os.path.join(output, "vocabularies"), exist_ok=True)
  for feature, tokens in vocabularies.items():
    with open(os.path.join(output, "vocabularies", feature), "w",
              encoding="utf-8") as handle:
      handle.write("".join(f"{t}\n" for t in tokens.to_pylist()))
  boundaries = np.array(sketch.GetQuantiles(age_buckets).to_pylist()[0][1:-1],
                        dtype=np.float32)
  crosses = {f.name: f.hash_bucket_size for f in spec.features
             if f.name in ("age_x_gender", "occupation_x_genre",
                           "day_x_hour")}

  writers = {name: _Writer(os.path.join(output, name))
             for name in layout.SPLITS}
  for name, table in joined():
    n = table.num_rows
    single = np.arange(n + 1, dtype=np.int64)
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for feature, source in vocab_sources.items():
      vocab = vocabularies[feature]
      ids = pc.fill_null(pc.index_in(table.column(source), value_set=vocab),
                         len(vocab))
      out[feature] = (ids.to_numpy().astype(np.int64), single)
    tokens = genre_tokens(table)
    genre_ids = pc.fill_null(pc.index_in(tokens.flatten(),
                                         value_set=vocabularies["genres"]),
                             len(vocabularies["genres"]))
    genre_offsets = tokens.offsets.to_numpy().astype(np.int64)
    out["genres"] = (genre_ids.to_numpy(zero_copy_only=False).astype(
        np.int64), genre_offsets)
    age = np.searchsorted(boundaries, table.column("age").to_numpy().astype(
        np.float32), side="right").astype(np.int64)
    out["age_bucket"] = (age, single)
    stamp = table.column("timestamp").to_numpy()
    day = ((stamp // 86400) + 3) % 7
    hour = (stamp // 3600) % 24
    out["day_of_week"], out["hour_of_day"] = (day, single), (hour, single)
    gender = tf.constant(table.column("gender").to_numpy(
        zero_copy_only=False).astype(object))
    occupation = table.column("occupation").to_numpy(
        zero_copy_only=False).astype(object)
    out["age_x_gender"] = (tf.sparse.cross_hashed(
        [tf.constant(age[:, None]), gender[:, None]],
        num_buckets=crosses["age_x_gender"]).values.numpy(), single)
    genre_sparse = tf.RaggedTensor.from_row_splits(
        tokens.flatten().to_numpy(zero_copy_only=False).astype(object),
        genre_offsets).to_sparse()
    crossed = tf.sparse.cross_hashed(
        [tf.sparse.from_dense(tf.constant(occupation[:, None])),
         genre_sparse], num_buckets=crosses["occupation_x_genre"])
    per_row = np.bincount(crossed.indices.numpy()[:, 0], minlength=n)
    out["occupation_x_genre"] = (crossed.values.numpy(), np.concatenate(
        [[0], np.cumsum(per_row)]).astype(np.int64))
    out["day_x_hour"] = (tf.sparse.cross_hashed(
        [tf.constant(day[:, None]), tf.constant(hour[:, None])],
        num_buckets=crosses["day_x_hour"]).values.numpy(), single)
    out["label"] = (table.column("rating").to_numpy().astype(np.float32),
                    single)
    writers[name].write(out)
  for writer in writers.values():
    writer.close()
  return {"rows_read": counted["read"], "rows_joined": counted["joined"],
          "rows_written": {n: w.rows for n, w in writers.items()}}


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one floor and writes its result as JSON.

  Args:
    argv: flags (default: sys.argv[1:]).

  Returns:
    The exit status.
  """
  parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_floor",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("floor", choices=("preprocess", "train", "recommend",
                                        "quality"))
  parser.add_argument("--result", required=True)
  parser.add_argument("--data")
  parser.add_argument("--output")
  parser.add_argument("--preprocessed")
  parser.add_argument("--report")
  parser.add_argument("--export")
  parser.add_argument("--seen")
  parser.add_argument("--sample", type=int, default=10000)
  parser.add_argument("-k", type=int, default=10)
  args = parser.parse_args(argv)
  began = time.perf_counter()
  if args.floor == "preprocess":
    result = preprocess(args.data, args.output)
  elif args.floor == "train":
    result = train(args.preprocessed, args.report, args.sample)
  elif args.floor == "recommend":
    result = recommend(args.export, args.seen, args.output, args.sample,
                       args.k)
  else:
    result = quality_floor.quality(args.data, args.export,
                     loader.load_spec(SPEC, {"DATA_DIR": args.data}),
                     args.sample, args.k)
  result["job_seconds"] = round(time.perf_counter() - began, 3)
  with open(args.result, "w", encoding="utf-8") as handle:
    json.dump(result, handle, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
