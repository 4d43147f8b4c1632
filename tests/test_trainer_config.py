"""TrainerConfig (trainer/config.py): generated flags, merging, dimensions.

Flags come from the config's fields; these tests pin what the command line
keeps: every field has a flag with help text, the flags the trainer always
had parse as they did, and an unset flag never hides the spec's `model:`
section. The dimension methods are checked against transforms/dims.py's
rule on hand-written feature infos.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import types

import pytest
import yaml

from test_trainer_units import TINY_SPEC
from trainer import config as config_lib
from trainer import task
from workflows import tune_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ["--spec", "SPEC", "--preprocessed", "pre", "--model_dir", "model"]


def _spec_file(tmp_path, model):
  path = tmp_path / "tiny.yaml"
  path.write_text(yaml.safe_dump(dict(TINY_SPEC, model=model)))
  return str(path)


def _config(spec_path, *argv):
  args = task.flag_parser().parse_args(
      [a.replace("SPEC", spec_path) for a in PATHS + list(argv)])
  return task.config_from_args(args)


def _parser():
  parser = argparse.ArgumentParser()
  config_lib.add_flags(parser)
  return parser


def test_every_field_has_a_flag_with_help_text():
  # pylint: disable-next=protected-access
  actions = {action.dest: action for action in _parser()._actions}
  for field in dataclasses.fields(config_lib.TrainerConfig):
    assert field.name in actions, field.name
    assert len(field.metadata["help"]) > 10, field.name
    assert actions[field.name].help.startswith(field.metadata["help"])
  assert actions["spec_path"].option_strings == ["--spec"]
  assert actions["preprocessed_dir"].option_strings == ["--preprocessed"]
  assert actions["spec_env"].option_strings == ["--env"]
  assert actions["model_type"].choices == list(config_lib.MODEL_TYPES)
  assert actions["verbose"].choices == [0, 1, 2]
  # `embeddings` keeps --verbose for itself (quiet output).
  assert actions["verbose"].option_strings == ["--keras_verbose"]
  parser = task.flag_parser()
  # pylint: disable-next=protected-access
  assert "--verbose" not in parser._option_string_actions


def test_train_help_shows_each_default():
  text = " ".join(task.flag_parser().format_help().split())
  assert "--epochs EPOCHS training epochs (default: 10)" in text
  assert "dnn hidden layer widths (default: 64,32)" in text
  assert "--shuffle, --no-shuffle" in text and "(default: on)" in text
  assert "--eval_split EVAL_SPLIT the split evaluated after training " \
         "(default: eval)" in text


def test_the_model_fields_are_the_ones_marked_settable_by_the_spec():
  assert config_lib.MODEL_FIELDS[:3] == ("model_type", "task",
                                         "user_feature")
  assert {"hidden_units", "embedding_dims", "mf_dim", "learning_rate",
          "clip_predictions"} <= set(config_lib.MODEL_FIELDS)
  # Paths and run-time options come only from flags.
  assert not {"model_dir", "spec_path", "strategy", "export", "verbose",
              "input_mode"} & set(config_lib.MODEL_FIELDS)


def test_flags_not_given_leave_the_spec_model_section(tmp_path):
  path = _spec_file(tmp_path, {"user_feature": "user", "item_feature": "movie",
                               "hidden_units": [16, 8], "epochs": 3,
                               "shuffle": False, "embedding_dims":
                               {"genres": 2}})
  config = _config(path, "--env", "DATA=/data")
  assert config.hidden_units == (16, 8)
  assert config.epochs == 3 and config.shuffle is False
  assert config.embedding_dims == (("genres", 2),)
  assert config.batch_size == 256  # neither the spec nor a flag: default
  flagged = _config(path, "--env", "DATA=/data", "--epochs", "5",
                    "--shuffle", "--hidden_units", "4")
  assert (flagged.epochs, flagged.shuffle, flagged.hidden_units) == (
      5, True, (4,))


def test_the_trainer_flags_parse_to_the_config_they_always_did(tmp_path):
  path = _spec_file(tmp_path, {"user_feature": "user", "item_feature": "movie"})
  config = _config(
      path, "--env", "DATA=/a", "--env", "OTHER=b=c", "--model_type", "dnn",
      "--hybrid", "--hidden_units", "64, 32", "--features", "user,movie,age",
      "--item_side_features", "genres", "--embedding_dims", "user=8,movie=6",
      "--mf_dim", "5", "--no-shuffle", "--no-export",
      "--no-clip_predictions", "--keras_verbose", "2", "--learning_rate", "0.01",
      "--batch_size", "64", "--strategy", "default", "--input_mode", "numpy",
      "--task", "regression", "--eval_split", "eval_raw")
  expected = config_lib.TrainerConfig(
      preprocessed_dir="pre", model_dir="model", spec_path=path,
      spec_env=(("DATA", "/a"), ("OTHER", "b=c")), model_type="dnn",
      hybrid=True, hidden_units=(64, 32), features=("user", "movie", "age"),
      item_side_features=("genres",),
      embedding_dims=(("user", 8), ("movie", 6)), mf_dim=5, shuffle=False,
      export=False, clip_predictions=False, verbose=2, learning_rate=0.01,
      batch_size=64, strategy="default", input_mode="numpy",
      task="regression", eval_split="eval_raw", user_feature="user",
      item_feature="movie")
  assert config == expected
  assert _config(path, "--env", "DATA=/a", "--model_type", "dnn",
                 "--no-hybrid").hybrid is False


def test_config_from_args_ignores_a_callers_own_flags(tmp_path):
  path = _spec_file(tmp_path, {"user_feature": "user", "item_feature": "movie"})
  parser = task.flag_parser()
  parser.add_argument("--trials", type=int, default=20)
  args = parser.parse_args(PATHS[2:] + ["--spec", path, "--env", "DATA=/d",
                                        "--trials", "3", "--epochs", "2"])
  config = task.config_from_args(args)
  assert config.epochs == 2 and config.spec_env == (("DATA", "/d"),)


def test_a_flag_that_does_not_convert_names_itself(tmp_path):
  path = _spec_file(tmp_path, {"user_feature": "user", "item_feature": "movie"})
  with pytest.raises(config_lib.ConfigError, match="--hidden_units"):
    _config(path, "--hidden_units", "32,x")
  with pytest.raises(config_lib.ConfigError, match="--embedding_dims"):
    _config(path, "--embedding_dims", "user")
  with pytest.raises(config_lib.ConfigError, match="--env"):
    _config(path, "--env", "NOEQUALS")


def test_the_spec_may_not_set_a_run_time_option(tmp_path):
  path = _spec_file(tmp_path, {"user_feature": "user", "item_feature": "movie",
                               "strategy": "mirrored"})
  with pytest.raises(config_lib.ConfigError,
                     match=r"unknown field\(s\) \['strategy'\]"):
    _config(path)


def test_config_module_loads_without_tensorflow():
  code = ("import sys; import trainer.config; "
          "sys.exit('tensorflow' in sys.modules)")
  assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def _infos(**dims):
  return {name: types.SimpleNamespace(embedding_dim=dim)
          for name, dim in dims.items()}


INFOS = _infos(user=5, movie=7, genres=3, occupation=4)
TABLES = ("user", "movie", "genres", "occupation")


def _plain(**fields):
  fields = {"user_feature": "user", "item_feature": "movie", **fields}
  return config_lib.TrainerConfig(preprocessed_dir="p", model_dir="m",
                                  spec_path="s", **fields)


def test_dot_product_tables_share_one_dimension():
  mf = _plain(item_side_features=("genres",))
  assert mf.tied_tables() == ("user", "movie", "genres")
  # The larger of the user and item tables' dimensions, for every tied one.
  assert mf.table_dims(INFOS, TABLES) == {"user": 7, "movie": 7, "genres": 7,
                                          "occupation": 4}
  assert _plain(mf_dim=2, item_side_features=("genres",)).table_dims(
      INFOS, TABLES) == {"user": 2, "movie": 2, "genres": 2, "occupation": 4}
  overridden = _plain(embedding_dims=(("user", 9), ("occupation", 1)))
  assert overridden.table_dims(INFOS, TABLES) == {
      "user": 9, "movie": 9, "genres": 3, "occupation": 1}


def test_a_dnn_without_the_dot_product_ties_nothing():
  dnn = _plain(model_type="dnn", embedding_dims=(("genres", 2),))
  assert dnn.tied_tables() == ()
  assert dnn.table_dims(INFOS, TABLES) == {"user": 5, "movie": 7, "genres": 2,
                                           "occupation": 4}
  hybrid = dataclasses.replace(dnn, hybrid=True)
  assert hybrid.tied_tables() == ("user", "movie")
  assert hybrid.table_dims(INFOS, ["user", "movie"]) == {"user": 7,
                                                         "movie": 7}


def test_pinned_dimensions_come_back_from_table_dims():
  hybrid = _plain(model_type="dnn", hybrid=True,
                  user_side_features=("occupation",),
                  embedding_dims=(("genres", 5),))
  pinned = {"user": 4, "movie": 4, "occupation": 4, "genres": 6}
  config = hybrid.with_table_dims(pinned)
  assert config.mf_dim == 4
  assert config.embedding_dims == (("genres", 6),)
  assert config.table_dims(INFOS, TABLES) == pinned
  # A config's own dimensions, pinned, are a fixed point.
  mf = _plain()
  assert mf.with_table_dims(mf.table_dims(INFOS, TABLES)).table_dims(
      INFOS, TABLES) == mf.table_dims(INFOS, TABLES)


def test_tied_tables_pinned_to_different_dimensions_are_refused():
  with pytest.raises(ValueError, match="share one dimension"):
    _plain().with_table_dims({"user": 4, "movie": 6})
  # Untied in a dnn: each keeps its own.
  dnn = _plain(model_type="dnn").with_table_dims({"user": 4, "movie": 6})
  assert dnn.table_dims(INFOS, ["user", "movie"]) == {"user": 4, "movie": 6}
  assert dnn.mf_dim is None


def test_train_and_tune_flags_build_without_tensorflow():
  code = ("import sys; from trainer import config; "
          "from workflows import tune_options; "
          "config.flag_parser(); tune_options.flag_parser(); "
          "heavy = {'tensorflow', 'tf_keras', 'tensorflow_transform', "
          "'apache_beam', 'optuna'} & set(sys.modules); "
          "sys.exit(str(sorted(heavy)) if heavy else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert task.flag_parser is config_lib.flag_parser


def test_every_tune_flag_has_help_and_tune_states_its_own_default():
  parser = tune_options.flag_parser()
  assert parser.prog == "embeddings tune"
  for action in parser._actions:  # pylint: disable=protected-access
    assert action.help and len(action.help) > 10, action.dest
  text = " ".join(parser.format_help().split())
  assert "(default: 0.1; 0 is refused" in text
