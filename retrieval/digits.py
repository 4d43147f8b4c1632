"""The classic MNIST projector picture, from data that ships in a package.

  embeddings digits --output out/digits
  tensorboard --logdir out/digits          # PROJECTOR tab, colour by digit

scikit-learn's bundled handwritten digits (1,797 8x8 images, no download)
train a small tf_keras classifier; the activations of its penultimate layer
are the embedding, exported with the digit as label, the images as the
projector's sprite, and a 2-D map PNG coloured by digit. The report gives
the k-nearest-neighbour accuracy (cosine, held-out split) in that
embedding space next to the same kNN on raw pixels.

scikit-learn and tf_keras (with TensorFlow) are imported by the functions
that use them, so that `embeddings digits --help` answers at once.
"""

import argparse
import dataclasses
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from core import files
from core import flags
from core import layout
from retrieval import commands
from retrieval import maps
from retrieval import projector

COMMAND = "digits"

TABLE = "digits"
REPORT_FILE = "report.json"


@dataclasses.dataclass
class DigitsEmbedding:
  """The trained embedding of every digit image.

  Attributes:
    vectors: float32 [n, dim] penultimate-layer activations.
    labels: int [n] digits.
    images: float32 [n, 8, 8] in [0, 1].
    train: bool [n], True for the rows the classifier trained on.
    classifier_accuracy: the classifier's accuracy on the held-out rows.
  """
  vectors: np.ndarray
  labels: np.ndarray
  images: np.ndarray
  train: np.ndarray
  classifier_accuracy: float


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray,
                 test_x: np.ndarray, test_y: np.ndarray, k: int = 5) -> float:
  """Accuracy of a k-nearest-neighbour vote by cosine similarity.

  Args:
    train_x, train_y: the labelled reference points.
    test_x, test_y: the held-out points and their true labels.
    k: neighbours voting.

  Returns:
    Fraction of test points whose vote matches their label.
  """
  # pylint: disable-next=g-import-not-at-top
  from sklearn import neighbors  # slow to import: see the module doc
  model = neighbors.KNeighborsClassifier(n_neighbors=k, metric="cosine",
                                         algorithm="brute")
  model.fit(train_x, train_y)
  return float(np.mean(model.predict(test_x) == test_y))


def train(dimension: int = 16, epochs: int = 60, test_fraction: float = 0.3,
          seed: int = 0) -> DigitsEmbedding:
  """Trains the classifier and embeds every image.

  Args:
    dimension: width of the penultimate (embedding) layer.
    epochs: training epochs over the training split.
    test_fraction: held-out share, stratified by digit.
    seed: split, initialisation and shuffling seed.

  Returns:
    The DigitsEmbedding.
  """
  # Slow to import (TensorFlow): see the module doc.
  # pylint: disable=g-import-not-at-top
  from sklearn import datasets
  from sklearn import model_selection
  import tf_keras as keras
  # pylint: enable=g-import-not-at-top
  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  features = images.reshape(len(images), -1)
  labels = digits.target.astype(np.int64)
  rows = np.arange(len(labels))
  train_rows, test_rows = model_selection.train_test_split(
      rows, test_size=test_fraction, stratify=labels, random_state=seed)
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape=(features.shape[1],), name="pixels")
  hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
  embedding = keras.layers.Dense(dimension, activation="relu",
                                 name="embedding")(hidden)
  outputs = keras.layers.Dense(10, activation="softmax",
                               name="digit")(embedding)
  model = keras.Model(inputs, outputs)
  model.compile(optimizer=keras.optimizers.Adam(0.005),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(features[train_rows], labels[train_rows], epochs=epochs,
            batch_size=64, verbose=0, shuffle=True)
  _, accuracy = model.evaluate(features[test_rows], labels[test_rows],
                               verbose=0)
  encoder = keras.Model(inputs, embedding)
  vectors = encoder.predict(features, batch_size=512, verbose=0)
  is_train = np.zeros(len(labels), dtype=bool)
  is_train[train_rows] = True
  return DigitsEmbedding(vectors=vectors.astype(np.float32), labels=labels,
                         images=images, train=is_train,
                         classifier_accuracy=float(accuracy))


def export(result: DigitsEmbedding, output: str, k: int = 5,
           map_method: str = maps.PCA, seed: int = 0) -> Dict:
  """Writes projector files, the map PNG and report.json.

  Args:
    result: from train().
    output: the log directory.
    k: neighbours in the kNN accuracy.
    map_method: "pca" or "tsne".
    seed: map seed.

  Returns:
    The report: kNN accuracy in the embedding and on raw pixels, the
    classifier's accuracy, file paths.
  """
  files.makedirs(output)
  train_rows, test_rows = result.train, ~result.train
  pixels = result.images.reshape(len(result.images), -1)
  report = {
      "rows": int(len(result.labels)),
      "dimension": int(result.vectors.shape[1]),
      "k": k,
      "knn_accuracy": knn_accuracy(
          result.vectors[train_rows], result.labels[train_rows],
          result.vectors[test_rows], result.labels[test_rows], k),
      "knn_accuracy_raw_pixels": knn_accuracy(
          pixels[train_rows], result.labels[train_rows], pixels[test_rows],
          result.labels[test_rows], k),
      "classifier_accuracy": result.classifier_accuracy,
  }
  digits = [str(d) for d in result.labels]
  table = projector.ProjectorTable(
      name=TABLE, vectors=result.vectors,
      columns={"digit": digits,
               "split": ["train" if t else "test" for t in result.train]},
      sprite=result.images)
  report["config"] = projector.export(output, [table], projector.CHECKPOINT)
  coords = maps.project_2d(result.vectors, map_method, seed)
  report["map"] = layout.join(output, f"{TABLE}_map.png")
  maps.plot_map(coords, digits, report["map"],
                title=f"digits: {maps.METHOD_NAMES[map_method]} of the "
                      f"{result.vectors.shape[1]}-d embedding",
                legend_title="digit")
  files.write_json(layout.join(output, REPORT_FILE), report)
  return report


def flag_parser() -> argparse.ArgumentParser:
  """The `embeddings digits` flags."""
  parser = argparse.ArgumentParser(
      prog="embeddings digits",
      description="Digits classifier -> embedding -> projector + map + kNN.",
      formatter_class=flags.DefaultsHelpFormatter)
  parser.add_argument("--output", required=True,
                      help="log directory to write (tensorboard --logdir) "
                           "(required)")
  parser.add_argument("--dimension", type=int, default=16,
                      help="width of the embedding layer")
  parser.add_argument("--epochs", type=int, default=60,
                      help="training epochs")
  parser.add_argument("-k", "--neighbors", type=int, default=5,
                      help="neighbours voting in the kNN accuracy")
  parser.add_argument("--map_method", choices=maps.MAP_METHODS,
                      default=maps.TSNE, help="2-D projection of the map")
  parser.add_argument("--seed", type=int, default=0,
                      help="split, initialisation and map seed")
  return parser


def run(argv: Optional[Sequence[str]] = None) -> Dict:
  """Entry point: trains, exports and prints the report.

  Args:
    argv: command-line arguments.

  Returns:
    The report dict.
  """
  args = flag_parser().parse_args(argv)
  result = train(dimension=args.dimension, epochs=args.epochs, seed=args.seed)
  report = export(result, args.output, k=args.neighbors,
                  map_method=args.map_method, seed=args.seed)
  commands.summary(COMMAND, f"kNN accuracy {report['knn_accuracy']:.3f} in "
                   f"the {report['dimension']}-d embedding (raw pixels "
                   f"{report['knn_accuracy_raw_pixels']:.3f}); projector "
                   f"files, map and report in {args.output}; view: "
                   f"tensorboard --logdir {args.output} (PROJECTOR tab)")
  return report


if __name__ == "__main__":
  run(sys.argv[1:])
