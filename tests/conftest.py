"""Session-wide fixtures: expensive runs shared by every test file.

* `ml100k_dir`: the MovieLens 100K folder (ML100K_DIR, default
  ../shared/data/ml-100k beside the repository); tests that need it skip
  with the reason when it is absent.
* `ml100k_preprocessed`: the u1 fold of configs/movielens100k.yaml through
  `embeddings preprocess`, once per session.
* `synthetic_data` / `synthetic_preprocessed`: a small generated dataset
  (`embeddings generate`) and its preprocessed output, once per session.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ML100K_SPEC = os.path.join(REPO, "configs", "movielens100k.yaml")
SYNTHETIC_SPEC = os.path.join(REPO, "configs", "synthetic.yaml")
SYNTHETIC_ROWS = 20000
SYNTHETIC_SEED = 3


@pytest.fixture(scope="session")
def ml100k_dir() -> str:
  """The MovieLens 100K folder; skips when it is not there."""
  path = os.environ.get("ML100K_DIR") or os.path.join(
      REPO, os.pardir, "shared", "data", "ml-100k")
  path = os.path.abspath(path)
  needed = ("u.user", "u.item", "u1.base", "u1.test")
  missing = [name for name in needed
             if not os.path.exists(os.path.join(path, name))]
  if missing:
    pytest.skip(f"MovieLens 100K is not at {path} (missing {missing}); set "
                f"ML100K_DIR to the folder holding u.data, u.user, u.item")
  return path


@pytest.fixture(scope="session")
def ml100k_preprocessed(ml100k_dir, tmp_path_factory) -> str:
  """configs/movielens100k.yaml, fold u1, preprocessed once per session."""
  from pipelines import preprocess  # pylint: disable=g-import-not-at-top
  output = str(tmp_path_factory.mktemp("ml100k") / "preprocessed")
  preprocess.run(["--spec", ML100K_SPEC, "--output", output,
                  "--env", f"ML100K_DIR={ml100k_dir}",
                  "--env", "ML100K_FOLD=u1"])
  return output


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> str:
  """A generated dataset of SYNTHETIC_ROWS ratings (seed SYNTHETIC_SEED)."""
  from pipelines import generate  # pylint: disable=g-import-not-at-top
  output = str(tmp_path_factory.mktemp("synthetic") / "data")
  generate.run(["--output", output, "--rows", str(SYNTHETIC_ROWS),
                "--seed", str(SYNTHETIC_SEED)])
  return output


@pytest.fixture(scope="session")
def synthetic_preprocessed(synthetic_data, tmp_path_factory) -> str:
  """configs/synthetic.yaml over `synthetic_data`, preprocessed once."""
  from pipelines import preprocess  # pylint: disable=g-import-not-at-top
  output = str(tmp_path_factory.mktemp("synthetic_pp") / "preprocessed")
  preprocess.run(["--spec", SYNTHETIC_SPEC, "--output", output,
                  "--env", f"DATA_DIR={synthetic_data}"])
  return output


# ---------------------------------------------------------------------------
# Trainer fixtures: one trained model shared by the trainer tests.
# ---------------------------------------------------------------------------

TRAINED_ML100K_FLAGS = (
    "--model_type", "dnn", "--hybrid", "--mf_dim", "32",
    "--hidden_units", "32", "--l2_user", "0.1", "--l2_item", "0.1",
    "--l2_embedding", "0.01", "--epochs", "3", "--batch_size", "256",
    "--seed", "1", "--keras_verbose", "0")


@pytest.fixture(scope="session")
def trained_ml100k(ml100k_preprocessed, ml100k_dir, tmp_path_factory):
  """A dnn (every side feature + the MF term) trained on u1, exported.

  Returns trainer.task.TrainResult (model, report, strategy, config).
  """
  from trainer import task  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path_factory.mktemp("trained_ml100k") / "model")
  args = task.flag_parser().parse_args(
      ["--spec", ML100K_SPEC, "--preprocessed", ml100k_preprocessed,
       "--model_dir", model_dir, "--env", f"ML100K_DIR={ml100k_dir}",
       *TRAINED_ML100K_FLAGS])
  return task.train(task.config_from_args(args))
