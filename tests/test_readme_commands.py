"""Every command in the READMEs' ```bash blocks works as a user types it.

Each fenced ```bash block of README.md and deploy/README.md is one test; its
commands run in order (later ones read what earlier ones wrote), from the
repository root with .venv/bin first on PATH and ML100K_DIR from the
environment. Every README block of one file shares one output folder, as
the README's own `out/` paths do. The rules, one per kind of command:

* Paths (`rewrite_token`): `out/...` and `/tmp/...` go under the test's
  temporary folder; `../shared/data/ml-100k` is $ML100K_DIR; the relative
  value of an output flag (OUTPUT_FLAGS, e.g. `--output
  configs/x.tuned.yaml`, `--root registry`) goes under the temporary folder.
* Sizes (SMALLER, the only substitutions): `--trials N` -> 2, `--epochs N`
  -> 1, `--rows N` -> 2000; `embeddings evaluate --ml100k_folds` gets
  `--folds u1 --epochs 1` (one fold, reusing the README's preprocessed u1
  when the README made one) and `embeddings tune` `--epochs 1`;
  `make run` gets ROWS=2000 and RUN_DIR in the temporary folder.
* Run for real: `embeddings ...`, `python -m ...`, `make run`, `mkdir`,
  `export NAME=VALUE`.
* Cloud or cluster (a gs:// path, `--preset dataflow|flink`): an
  `embeddings`/`python -m` command is parsed by its subcommand's parser
  (every flag must be accepted) and a Beam job's --preset is expanded
  offline (pipelines.runners.expand_preset), except the Dataflow job
  builder (`python -m deploy.dataflow_job`), which runs: it builds the job
  offline.
* Tools of a cloud, cluster or the user's system (CLOUD_TOOLS: gcloud,
  kubectl, docker, bq, airflow, systemctl, sudo, crontab, cp into the
  user's folders): not run; every repository file they name must exist.
* Servers that run until stopped (SERVERS: tensorboard): not run; the
  folder they serve (--logdir) must exist.
* `make test`: `make -n test` (the target exists; the suite is this one).
"""

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

import embeddings_cli
from core import console
from pipelines import runners

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = ("README.md", os.path.join("deploy", "README.md"))
BIN = os.path.join(REPO, ".venv", "bin")
ML100K_IN_README = "../shared/data/ml-100k"

SMALLER = {"--trials": "2", "--epochs": "1", "--rows": "2000"}
OUTPUT_FLAGS = ("--output", "--model_dir", "--work_dir", "--root",
                "--job_file", "--dataflow_job_file")
CLOUD_TOOLS = ("gcloud", "kubectl", "docker", "bq", "airflow", "systemctl",
               "sudo", "crontab", "cp")
CLOUD_PRESETS = ("dataflow", "flink")
SERVERS = ("tensorboard",)
COMMAND_TIMEOUT_S = 300
JOB_BUILDER = "deploy.dataflow_job"
TAIL_LINES = 30


def bash_blocks(readme: str) -> List[Tuple[int, List[str]]]:
  """(first line number, logical command lines) of every ```bash block."""
  blocks, current, start, pending = [], None, 0, ""
  with open(os.path.join(REPO, readme), encoding="utf-8") as handle:
    for number, line in enumerate(handle, 1):
      stripped = line.rstrip("\n")
      if current is None:
        if stripped.strip() == "```bash":
          current, start = [], number
        continue
      if stripped.strip() == "```":
        blocks.append((start, current))
        current = None
        continue
      pending += stripped
      if pending.endswith("\\"):
        pending = pending[:-1] + " "
        continue
      if shlex.split(pending, comments=True):
        current.append(pending.strip())
      pending = ""
  return blocks


def _split_and(tokens: Sequence[str]) -> List[List[str]]:
  commands, current = [], []
  for token in tokens:
    if token == "&&":
      commands.append(current)
      current = []
    else:
      current.append(token)
  return commands + [current]


def rewrite_token(token: str, previous: Optional[str], tmp: str,
                  ml100k: str) -> str:
  """A token with the README's paths moved into the test's folders."""
  token = token.replace(ML100K_IN_README, ml100k)
  token = re.sub(r"(^|=)(out/|/tmp/)",
                 lambda m: m.group(1) + os.path.join(
                     tmp, "out/" if m.group(2) == "out/" else ""), token)
  if previous in OUTPUT_FLAGS and not os.path.isabs(token) and "://" not in (
      token):
    token = os.path.join(tmp, token)
  if previous in SMALLER:
    token = SMALLER[previous]
  return token


def _repo_files(tokens: Sequence[str]) -> List[str]:
  """Repository paths a command names (deploy/..., configs/...)."""
  paths = []
  for token in tokens:
    value = token.partition("=")[2] if token.startswith("-") else token
    match = re.fullmatch(r"((?:deploy|configs)/[^\s]*?)\{([^}]*)\}(.*)",
                         value)
    if match:
      paths += [match.group(1) + part + match.group(3)
                for part in match.group(2).split(",")]
    elif re.match(r"(deploy|configs)/", value):
      paths.append(value)
  return paths


def _is_cloud(tokens: Sequence[str]) -> bool:
  if any("gs://" in token for token in tokens):
    return True
  return any(a == "--preset" and b in CLOUD_PRESETS
             for a, b in zip(tokens, tokens[1:]))


class Runner:
  """Runs one README's commands in order; collects the failures."""

  def __init__(self, tmp: str, ml100k: str):
    self.tmp = tmp
    self.ml100k = ml100k
    self.env = dict(os.environ, ML100K_DIR=ml100k)
    self.env["PATH"] = BIN + os.pathsep + self.env.get("PATH", "")
    self.failures: List[str] = []

  def _fail(self, line: str, why: str) -> None:
    self.failures.append(f"$ {line}\n{why}")

  def _expand(self, token: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?",
                  lambda m: self.env.get(m.group(1), m.group(0)), token)

  def _rewrite(self, tokens: Sequence[str]) -> List[str]:
    result, previous = [], None
    for token in tokens:
      result.append(rewrite_token(self._expand(token), previous, self.tmp,
                                  self.ml100k))
      previous = token
    return result

  def run_line(self, line: str) -> None:
    """Runs (or checks offline) one logical README command line."""
    tokens = shlex.split(line, comments=True)
    if tokens[0] in CLOUD_TOOLS or any(t == "|" or "$(" in t
                                       for t in tokens):
      self._check_files(line, tokens)
      return
    for command in _split_and(tokens):
      if not self._run_one(line, command):
        return

  def _check_files(self, line: str, tokens: Sequence[str]) -> None:
    missing = [path for path in _repo_files(tokens)
               if not os.path.exists(os.path.join(REPO, path))]
    if missing:
      self._fail(line, f"names repository files that do not exist: {missing}")

  def _run_one(self, line: str, tokens: List[str]) -> bool:
    if tokens[0] == "export":
      for assignment in tokens[1:]:
        name, _, value = assignment.partition("=")
        self.env[name] = rewrite_token(self._expand(value), None, self.tmp,
                                       self.ml100k)
      return True
    if tokens[0] in CLOUD_TOOLS:
      self._check_files(line, tokens)
      return True
    argv = self._rewrite(tokens)
    if argv[0] in SERVERS:
      return self._check_served_folder(line, argv)
    if argv[0] == "make":
      return self._make(line, argv)
    if argv[0] == "embeddings":
      return self._embeddings(line, argv, tokens)
    if argv[:2] == ["python", "-m"]:
      return self._python_module(line, argv, tokens)
    return self._subprocess(line, argv)

  def _check_served_folder(self, line: str, argv: List[str]) -> bool:
    served = argv[argv.index("--logdir") + 1] if "--logdir" in argv else None
    if served is None or not os.path.isdir(served):
      self._fail(line, f"the folder it serves does not exist: {served}")
      return False
    return True

  def _subprocess(self, line: str, argv: List[str]) -> bool:
    if argv[0] in ("embeddings", "python"):
      argv = [os.path.join(BIN, argv[0])] + argv[1:]
    try:
      done = subprocess.run(argv, cwd=REPO, env=self.env,
                            capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
      self._fail(line, f"still running after {COMMAND_TIMEOUT_S} s; ran "
                       f"{shlex.join(argv)}")
      return False
    if done.returncode != 0:
      # Library chatter (a `python -m` run is not quieted) hides the cause.
      tail = [output_line for output_line
              in (done.stdout + done.stderr).splitlines()
              if not console.is_noise(output_line)][-TAIL_LINES:]
      self._fail(line, f"exit status {done.returncode}; ran "
                       f"{shlex.join(argv)}\n" + "\n".join(tail))
    return done.returncode == 0

  def _make(self, line: str, argv: List[str]) -> bool:
    if argv[1:] == ["test"]:
      return self._subprocess(line, ["make", "-n", "test"])
    if argv[1:] == ["run"]:
      return self._subprocess(line, [
          "make", "run", "ROWS=2000",
          f"RUN_DIR={os.path.join(self.tmp, 'out', 'run')}"])
    return self._subprocess(line, argv)

  def _embeddings(self, line: str, argv: List[str],
                  typed: Sequence[str]) -> bool:
    name = argv[1]
    if _is_cloud(typed):
      return self._parse_offline(line, name, argv[2:])
    if name == "evaluate" and "--ml100k_folds" in argv:
      argv = argv + ["--folds", "u1", "--epochs", "1"]
      self._reuse_readme_fold(argv)
    elif name == "tune" and "--epochs" not in argv:
      argv = argv + ["--epochs", "1"]
    return self._subprocess(line, argv)

  def _reuse_readme_fold(self, argv: List[str]) -> None:
    """Points the fold run's u1 data at the README's preprocessed u1."""
    readme_fold = os.path.join(self.tmp, "out", "ml100k", "u1")
    work_dir = argv[argv.index("--work_dir") + 1]
    target = os.path.join(work_dir, "u1", "preprocessed")
    if os.path.exists(os.path.join(readme_fold, "_SUCCESS")) and (
        not os.path.exists(target)):
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.symlink(readme_fold, target)

  def _python_module(self, line: str, argv: List[str],
                     typed: Sequence[str]) -> bool:
    module = argv[2]
    if _is_cloud(typed) and module != JOB_BUILDER:
      self._fail(line, f"no offline check for `python -m {module}`")
      return False
    return self._subprocess(line, argv)

  def _parse_offline(self, line: str, name: str, argv: List[str]) -> bool:
    parser = embeddings_cli.flag_parser(name)
    if parser is None:
      self._fail(line, f"{embeddings_cli.SUBCOMMANDS[name].flags} does not "
                       f"exist: cannot check the flags offline")
      return False
    errors = io.StringIO()
    try:
      with contextlib.redirect_stderr(errors):
        if embeddings_cli.SUBCOMMANDS[name].beam:
          _, beam_args = parser.parse_known_args(argv)
        else:
          parser.parse_args(argv)
          beam_args = []
    except SystemExit:
      self._fail(line, "flags rejected offline: " + errors.getvalue().strip())
      return False
    return self._expand_preset_offline(line, beam_args)

  def _expand_preset_offline(self, line: str, beam_args: List[str]) -> bool:
    try:
      runners.expand_preset(beam_args)
    except (ValueError, argparse.ArgumentError) as error:
      self._fail(line, f"Beam options rejected offline: {error}")
      return False
    return True


_BLOCKS = [(readme, start, lines) for readme in READMES
           for start, lines in bash_blocks(readme)]


@pytest.fixture(scope="module")
def readme_outputs(tmp_path_factory) -> Dict[str, str]:
  """One output folder per README, shared by its blocks in order."""
  return {readme: str(tmp_path_factory.mktemp(readme.replace(os.sep, "_")))
          for readme in READMES}


@pytest.mark.parametrize(
    "readme, start, lines", _BLOCKS,
    ids=[f"{readme}:{start}" for readme, start, _ in _BLOCKS])
def test_readme_block_runs(readme, start, lines, readme_outputs, ml100k_dir):
  runner = Runner(readme_outputs[readme], ml100k_dir)
  for line in lines:
    runner.run_line(line)
  assert not runner.failures, (
      f"{readme} line {start}: {len(runner.failures)} command(s) failed:\n\n"
      + "\n\n".join(runner.failures))
