"""2-D maps of an embedding table: PCA or t-SNE coordinates, a coloured PNG.

`project_2d` places the L2-normalised rows in the plane (so the map shows the
same cosine geometry `embeddings neighbors` searches) and `plot_map` draws
them coloured by a label column, the most frequent labels in their own
colour and the rest grey. `embeddings projector` and the digits demo draw
their maps with these.
"""

import collections
import io
from typing import Dict, Sequence

import numpy as np

from core import files
from retrieval import index as index_lib

PCA = "pca"
TSNE = "tsne"
MAP_METHODS = (PCA, TSNE)
METHOD_NAMES = {PCA: "PCA", TSNE: "t-SNE"}
# Colours for the most frequent labels; the rest are drawn grey as "other",
# so the palette has no grey of its own (tab10's grey would look like it).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#bcbd22", "#17becf", "#000080", "#808000", "#ff1493")
MAX_LEGEND = len(PALETTE)


def project_2d(vectors: np.ndarray, method: str = PCA,
               seed: int = 0) -> np.ndarray:
  """2-D coordinates of the (L2-normalised) rows.

  Args:
    vectors: [n, d].
    method: "pca" or "tsne".
    seed: random seed (t-SNE, randomized PCA).

  Returns:
    float32 [n, 2].
  """
  # scikit-learn (and matplotlib, in plot_map) take about a second each to
  # import; imported where they are used, the commands' --help does not wait
  # for them.
  # pylint: disable=g-import-not-at-top
  from sklearn import decomposition
  from sklearn import manifold
  # pylint: enable=g-import-not-at-top
  data = index_lib.normalize(vectors)
  if data.shape[1] < 2:
    return np.pad(data, ((0, 0), (0, 2 - data.shape[1])))
  if method == TSNE:
    perplexity = float(min(30, max(2, (len(data) - 1) // 3)))
    coords = manifold.TSNE(n_components=2, init="pca", random_state=seed,
                           perplexity=perplexity).fit_transform(data)
  elif method == PCA:
    coords = decomposition.PCA(n_components=2,
                               random_state=seed).fit_transform(data)
  else:
    raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
  return coords.astype(np.float32)


def plot_map(coords: np.ndarray, labels: Sequence[str], path: str,
             title: str = "", legend_title: str = "") -> Dict[str, int]:
  """Draws a 2-D scatter map coloured by label into a PNG.

  Args:
    coords: [n, 2] positions.
    labels: one label per point; the MAX_LEGEND most frequent get colours,
      the rest are grey "other".
    path: the PNG to write (local, gs://, ...).
    title: plot title.
    legend_title: the legend's heading (the label column).

  Returns:
    Label -> points drawn in its colour (plus "other" when used).
  """
  # pylint: disable-next=g-import-not-at-top
  from matplotlib import figure as figure_lib  # slow: see project_2d
  labels = [str(label) for label in labels]
  if len(labels) != len(coords):
    raise ValueError(f"{len(labels)} labels for {len(coords)} points")
  counts = collections.Counter(labels)
  shown = [label for label, _ in counts.most_common(MAX_LEGEND)]
  if len(shown) == len(counts):
    shown.sort(key=_natural_key)
  # A Figure without pyplot: no global backend or figure registry to set up
  # or close, and it renders to PNG through Agg on any machine.
  figure = figure_lib.Figure(figsize=(8, 8), dpi=100)
  axes = figure.subplots()
  drawn = {}
  size = max(2.0, min(30.0, 20000.0 / max(1, len(coords))))
  others = np.array([label not in shown for label in labels])
  if others.any():
    axes.scatter(coords[others, 0], coords[others, 1], s=size, c="#c8c8c8",
                 label=f"other ({int(others.sum())})", linewidths=0)
    drawn["other"] = int(others.sum())
  for i, label in enumerate(shown):
    mask = np.array([value == label for value in labels])
    axes.scatter(coords[mask, 0], coords[mask, 1], s=size,
                 color=PALETTE[i], label=f"{label} ({counts[label]})",
                 linewidths=0, alpha=0.85)
    drawn[label] = int(mask.sum())
  axes.set_title(title)
  axes.set_xticks([])
  axes.set_yticks([])
  axes.legend(title=legend_title or None, loc="best", fontsize="small",
              markerscale=max(1.0, 6.0 / size ** 0.5), framealpha=0.8)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  files.write_bytes(path, buffer.getvalue())
  return drawn


def _natural_key(label: str):
  """Sorts "2" before "10" and numbers before words."""
  try:
    return (0, float(label), label)
  except ValueError:
    return (1, 0.0, label)


def first_value(value: str, separator: str = "|") -> str:
  """The first of a multi-valued cell.

  Args:
    value: a cell, e.g. "Action|Comedy".
    separator: what separates the values.

  Returns:
    The first value ("Action"), or "" for an empty cell.
  """
  return str(value).split(separator)[0] if value else ""
