"""`embeddings projector`: TensorBoard Embedding Projector files and a 2-D map.

  embeddings projector --embeddings out/run/embeddings --table movie \\
      [--labels data/truth/item_clusters.csv] --output out/run/projector
  tensorboard --logdir out/run/projector     # then the PROJECTOR tab

writes into the output directory (a TensorBoard log directory):

  <table>_tensor.tsv   the table's vectors, one tab-separated row per line
      (the file projector.tensorflow.org also accepts); with
      --tensor_format checkpoint instead the tables as variables of a TF2
      checkpoint (embeddings.ckpt-1.*, checkpoint), tensor
      `<table>/.ATTRIBUTES/VARIABLE_VALUE`, which needs TensorFlow
  <table>_metadata.tsv   one line per row; a header naming the columns when
      there are several (token, label, name, count, group, cluster, ...), as
      the projector expects
  projector_config.pbtxt   TensorBoard's ProjectorConfig, in text format
  <table>_map.png   a 2-D PCA (or t-SNE) map (retrieval/maps.py), coloured
      by the table's groups (e.g. a movie's first genre) when the export has
      them, else by k-means clusters of the table (the legend says which)

Only real rows are exported (no OOV buckets). The name, count and group
columns come from the export; extra label columns from id -> attribute
files: --names (u.item, items.csv) and --labels (e.g. the generator's
truth/item_clusters.csv); rows without an entry get "", and a file that
names none of a table's rows adds no columns to it, so item and user files
can be passed together for several tables.
"""

import argparse
import dataclasses
import io
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from core import artifacts
from core import flags
from core import files
from core import layout
from retrieval import catalog
from retrieval import clustering
from retrieval import commands
from retrieval import maps

COMMAND = "projector"

CHECKPOINT = "checkpoint"
TSV = "tsv"
TENSOR_FORMATS = (CHECKPOINT, TSV)
CHECKPOINT_PREFIX = "embeddings.ckpt"
CONFIG_FILE = "projector_config.pbtxt"
# The k-means clusters a map is coloured by when the table has no groups.
MAP_CLUSTERS = 10
KMEANS_COLUMN = "kmeans_cluster"


@dataclasses.dataclass
class ProjectorTable:
  """One table to show in the projector.

  Attributes:
    name: tensor name prefix and file prefix (a feature name).
    vectors: float32 [n, d].
    columns: metadata column -> n values, in display order.
    sprite: optional [n, h, w] or [n, h, w, 3] images in [0, 1] shown as the
      points (the MNIST-style picture).
  """
  name: str
  vectors: np.ndarray
  columns: Dict[str, List[str]]
  sprite: Optional[np.ndarray] = None


def tensor_name(table: str) -> str:
  """The checkpoint name the projector shows for a table."""
  return f"{table}/.ATTRIBUTES/VARIABLE_VALUE"


def _cell(value) -> str:
  return " ".join(str(value).replace("\t", " ").splitlines())


def metadata_tsv(columns: Mapping[str, Sequence[str]]) -> str:
  """The projector's metadata file: labels, with a header if several columns.

  Args:
    columns: column name -> values (all the same length).

  Returns:
    The file content.

  Raises:
    ValueError: no columns, or columns of different lengths.
  """
  if not columns:
    raise ValueError("metadata needs at least one column")
  lengths = {name: len(values) for name, values in columns.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"metadata columns differ in length: {lengths}")
  names = list(columns)
  rows = zip(*[columns[name] for name in names])
  lines = ["\t".join(_cell(v) for v in row) for row in rows]
  if len(names) > 1:
    lines.insert(0, "\t".join(_cell(name) for name in names))
  return "".join(line + "\n" for line in lines)


def _sprite_image(images: np.ndarray) -> np.ndarray:
  """Tiles images into the square sprite sheet the projector reads."""
  count = images.shape[0]
  side = int(np.ceil(np.sqrt(count)))
  height, width = images.shape[1:3]
  channels = images.shape[3:] or ()
  sheet = np.ones((side * height, side * width) + tuple(channels),
                  dtype=np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, side)
    sheet[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
  return np.clip(sheet, 0.0, 1.0)


def _write_table(logdir: str, table: ProjectorTable, embedding,
                 tensor_format: str) -> Optional[np.ndarray]:
  """Writes one table's files and describes them in its config entry.

  Args:
    logdir: the log directory.
    table: the table.
    embedding: the table's ProjectorConfig.embeddings entry, filled here.
    tensor_format: CHECKPOINT or TSV.

  Returns:
    The vectors for the shared checkpoint (CHECKPOINT), else None (they
    went to a TSV).

  Raises:
    ValueError: a column does not match the rows.
  """
  vectors = np.asarray(table.vectors, dtype=np.float32)
  for column, values in table.columns.items():
    if len(values) != vectors.shape[0]:
      raise ValueError(f"table {table.name!r}: column {column!r} has "
                       f"{len(values)} values for {vectors.shape[0]} rows")
  checkpointed = None
  if tensor_format == CHECKPOINT:
    checkpointed = vectors
    embedding.tensor_name = tensor_name(table.name)
  else:
    tensor_file = f"{table.name}_tensor.tsv"
    files.write_text(layout.join(logdir, tensor_file), "".join(
        "\t".join(f"{x:.9g}" for x in row) + "\n" for row in vectors))
    embedding.tensor_name = table.name
    embedding.tensor_path = tensor_file
  if table.columns:
    metadata_file = f"{table.name}_metadata.tsv"
    files.write_text(layout.join(logdir, metadata_file),
                     metadata_tsv(table.columns))
    embedding.metadata_path = metadata_file
  if table.sprite is not None:
    # pylint: disable-next=g-import-not-at-top
    from matplotlib import image as image_lib  # slow to import (--help)
    sprite_file = f"{table.name}_sprite.png"
    sheet = _sprite_image(np.asarray(table.sprite, dtype=np.float32))
    buffer = io.BytesIO()
    image_lib.imsave(buffer, sheet, cmap="gray_r" if sheet.ndim == 2 else None,
                     vmin=0, vmax=1, format="png")
    files.write_bytes(layout.join(logdir, sprite_file), buffer.getvalue())
    embedding.sprite.image_path = sprite_file
    embedding.sprite.single_image_dim.extend(
        [int(table.sprite.shape[2]), int(table.sprite.shape[1])])
  return checkpointed


def _write_checkpoint(logdir: str, tables: Dict[str, np.ndarray]) -> None:
  """The tables as variables of one TF2 checkpoint (needs TensorFlow)."""
  tf = files.tensorflow()
  variables = {name: tf.Variable(vectors, name=name)
               for name, vectors in tables.items()}
  tf.train.Checkpoint(**variables).save(layout.join(logdir,
                                                    CHECKPOINT_PREFIX))


def export(logdir: str, tables: Sequence[ProjectorTable],
           tensor_format: str = TSV) -> str:
  """Writes the projector files for some tables into a log directory.

  Args:
    logdir: the directory TensorBoard's --logdir will point at.
    tables: the tables with their metadata columns.
    tensor_format: "tsv" (one tensor TSV per table) or "checkpoint" (a TF2
      checkpoint of all tables; imports TensorFlow).

  Returns:
    The path of projector_config.pbtxt.

  Raises:
    ValueError: an unknown format, duplicate names, or columns that do not
      match the rows.
  """
  # tensorboard is optional (TensorFlow does not install it): only writing
  # the projector config needs it, and the module imports without it.
  # pylint: disable-next=g-import-not-at-top
  from google.protobuf import text_format
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.plugins.projector import projector_config_pb2
  if tensor_format not in TENSOR_FORMATS:
    raise ValueError(f"tensor_format must be one of {TENSOR_FORMATS}, got "
                     f"{tensor_format!r}")
  names = [table.name for table in tables]
  if len(set(names)) != len(names) or not names:
    raise ValueError(f"table names must be unique and non-empty: {names}")
  files.makedirs(logdir)
  config = projector_config_pb2.ProjectorConfig()
  checkpointed = {}
  for table in tables:
    vectors = _write_table(logdir, table, config.embeddings.add(),
                           tensor_format)
    if vectors is not None:
      checkpointed[table.name] = vectors
  if checkpointed:
    _write_checkpoint(logdir, checkpointed)
  path = layout.join(logdir, CONFIG_FILE)
  files.write_text(path, text_format.MessageToString(config))
  return path


def table_columns(table: artifacts.EmbeddingTable, rows: Sequence[int],
                  attribute_files: Sequence[str]) -> Dict[str, List[str]]:
  """Metadata columns for some rows of a table: token, label, the export's
  name, count and group, then attribute files' columns.

  Args:
    table: the table.
    rows: the rows exported.
    attribute_files: id -> attributes files (catalog.read_attributes).

  Returns:
    Column name -> values. "label" and "name" are included when they differ
    from the token somewhere, "count" and "group" when the table has them;
    attribute columns only when they name some row.
  """
  tokens = [table.tokens[r] for r in rows]
  columns: Dict[str, List[str]] = {"token": tokens}
  for column, values in (("label", table.labels), ("name", table.names)):
    if values is not None and [values[r] for r in rows] != tokens:
      columns[column] = [values[r] for r in rows]
  if table.counts is not None:
    columns["count"] = [str(table.counts[r]) for r in rows]
  if table.groups is not None:
    columns["group"] = [table.groups[r] for r in rows]
  for path in attribute_files:
    attributes = catalog.read_attributes(path)
    names: List[str] = []
    for values in attributes.values():
      names.extend(name for name in values if name not in names)
    for name in names:
      values = [attributes.get(token, {}).get(name, "") for token in tokens]
      # A file about other rows (item titles for the user table) adds nothing.
      if any(values):
        column = name if name not in columns else f"{name}_{len(columns)}"
        columns[column] = values
  return columns


def map_colors(table: artifacts.EmbeddingTable, vectors: np.ndarray,
               columns: Dict[str, List[str]], color_by: Optional[str],
               seed: int = 0) -> Tuple[List[str], str]:
  """What colours each exported row on the map, and the legend's title.

  In order: the --color_by column; the table's groups (titled by the
  metadata's "group_feature", e.g. genres); an attribute file's cluster,
  genres or label column; else k-means clusters of the vectors, added to
  `columns` as KMEANS_COLUMN so the projector can colour by them too.

  Args:
    table: the table.
    vectors: the exported rows' vectors.
    columns: their metadata columns (table_columns); may gain a column.
    color_by: a column the user chose, or None.
    seed: the k-means seed.

  Returns:
    (one label per row, the legend title).

  Raises:
    SystemExit: `color_by` is not a column (one line).
  """
  if color_by:
    if color_by not in columns:
      raise SystemExit(f"embeddings {COMMAND}: --color_by {color_by!r} is "
                       f"not a metadata column of {table.name!r}: "
                       f"{list(columns)}")
    return columns[color_by], color_by
  if "group" in columns:
    return columns["group"], str(table.metadata.get("group_feature")
                                 or "group")
  for name in ("cluster", "genres", "label", "digit"):
    if name in columns:
      return columns[name], name
  found = clustering.kmeans(vectors, min(MAP_CLUSTERS, len(vectors)),
                            seed=seed)
  columns[KMEANS_COLUMN] = [str(c) for c in found.assignments]
  return (columns[KMEANS_COLUMN],
          "k-means cluster (the export has no groups)")


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings projector` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings projector",
      description="TensorBoard Embedding Projector files and a 2-D map PNG.",
      formatter_class=flags.DefaultsHelpFormatter)
  commands.add_embeddings_flag(parser, table_directory=False)
  parser.add_argument("--table", action="append", default=None,
                      help="feature to export (repeatable) (default: "
                           "movie)")
  parser.add_argument("--output", required=True,
                      help="log directory to write (tensorboard --logdir) "
                           "(required)")
  commands.add_names_flag(parser)
  parser.add_argument("--labels", action="append", default=[],
                      help="more id -> label files, e.g. truth/"
                           "item_clusters.csv (repeatable) (default: none)")
  parser.add_argument("--color_by", default=None,
                      help="metadata column colouring the map (default: the "
                           "export's groups, else cluster, genres or label "
                           "when present, else k-means clusters); a "
                           "multi-valued cell uses its first value")
  parser.add_argument("--map_method", choices=maps.MAP_METHODS,
                      default=maps.PCA, help="2-D projection of the map")
  parser.add_argument("--max_points", type=int, default=20000,
                      help="points drawn on the map (a seeded sample)")
  parser.add_argument("--tensor_format", choices=TENSOR_FORMATS,
                      default=TSV,
                      help="how the vectors are stored (checkpoint needs "
                           "TensorFlow)")
  parser.add_argument("--seed", type=int, default=0,
                      help="sampling, k-means and map seed")
  return parser


def _projected_table(args: argparse.Namespace, name: str,
                     rng: np.random.Generator
                     ) -> Tuple[ProjectorTable, str]:
  """Loads one table, draws its map; returns it for export and the PNG."""
  try:
    table = commands.load_table(COMMAND, args.embeddings, name)
  except commands.CommandError as error:
    raise SystemExit(str(error)) from None
  if args.names:
    # The file's title (and genres) columns replace the export's names.
    table = dataclasses.replace(table, names=None)
  rows = table.real_rows
  vectors = table.vectors[rows]
  try:
    columns = table_columns(table, rows, ([args.names] if args.names else [])
                            + list(args.labels))
  except (OSError, ValueError) as error:
    # A --names or --labels file that is missing or malformed.
    raise SystemExit(f"embeddings {COMMAND}: {error}") from None
  colors, legend_title = map_colors(table, vectors, columns, args.color_by,
                                    args.seed)
  sample = np.arange(len(rows))
  if len(sample) > args.max_points:
    sample = np.sort(rng.choice(len(rows), args.max_points, replace=False))
  coords = maps.project_2d(vectors[sample], args.map_method, args.seed)
  png = layout.join(args.output, f"{table.name}_map.png")
  maps.plot_map(coords, [maps.first_value(colors[i]) for i in sample], png,
                title=f"{table.name}: {maps.METHOD_NAMES[args.map_method]} "
                      f"of {len(sample)} rows", legend_title=legend_title)
  return ProjectorTable(name=table.name, vectors=vectors,
                        columns=columns), png


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Entry point of `embeddings projector`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    File kind -> path written (config, and one map per table).
  """
  args = flag_parser().parse_args(argv)
  exported, written = [], {}
  rng = np.random.default_rng(args.seed)
  for name in args.table or ["movie"]:
    table, png = _projected_table(args, name, rng)
    exported.append(table)
    written[f"{table.name}_map"] = png
  written["config"] = export(args.output, exported, args.tensor_format)
  commands.summary(COMMAND, f"{len(exported)} table(s) "
                   f"({', '.join(t.name for t in exported)}) for the "
                   f"Embedding Projector and their maps "
                   f"({', '.join(written[f'{t.name}_map'] for t in exported)})"
                   f" in {args.output}; view: tensorboard --logdir "
                   f"{args.output} (PROJECTOR tab)")
  return written


if __name__ == "__main__":
  run(sys.argv[1:])
