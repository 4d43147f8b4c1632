"""`embeddings preprocess`'s typed options and the flags generated from them.

No pipeline runs here: the flags, their defaults and help, the command
lines callers already use, and the errors raised before any Beam work.
(tests/test_preprocess_pipeline.py runs the job through `preprocess`.)
"""

import dataclasses
import os

import pytest

from pipelines import options as options_lib
from pipelines import preprocess
from transforms import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("spec", "output")


def test_every_option_is_a_flag_with_help_and_its_default():
  actions = {action.dest: action
             for action in options_lib.preprocess_parser()._actions}
  for field in dataclasses.fields(preprocess.PreprocessOptions):
    help_text = field.metadata["help"]
    assert help_text, field.name
    assert actions[field.name].help.startswith(help_text), field.name
    assert actions[field.name].required == (field.name in REQUIRED)
    if field.name not in REQUIRED:
      assert field.default is not dataclasses.MISSING, field.name
  # Given only the required flags, every other option keeps its default.
  options, beam_args = preprocess.parse_args(["--spec", "s.yaml",
                                              "--output", "out"])
  assert options == preprocess.PreprocessOptions(spec="s.yaml", output="out")
  assert beam_args == []


def test_the_command_lines_in_use_parse_as_before():
  options, beam_args = preprocess.parse_args([
      "--spec", "configs/movielens100k.yaml", "--output", "gs://b/u1",
      "--env", "ML100K_DIR=/data/ml-100k", "--env", "ML100K_FOLD=u1",
      "--env", "QUERY=a=b", "--max_rejected_fraction", "0.05",
      "--num_shards", "4", "--preset", "direct_multiprocess",
      "--direct_num_workers", "2"])
  assert options == preprocess.PreprocessOptions(
      spec="configs/movielens100k.yaml", output="gs://b/u1",
      env=(("ML100K_DIR", "/data/ml-100k"), ("ML100K_FOLD", "u1"),
           ("QUERY", "a=b")),
      max_rejected_fraction=0.05, num_shards=4)
  # What the job does not know goes to Beam, in order.
  assert beam_args == ["--preset", "direct_multiprocess",
                       "--direct_num_workers", "2"]
  options, _ = preprocess.parse_args(["--spec=s.yaml", "--output=o",
                                      "--env=A=1", "--raw_eval"])
  assert options.env == (("A", "1"),) and options.raw_eval
  options, _ = preprocess.parse_args(["--spec", "s", "--output", "o",
                                      "--raw_eval", "--no-raw_eval"])
  assert not options.raw_eval


def test_missing_required_flags_are_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    preprocess.parse_args(["--output", "out"])
  assert "--spec" in capsys.readouterr().err


def test_a_bad_env_flag_is_one_line_and_status_1(tmp_path, capsys):
  with pytest.raises(spec_lib.SpecError,
                     match=r"^--env 'ML100K_DIR': expected NAME=VALUE$"):
    preprocess.parse_args(["--spec", "s", "--output", "o",
                           "--env", "ML100K_DIR"])
  output = tmp_path / "out"
  assert preprocess.main(["--spec", "s", "--output", str(output),
                          "--env", "ML100K_DIR"]) == 1
  assert capsys.readouterr().err.splitlines() == [
      "embeddings preprocess: error: --env 'ML100K_DIR': expected "
      "NAME=VALUE"]
  assert not os.listdir(tmp_path)


def test_max_rejected_fraction_is_checked_before_any_work(tmp_path):
  options = preprocess.PreprocessOptions(
      spec=os.path.join(REPO, "configs", "synthetic.yaml"),
      output=str(tmp_path / "out"), env=(("DATA_DIR", str(tmp_path)),),
      max_rejected_fraction=1.5)
  with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 1.5"):
    preprocess.preprocess(options)
  assert not os.listdir(tmp_path)
