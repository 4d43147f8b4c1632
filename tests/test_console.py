"""Quiet output: core/console.py filters stderr at the file-descriptor level."""

import os
import subprocess
import sys
import textwrap

import pytest

from core import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NATIVE_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796185127.022862    8433 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results",
    "I0000 00:00:1796185127.024068    8433 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796185135.432277    8433 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR "
    "(303)",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "2024-01-01 12:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN",
    "WARNING:tensorflow:Callback method `on_train_batch_end` is slow compared "
    "to the batch time (batch time: 0.0019s vs `on_train_batch_end` time: "
    "0.0037s). Check your callbacks.",
]

REAL_LINES = [
    "embeddings train: error: --epochs: must be a positive integer",
    "E0000 00:00:1796185135.432277    8433 file.cc:1] a real native error",
    "Traceback (most recent call last):",
    "WARNING:workflows.tune: trial 3 failed",
]


@pytest.mark.parametrize("line", NATIVE_NOISE)
def test_known_library_lines_are_noise(line):
  assert console.is_noise(line)
  assert console.is_noise(line + "\n")


@pytest.mark.parametrize("line", REAL_LINES)
def test_other_lines_are_not_noise(line):
  assert not console.is_noise(line)


def test_strip_verbose_removes_every_bare_flag():
  assert console.strip_verbose(["--verbose", "train", "--epochs", "1",
                                "--verbose"]) == (True, ["train", "--epochs",
                                                         "1"])
  assert console.strip_verbose(["train", "--verbose=2"]) == (
      False, ["train", "--verbose=2"])


def _run_quiet(body, tmp_path):
  """Runs `body` after console.quiet() in a fresh Python; (rc, out, err)."""
  script = tmp_path / "script.py"
  script.write_text("import logging, os, subprocess, sys, warnings\n"
                    "from core import console\n"
                    "console.quiet()\n" + textwrap.dedent(body))
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60,
                        check=False)
  return done.returncode, done.stdout, done.stderr


def test_noise_from_native_python_and_child_writes_is_dropped(tmp_path):
  noise = "\n".join(NATIVE_NOISE)
  rc, out, err = _run_quiet(f"""
      os.write(2, {noise!r}.encode() + b"\\nnative real line\\n")
      print("python real line", file=sys.stderr)
      logging.getLogger("tensorflow").warning("a tensorflow warning")
      logging.getLogger("apache_beam.runners").warning("a beam warning")
      logging.getLogger("workflows.tune").warning("our own warning")
      warnings.warn_explicit("a library warning", UserWarning,
                             "x.py", 1, module="tensorflow.python.x")
      subprocess.run([sys.executable, "-c",
                      "import os; os.write(2, {NATIVE_NOISE[2]!r}.encode() "
                      "+ b'\\\\nchild real line\\\\n')"], check=True)
      print("TF_CPP_MIN_LOG_LEVEL", os.environ["TF_CPP_MIN_LOG_LEVEL"])
      os.write(2, b"last line without an end")
      """, tmp_path)
  assert rc == 0
  assert out == "TF_CPP_MIN_LOG_LEVEL 3\n"
  assert err.splitlines() == ["native real line", "python real line",
                              "our own warning", "child real line",
                              "last line without an end"]


def test_a_failing_command_keeps_its_traceback_and_exit_status(tmp_path):
  rc, _, err = _run_quiet(f"""
      os.write(2, {NATIVE_NOISE[3]!r}.encode() + b"\\n")
      print("the last line before the failure", file=sys.stderr)
      raise RuntimeError("boom")
      """, tmp_path)
  assert rc == 1
  lines = err.splitlines()
  assert lines[0] == "the last line before the failure"
  assert lines[1] == "Traceback (most recent call last):"
  assert lines[-1] == "RuntimeError: boom"
  assert not any(console.is_noise(line) for line in lines)


def test_exit_status_is_unchanged(tmp_path):
  rc, _, err = _run_quiet("""
      print("stopping", file=sys.stderr)
      sys.exit(3)
      """, tmp_path)
  assert (rc, err) == (3, "stopping\n")
