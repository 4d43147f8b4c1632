"""Every file and folder name of a run, defined once.

Each kind of output directory is a small frozen class over its root path;
its properties are the paths of what it holds. Writers and readers both go
through them, so a name can only change here:

  PreprocessedLayout   `embeddings preprocess --output`
  ModelLayout          `embeddings train --model_dir`
  ExportLayout         `embeddings export --output`, one TableLayout per table
  RecommendationsLayout `embeddings recommend-batch --output`
  TuneLayout           `embeddings tune --model_dir`
  FoldsLayout          `embeddings evaluate --work_dir` (the 5-fold protocol)
  RegistryLayout       `embeddings retrain --root`

Paths with a scheme (gs://, s3://) are joined with "/", the only separator
object stores have; local ones with os.path. Nothing here touches a
filesystem, so reading this module costs no TensorFlow.
"""

import dataclasses
import os
import posixpath

def is_local(path: str) -> bool:
  """True for plain local paths (no `scheme://` prefix)."""
  return "://" not in path


def join(base: str, *parts: str) -> str:
  """Joins path parts the way `base`'s filesystem spells paths.

  Args:
    base: a local path or a URL such as gs://bucket/dir.
    *parts: names to append.

  Returns:
    The joined path.
  """
  if is_local(base):
    return os.path.join(base, *parts)
  return posixpath.join(base, *parts)


def split(path: str):
  """(parent, name) of a path; local paths are made absolute first."""
  path = path.rstrip("/")
  if is_local(path):
    path = os.path.abspath(path)
    return os.path.dirname(path), os.path.basename(path)
  return posixpath.dirname(path), posixpath.basename(path)


# Marks a finished output (core/commit.py); written last.
SUCCESS_FILE = "_SUCCESS"
# A job's own summary of a run, beside its output.
RUN_REPORT_FILE = "run_report.json"
DEAD_LETTER_DIR = "dead_letter"
# Shards of TFRecord and JSONL outputs: `<prefix>-00000-of-00004<suffix>`.
SHARD_PREFIX = "part"
TFRECORD_SUFFIX = ".tfrecord.gz"
JSONL_SUFFIX = ".jsonl"
PARQUET_SUFFIX = ".parquet"

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)
# The eval split's raw rows as tf.Examples (`preprocess --raw_eval`): what a
# model's raw serving signature is evaluated on.
RAW_EVAL = "eval_raw"


@dataclasses.dataclass(frozen=True)
class PreprocessedLayout:
  """An `embeddings preprocess` output directory.

  transform_fn/ and transformed_metadata/ are tf.Transform's own names
  (tft.TFTransformOutput reads the directory as it is).
  """
  root: str

  @property
  def success(self) -> str:
    return join(self.root, SUCCESS_FILE)

  @property
  def report(self) -> str:
    return join(self.root, RUN_REPORT_FILE)

  @property
  def feature_info(self) -> str:
    return join(self.root, "feature_info.json")

  @property
  def transform_fn(self) -> str:
    return join(self.root, "transform_fn")

  @property
  def vocabulary_assets(self) -> str:
    """Where tf.Transform keeps the vocabulary files."""
    return join(self.transform_fn, "assets")

  @property
  def counts(self) -> str:
    """The job's row counts, read back after the pipeline (temporary)."""
    return join(self.root, "_counts.json")

  @property
  def raw_metadata(self) -> str:
    """The raw (input) schema, tf.Transform's own name for it
    (`tft.TFTransformOutput(root).raw_metadata` reads it)."""
    return join(self.root, "metadata")

  @property
  def names_dir(self) -> str:
    """Display names of side-table rows (a table's `display_column`)."""
    return join(self.root, "names")

  def names(self, feature: str) -> str:
    """`names/<feature>.tsv`: token, name and group of each named row."""
    return join(self.names_dir, f"{feature}.tsv")

  @property
  def tft_temp(self) -> str:
    """tf.Transform's temporary directory (removed before the commit)."""
    return join(self.root, "_tft_temp")

  @property
  def dead_letter_prefix(self) -> str:
    return join(self.root, DEAD_LETTER_DIR, SHARD_PREFIX)

  def split_dir(self, split: str) -> str:
    """The folder of one split's shards (train, eval or eval_raw)."""
    return join(self.root, split)

  def shard_prefix(self, split: str) -> str:
    """The file prefix a split's shards are written under."""
    return join(self.split_dir(split), SHARD_PREFIX)

  def shard_pattern(self, split: str) -> str:
    """The glob matching a split's gzipped TFRecord shards."""
    return join(self.split_dir(split),
                      f"{SHARD_PREFIX}-*{TFRECORD_SUFFIX}")


@dataclasses.dataclass(frozen=True)
class ModelLayout:
  """An `embeddings train --model_dir` directory."""
  root: str

  @property
  def report(self) -> str:
    return join(self.root, "report.json")

  @property
  def backup(self) -> str:
    """Checkpoints a killed run resumes from (removed when a run finishes)."""
    return join(self.root, "backup")

  @property
  def backup_fingerprint(self) -> str:
    """The settings and data a backup was made with (resume only on a match)."""
    return join(self.backup, "fingerprint.json")

  @property
  def backup_best_weights(self) -> str:
    """Early stopping's best epoch so far: its weights (NumPy .npz)."""
    return join(self.backup, "best_weights.npz")

  @property
  def backup_best_state(self) -> str:
    """Early stopping's validation metric of every epoch so far (JSON)."""
    return join(self.backup, "early_stopping.json")

  @property
  def training_curve(self) -> str:
    """Train and validation RMSE per epoch, as a picture."""
    return join(self.root, "training_curve.png")

  @property
  def model_card(self) -> str:
    """A short description of the model: data, features, metrics."""
    return join(self.root, "model_card.md")

  @property
  def logs(self) -> str:
    """TensorBoard logs."""
    return join(self.root, "logs")

  @property
  def saved_model(self) -> str:
    """The serving SavedModel."""
    return join(self.root, "export")

  @property
  def unpartitioned(self) -> str:
    """Scratch space for a parameter-server model's whole-variable copy."""
    return join(self.root, "unpartitioned")

  def worker(self, task_type: str, task_id: int) -> "ModelLayout":
    """Where a non-chief multi-worker task saves its own copy."""
    return ModelLayout(join(self.root, "workers",
                                  f"{task_type}_{task_id}"))


# The files of one exported table (core/artifacts.py writes and reads them).
CHECKPOINT_PREFIX = "embedding.ckpt"
VOCAB_FILE = "vocab.txt"
METADATA_FILE = "metadata.json"
WORD2VEC_FILE = "word2vec.txt"
VECTORS_TSV = "vectors.tsv"
METADATA_TSV = "metadata.tsv"
VECTORS_NPY = "vectors.npy"
BIAS_PREFIX = "bias_"


@dataclasses.dataclass(frozen=True)
class TableLayout:
  """One exported table's directory."""
  root: str

  @property
  def checkpoint(self) -> str:
    return join(self.root, CHECKPOINT_PREFIX)

  @property
  def vocab(self) -> str:
    return join(self.root, VOCAB_FILE)

  @property
  def metadata(self) -> str:
    return join(self.root, METADATA_FILE)

  @property
  def word2vec(self) -> str:
    return join(self.root, WORD2VEC_FILE)

  @property
  def vectors_tsv(self) -> str:
    return join(self.root, VECTORS_TSV)

  @property
  def metadata_tsv(self) -> str:
    return join(self.root, METADATA_TSV)

  @property
  def vectors_npy(self) -> str:
    """The vectors as a NumPy file: readers need neither TF nor Keras."""
    return join(self.root, VECTORS_NPY)


def bias_table_name(feature: str) -> str:
  """The exported name of a feature's per-row bias: `bias_<feature>`."""
  return f"{BIAS_PREFIX}{feature}"


@dataclasses.dataclass(frozen=True)
class ExportLayout:
  """An `embeddings export --output` directory: one folder per table."""
  root: str

  def table(self, name: str) -> TableLayout:
    return TableLayout(join(self.root, name))

  def bias(self, feature: str) -> TableLayout:
    return self.table(bias_table_name(feature))


@dataclasses.dataclass(frozen=True)
class RecommendationsLayout:
  """An `embeddings recommend-batch --output` directory."""
  root: str

  @property
  def prefix(self) -> str:
    """The shard prefix of the recommendation files."""
    return join(self.root, "recommendations")

  @property
  def dead_letter_prefix(self) -> str:
    return join(self.root, DEAD_LETTER_DIR, SHARD_PREFIX)

  @property
  def report(self) -> str:
    return join(self.root, RUN_REPORT_FILE)


@dataclasses.dataclass(frozen=True)
class TuneLayout:
  """An `embeddings tune --model_dir` directory: a model per trial."""
  root: str

  def trial(self, number: int) -> ModelLayout:
    return ModelLayout(join(self.root, f"trial_{number:03d}"))

  @property
  def best(self) -> ModelLayout:
    """The chosen setting, trained again and tested on the eval split."""
    return ModelLayout(join(self.root, "best"))

  @property
  def report(self) -> str:
    return join(self.root, "tune_report.json")


@dataclasses.dataclass(frozen=True)
class FoldsLayout:
  """An `embeddings evaluate --work_dir` directory: data and model per fold."""
  root: str

  def preprocessed(self, fold: str) -> PreprocessedLayout:
    return PreprocessedLayout(join(self.root, fold, "preprocessed"))

  def model(self, fold: str) -> ModelLayout:
    return ModelLayout(join(self.root, fold, "model"))

  @property
  def report(self) -> str:
    """Per-fold metrics and their mean and std (JSON)."""
    return join(self.root, "folds_report.json")

  @property
  def table(self) -> str:
    """The fold table a person reads (Markdown)."""
    return join(self.root, "folds.md")


@dataclasses.dataclass(frozen=True)
class RegistryLayout:
  """An `embeddings retrain --root` model registry.

    current              {"version": V, "history": [..., V]}
    versions/<version>/  preprocessed/, model/, retrain.json
    runs/<window>.json   the window's marker
  """
  root: str

  @property
  def current(self) -> str:
    return join(self.root, "current")

  @property
  def versions(self) -> str:
    return join(self.root, "versions")

  def version(self, version: str) -> str:
    return join(self.versions, version)

  def preprocessed(self, version: str) -> PreprocessedLayout:
    return PreprocessedLayout(join(self.version(version),
                                         "preprocessed"))

  def model(self, version: str) -> ModelLayout:
    return ModelLayout(join(self.version(version), "model"))

  def version_report(self, version: str) -> str:
    return join(self.version(version), "retrain.json")

  def marker(self, window: str) -> str:
    return join(self.root, "runs", f"{window}.json")
