"""The ground floor (core/): path joining, run layouts, generated flags."""

import argparse
import dataclasses
import os
from typing import Optional, Tuple

import pytest

from core import files
from core import flags
from core import layout


def test_join_spells_local_and_object_store_paths():
  assert layout.join("out", "a", "b.txt") == os.path.join("out", "a", "b.txt")
  assert layout.join("gs://bucket/run", "train", "part") == (
      "gs://bucket/run/train/part")
  assert layout.split("gs://bucket/run/") == ("gs://bucket", "run")
  parent, name = layout.split("out/run")
  assert name == "run" and parent == os.path.abspath("out")


def test_json_files_round_trip_and_missing_is_none(tmp_path):
  path = str(tmp_path / "deep" / "report.json")
  assert files.read_json(path) is None
  files.write_json(path, {"a": 1, "when": (2024, 1)})
  assert files.read_json(path) == {"a": 1, "when": [2024, 1]}
  files.write_json_atomic(path, {"b": 2})
  assert files.read_json(path) == {"b": 2}
  assert os.listdir(tmp_path / "deep") == ["report.json"]
  files.remove_tree(str(tmp_path / "deep"))
  assert not (tmp_path / "deep").exists()


def test_local_files_go_through_the_standard_library(tmp_path):
  root = str(tmp_path / "a")
  files.write_text(layout.join(root, "b", "x.txt"), "héllo\nworld\n")
  files.write_bytes(layout.join(root, "y.bin"), b"\x00\x01")
  assert files.read_text(layout.join(root, "b", "x.txt")) == "héllo\nworld\n"
  assert files.read_bytes(layout.join(root, "y.bin")) == b"\x00\x01"
  with files.open_text(layout.join(root, "b", "x.txt")) as handle:
    assert handle.readline() == "héllo\n"
  assert files.listdir(root) == ["b", "y.bin"]
  assert files.glob(layout.join(root, "*", "*.txt")) == [
      layout.join(root, "b", "x.txt")]
  assert files.isdir(root) and not files.isdir(layout.join(root, "y.bin"))
  assert files.exists(layout.join(root, "y.bin"))
  files.remove_tree(layout.join(root, "y.bin"))
  files.remove_tree(root)
  assert not files.exists(root)
  files.remove_tree(root)  # Nothing there: nothing to do.


def test_layouts_name_every_file_of_a_run():
  pre = layout.PreprocessedLayout("gs://b/pre")
  assert pre.success == "gs://b/pre/_SUCCESS"
  assert pre.report == "gs://b/pre/run_report.json"
  assert pre.feature_info == "gs://b/pre/feature_info.json"
  assert pre.vocabulary_assets == "gs://b/pre/transform_fn/assets"
  assert pre.shard_prefix(layout.TRAIN) == "gs://b/pre/train/part"
  assert pre.shard_pattern(layout.EVAL) == (
      "gs://b/pre/eval/part-*.tfrecord.gz")
  assert pre.dead_letter_prefix == "gs://b/pre/dead_letter/part"
  model = layout.ModelLayout("m")
  assert (model.report, model.backup, model.logs, model.saved_model) == (
      os.path.join("m", "report.json"), os.path.join("m", "backup"),
      os.path.join("m", "logs"), os.path.join("m", "export"))
  assert model.worker("worker", 1).root == os.path.join("m", "workers",
                                                        "worker_1")
  export = layout.ExportLayout("e")
  assert export.table("movie").metadata == os.path.join("e", "movie",
                                                        "metadata.json")
  assert export.bias("movie").root == os.path.join("e", "bias_movie")
  assert layout.TuneLayout("t").trial(7).root == os.path.join("t",
                                                              "trial_007")
  registry = layout.RegistryLayout("r")
  assert registry.model("2024-01-07").root == os.path.join(
      "r", "versions", "2024-01-07", "model")
  assert registry.marker("2024-01-07") == os.path.join("r", "runs",
                                                       "2024-01-07.json")
  assert layout.FoldsLayout("w").preprocessed("u1").root == os.path.join(
      "w", "u1", "preprocessed")


@dataclasses.dataclass(frozen=True)
class _Options:
  spec: str = flags.option(help="the spec")
  rows: int = flags.option(10, help="rows to read")
  rate: Optional[float] = flags.option(None, help="a rate")
  shuffle: bool = flags.option(True, help="shuffle")
  names: Tuple[str, ...] = flags.option((), help="names")
  widths: Tuple[int, ...] = flags.option((64, 32), help="widths")
  dims: Tuple[Tuple[str, int], ...] = flags.option((), help="dims")
  env: Tuple[Tuple[str, str], ...] = flags.option(
      (), help="variables", repeat=True, metavar="NAME=VALUE")
  top_k: int = flags.option(10, help="how many", short="k", flag="top_k")
  mode: str = flags.option("a", help="mode", choices=("a", "b"))
  internal: int = flags.option(0, help="set by the program", hidden=True)


def _parser(unset=False):
  parser = argparse.ArgumentParser(prog="test")
  flags.add_flags(parser, _Options, unset_defaults=unset)
  return parser


def test_generated_flags_parse_into_typed_values():
  args = _parser().parse_args([
      "--spec", "s.yaml", "--rows", "5", "--no-shuffle", "--names", "a, b",
      "--widths", "8,4", "--dims", "user=8,movie=6", "--env", "A=1",
      "--env", "B=x=y", "-k", "3"])
  values = flags.values_from_args(_Options, args)
  assert _Options(**values) == _Options(
      spec="s.yaml", rows=5, shuffle=False, names=("a", "b"), widths=(8, 4),
      dims=(("user", 8), ("movie", 6)), env=(("A", "1"), ("B", "x=y")),
      top_k=3)
  defaults = _Options(**flags.values_from_args(
      _Options, _parser().parse_args(["--spec", "s"])))
  assert defaults == _Options(spec="s")


def test_unset_defaults_return_only_the_flags_given():
  args = _parser(unset=True).parse_args(["--spec", "s", "--rows", "7"])
  assert flags.values_from_args(_Options, args) == {"spec": "s", "rows": 7}


def test_every_flag_has_help_with_its_default(capsys):
  with pytest.raises(SystemExit):
    _parser().parse_args(["--help"])
  shown = " ".join(capsys.readouterr().out.split())
  assert "--rows ROWS rows to read (default: 10)" in shown
  assert "--widths WIDTHS widths (default: 64,32)" in shown
  assert "--shuffle, --no-shuffle shuffle (default: on)" in shown
  assert "{a,b} mode (default: a)" in shown
  assert "--internal" not in shown
  with pytest.raises(SystemExit):
    _parser().parse_args([])  # --spec is required


def test_bad_flag_values_name_the_flag():
  args = _parser().parse_args(["--spec", "s", "--dims", "user"])
  with pytest.raises(ValueError, match="--dims: expected key=value"):
    flags.values_from_args(_Options, args)


class _Refused(ValueError):
  pass


def _refuse(text):
  raise _Refused(f"cannot use {text!r}")


@dataclasses.dataclass(frozen=True)
class _Parsed:
  words: Tuple[str, ...] = flags.option((), help="words", parse=_refuse)


def test_parse_errors_keep_their_type_and_defaults_are_not_parsed():
  parser = argparse.ArgumentParser()
  flags.add_flags(parser, _Parsed)
  assert flags.values_from_args(_Parsed, parser.parse_args([])) == {
      "words": ()}
  with pytest.raises(_Refused, match="--words: cannot use 'a b'"):
    flags.values_from_args(_Parsed, parser.parse_args(["--words", "a b"]))
