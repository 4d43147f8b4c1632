"""What the retrieval subcommands share: flags, table loading, output lines."""

import argparse

import numpy as np
import pytest

from core import artifacts
from retrieval import commands


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """An export holding one small movie table, and an items.csv."""
  root = tmp_path_factory.mktemp("commands")
  artifacts.EmbeddingTable(
      "movie", np.eye(3, dtype=np.float32), ["m1", "m2", "[OOV_0]"],
      {"vocabulary_size": 2, "num_oov_buckets": 1}).save(
          str(root / "export" / "movie"))
  names = root / "items.csv"
  names.write_text("item_id,title\nm1,Heat (1995)\nm2,Babe (1995)\n")
  return str(root / "export"), str(names)


def test_load_table_by_export_and_by_table_directory(export):
  directory, _ = export
  table = commands.load_table("neighbors", directory, "movie")
  assert table.tokens == ["m1", "m2", "[OOV_0]"]
  own = commands.load_table("neighbors", f"{directory}/movie", None)
  np.testing.assert_array_equal(own.vectors, table.vectors)


def test_missing_table_is_one_line_naming_the_tables_there(export, capsys):
  directory, _ = export
  with pytest.raises(commands.CommandError) as raised:
    commands.load_table("cluster", directory, "film")
  assert raised.value.status == commands.MISSING_TABLE
  assert str(raised.value).startswith("embeddings cluster: no embedding "
                                      "table 'film'")
  assert "tables there: movie" in str(raised.value)
  assert commands.report(raised.value) == commands.MISSING_TABLE
  assert capsys.readouterr().err == f"{raised.value}\n"


def test_read_names_gives_titles_or_nothing(export):
  _, names = export
  assert commands.read_names(names) == {"m1": "Heat (1995)",
                                        "m2": "Babe (1995)"}
  assert commands.read_names(None) == {}


def test_item_line_pads_the_token_and_drops_a_missing_title():
  names = {"m1": "Heat (1995)"}
  assert commands.item_line("   1  +0.5000", "m1", names) == (
      "   1  +0.5000  m1            Heat (1995)")
  assert commands.item_line("    +0.250", "m9", names) == "    +0.250  m9"


@pytest.mark.parametrize("table_directory,suffix", [
    (True, " or one table's directory"), (False, "")])
def test_shared_flags(table_directory, suffix):
  parser = argparse.ArgumentParser()
  commands.add_embeddings_flag(parser, table_directory=table_directory)
  commands.add_names_flag(parser)
  args = parser.parse_args(["--embeddings", "E"])
  assert (args.embeddings, args.names) == ("E", None)
  actions = parser._actions  # pylint: disable=protected-access
  helps = {action.dest: action.help for action in actions}
  assert helps["embeddings"] == ("export directory (embeddings export "
                                 f"--output){suffix} (required)")
  assert helps["names"] == commands.NAMES_HELP
  with pytest.raises(SystemExit):
    parser.parse_args([])


def test_with_names_keeps_the_exports_names_unless_a_file_is_given(
    export, tmp_path):
  directory, names = export
  table = artifacts.EmbeddingTable(
      "movie", np.eye(3, dtype=np.float32), ["m1", "m2", "[OOV_0]"],
      {"vocabulary_size": 2, "num_oov_buckets": 1},
      names=["Heat", "m2", "[OOV_0]"])
  assert commands.with_names("neighbors", table, None) is table
  assert commands.display_names(table) == {"m1": "Heat"}
  from_file = commands.with_names("neighbors", table, names)
  assert from_file.names == ["Heat (1995)", "Babe (1995)", "[OOV_0]"]
  assert commands.display_names(from_file) == {"m1": "Heat (1995)",
                                               "m2": "Babe (1995)"}
  bare = commands.load_table("neighbors", directory, "movie")
  assert bare.names is None and commands.display_names(bare) == {}


def test_read_file_turns_a_bad_file_into_one_line(tmp_path):
  assert commands.read_file("recommend", commands.read_names, None) is None
  with pytest.raises(commands.CommandError) as raised:
    commands.read_file("recommend", commands.read_names,
                       str(tmp_path / "missing.csv"))
  assert raised.value.status == 2
  assert str(raised.value).startswith("embeddings recommend: [Errno 2] No "
                                      "such file or directory")
  (tmp_path / "empty.csv").write_text("")
  with pytest.raises(commands.CommandError, match="empty attribute file"):
    commands.read_file("cluster", commands.read_names,
                       str(tmp_path / "empty.csv"))


def test_summary_is_one_line_on_stderr(capsys):
  commands.summary("cluster", "3 clusters, printed above")
  assert capsys.readouterr() == ("", "embeddings cluster: 3 clusters, "
                                     "printed above\n")
