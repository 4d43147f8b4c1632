"""`embeddings projector`: TensorBoard Embedding Projector files and a 2-D map.

  embeddings projector --embeddings out/run/embeddings --table movie \\
      --names data/items.csv --labels data/truth/item_clusters.csv \\
      --output out/run/projector
  tensorboard --logdir out/run/projector     # then the PROJECTOR tab

writes into the output directory (a TensorBoard log directory):

  embeddings.ckpt-1.*, checkpoint   the tables as variables of a TF2
      checkpoint, tensor `<table>/.ATTRIBUTES/VARIABLE_VALUE`
      (or `<table>_tensor.tsv` with --tensor_format tsv, the file
      projector.tensorflow.org also accepts)
  <table>_metadata.tsv   one line per row; a header naming the columns when
      there are several (token, label, title, genres, cluster, ...), as the
      projector expects
  projector_config.pbtxt   written with tensorboard.plugins.projector
  <table>_map.png   a 2-D PCA (or t-SNE) map coloured by a label column
      (retrieval/maps.py)

Only real rows are exported (no OOV buckets). Extra label columns come from
id -> attribute files: --names (u.item, items.csv) and --labels (e.g. the
generator's truth/item_clusters.csv); rows without an entry get "", and a
file that names none of a table's rows adds no columns to it, so item and
user files can be passed together for several tables.
"""

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from matplotlib import image as image_lib
import numpy as np
import tensorflow as tf

from core import artifacts
from retrieval import catalog
from retrieval import commands
from retrieval import maps

COMMAND = "projector"

CHECKPOINT = "checkpoint"
TSV = "tsv"
TENSOR_FORMATS = (CHECKPOINT, TSV)
CHECKPOINT_PREFIX = "embeddings.ckpt"


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
                 tensor_format: str) -> Optional[tf.Variable]:
  """Writes one table's files and describes them in its config entry.

  Args:
    logdir: the log directory.
    table: the table.
    embedding: the table's ProjectorConfig.embeddings entry, filled here.
    tensor_format: CHECKPOINT or TSV.

  Returns:
    The table as a variable for the shared checkpoint (CHECKPOINT), else
    None (its vectors went to a TSV).

  Raises:
    ValueError: a column does not match the rows.
  """
  vectors = np.asarray(table.vectors, dtype=np.float32)
  for column, values in table.columns.items():
    if len(values) != vectors.shape[0]:
      raise ValueError(f"table {table.name!r}: column {column!r} has "
                       f"{len(values)} values for {vectors.shape[0]} rows")
  variable = None
  if tensor_format == CHECKPOINT:
    variable = tf.Variable(vectors, name=table.name)
    embedding.tensor_name = tensor_name(table.name)
  else:
    tensor_file = f"{table.name}_tensor.tsv"
    with tf.io.gfile.GFile(os.path.join(logdir, tensor_file), "w") as f:
      f.write("".join("\t".join(f"{x:.9g}" for x in row) + "\n"
                      for row in vectors))
    embedding.tensor_name = table.name
    embedding.tensor_path = tensor_file
  if table.columns:
    metadata_file = f"{table.name}_metadata.tsv"
    with tf.io.gfile.GFile(os.path.join(logdir, metadata_file), "w") as f:
      f.write(metadata_tsv(table.columns))
    embedding.metadata_path = metadata_file
  if table.sprite is not None:
    sprite_file = f"{table.name}_sprite.png"
    sheet = _sprite_image(np.asarray(table.sprite, dtype=np.float32))
    image_lib.imsave(os.path.join(logdir, sprite_file), sheet,
                     cmap="gray_r" if sheet.ndim == 2 else None, vmin=0,
                     vmax=1)
    embedding.sprite.image_path = sprite_file
    embedding.sprite.single_image_dim.extend(
        [int(table.sprite.shape[2]), int(table.sprite.shape[1])])
  return variable


def export(logdir: str, tables: Sequence[ProjectorTable],
           tensor_format: str = CHECKPOINT) -> str:
  """Writes the projector files for some tables into a log directory.

  Args:
    logdir: the directory TensorBoard's --logdir will point at.
    tables: the tables with their metadata columns.
    tensor_format: "checkpoint" (a TF2 checkpoint of all tables) or "tsv"
      (one tensor TSV per table).

  Returns:
    The path of projector_config.pbtxt.

  Raises:
    ValueError: an unknown format, duplicate names, or columns that do not
      match the rows.
  """
  # tensorboard is optional (TensorFlow does not install it): only writing
  # the projector config needs it, and the module imports without it.
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.plugins import projector
  if tensor_format not in TENSOR_FORMATS:
    raise ValueError(f"tensor_format must be one of {TENSOR_FORMATS}, got "
                     f"{tensor_format!r}")
  names = [table.name for table in tables]
  if len(set(names)) != len(names) or not names:
    raise ValueError(f"table names must be unique and non-empty: {names}")
  tf.io.gfile.makedirs(logdir)
  config = projector.ProjectorConfig()
  variables = {}
  for table in tables:
    variable = _write_table(logdir, table, config.embeddings.add(),
                            tensor_format)
    if variable is not None:
      variables[table.name] = variable
  if variables:
    checkpoint = tf.train.Checkpoint(**variables)
    checkpoint.save(os.path.join(logdir, CHECKPOINT_PREFIX))
  projector.visualize_embeddings(logdir, config)
  return os.path.join(logdir, "projector_config.pbtxt")


def table_columns(table: artifacts.EmbeddingTable, rows: Sequence[int],
                  attribute_files: Sequence[str]) -> Dict[str, List[str]]:
  """Metadata columns for some rows of a table: token, label, attributes.

  Args:
    table: the table.
    rows: the rows exported.
    attribute_files: id -> attributes files (catalog.read_attributes).

  Returns:
    Column name -> values. "label" is included when it differs from the
    token somewhere; attribute columns only when they name some row.
  """
  tokens = [table.tokens[r] for r in rows]
  columns: Dict[str, List[str]] = {"token": tokens}
  labels = [table.labels[r] for r in rows]
  if labels != tokens:
    columns["label"] = labels
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


def _default_color(columns: Mapping[str, Sequence[str]]) -> str:
  for name in ("cluster", "genres", "label", "digit"):
    if name in columns:
      return name
  return "token"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="embeddings projector",
      description="TensorBoard Embedding Projector files and a 2-D map PNG.")
  commands.add_embeddings_flag(parser, table_directory=False)
  parser.add_argument("--table", action="append", default=None,
                      help="feature to export (repeatable; default movie)")
  parser.add_argument("--output", required=True,
                      help="log directory to write (tensorboard --logdir)")
  commands.add_names_flag(parser)
  parser.add_argument("--labels", action="append", default=[],
                      help="more id -> label files, e.g. truth/"
                           "item_clusters.csv (repeatable)")
  parser.add_argument("--color_by", default=None,
                      help="metadata column colouring the map (default: "
                           "cluster, genres or label when present); a "
                           "multi-valued cell uses its first value")
  parser.add_argument("--map_method", choices=maps.MAP_METHODS,
                      default=maps.PCA)
  parser.add_argument("--max_points", type=int, default=20000,
                      help="points drawn on the map (a seeded sample)")
  parser.add_argument("--tensor_format", choices=TENSOR_FORMATS,
                      default=CHECKPOINT)
  parser.add_argument("--seed", type=int, default=0)
  return parser


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, str]:
  """Entry point of `embeddings projector`.

  Args:
    argv: command-line arguments (without the subcommand).

  Returns:
    File kind -> path written (config, and one map per table).
  """
  args = _parser().parse_args(argv)
  attribute_files = ([args.names] if args.names else []) + list(args.labels)
  exported, written = [], {}
  rng = np.random.default_rng(args.seed)
  for name in args.table or ["movie"]:
    try:
      table = commands.load_table(COMMAND, args.embeddings, name)
    except commands.CommandError as error:
      raise SystemExit(str(error)) from None
    rows = table.real_rows
    columns = table_columns(table, rows, attribute_files)
    exported.append(ProjectorTable(name=table.name,
                                   vectors=table.vectors[rows],
                                   columns=columns))
    color = args.color_by or _default_color(columns)
    if color not in columns:
      raise SystemExit(f"embeddings {COMMAND}: --color_by {color!r} is not "
                       f"a metadata column of {table.name!r}: "
                       f"{list(columns)}")
    sample = np.arange(len(rows))
    if len(sample) > args.max_points:
      sample = np.sort(rng.choice(len(rows), args.max_points, replace=False))
    coords = maps.project_2d(table.vectors[rows][sample], args.map_method,
                        args.seed)
    png = os.path.join(args.output, f"{table.name}_map.png")
    tf.io.gfile.makedirs(args.output)
    maps.plot_map(coords, [maps.first_value(columns[color][i])
                           for i in sample], png,
                  title=f"{table.name}: "
                        f"{maps.METHOD_NAMES[args.map_method]} of "
                        f"{len(sample)} rows", legend_title=color)
    written[f"{table.name}_map"] = png
  written["config"] = export(args.output, exported, args.tensor_format)
  for kind, path in written.items():
    print(f"{kind}: {path}")
  print(f"view: tensorboard --logdir {args.output}  (PROJECTOR tab)")
  return written


if __name__ == "__main__":
  run(sys.argv[1:])
