"""The `embeddings` console command dispatches to the job modules."""

import embeddings_cli


def test_help_lists_every_subcommand(capsys):
  assert embeddings_cli.main(["--help"]) == 0
  shown = capsys.readouterr().out
  for name in embeddings_cli.SUBCOMMANDS:
    assert f"  {name} " in shown


def test_unknown_subcommand_is_a_usage_error(capsys):
  assert embeddings_cli.main(["frobnicate"]) == 2
  assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err


def test_known_job_errors_are_one_line_and_status_1(tmp_path, capsys):
  missing = tmp_path / "missing.yaml"
  status = embeddings_cli.main(["preprocess", "--spec", str(missing),
                                "--output", str(tmp_path / "out")])
  assert status == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"embeddings preprocess: error: spec file '{missing}' "
                 f"does not exist"]
  assert not (tmp_path / "out").exists()


def test_generate_runs_through_the_cli(tmp_path, capsys):
  output = tmp_path / "data"
  assert embeddings_cli.main(["generate", "--output", str(output),
                              "--rows", "2000", "--seed", "3"]) == 0
  line = capsys.readouterr().out.strip()
  assert line.startswith("embeddings generate: 2,000 ratings of "), line
  assert line.endswith(f"-> {output} (ratings.csv, users.csv, items.csv)")
  with open(output / "ratings.csv") as ratings:
    assert sum(1 for _ in ratings) == 2001  # header + rows
