"""Real `embeddings` runs print no TensorFlow or Beam chatter by default."""

import os
import subprocess
import sys

from core import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _embeddings(*argv):
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
  return subprocess.run([os.path.join(BIN, "embeddings"), *argv], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def _native_lines(text):
  return [line for line in text.splitlines()
          if line.startswith(("I0000", "E0000", "W0000")) or "cuInit" in line]


def test_generate_then_preprocess_print_only_their_own_lines(tmp_path):
  data, preprocessed = tmp_path / "data", tmp_path / "preprocessed"
  generated = _embeddings("generate", "--output", str(data), "--rows", "2000",
                          "--seed", "1")
  assert generated.returncode == 0, generated.stderr
  done = _embeddings("preprocess", "--spec", "configs/synthetic.yaml",
                     "--env", f"DATA_DIR={data}", "--output",
                     str(preprocessed))
  assert done.returncode == 0, done.stderr[-3000:]
  assert _native_lines(done.stdout + done.stderr) == []
  assert not [line for line in done.stderr.splitlines()
              if console.is_noise(line)]
  assert any(line.startswith("embeddings preprocess: wrote ")
             for line in done.stdout.splitlines()), done.stdout
  assert (preprocessed / "_SUCCESS").exists()


def test_verbose_shows_what_quiet_output_drops(tmp_path):
  missing = str(tmp_path / "missing")
  argv = ["evaluate", "--model_dir", missing, "--preprocessed", missing]
  quiet = _embeddings(*argv)
  verbose = _embeddings("--verbose", *argv)
  assert quiet.returncode == verbose.returncode == 2
  error = (f"embeddings evaluate: {missing}/export does not exist: "
           f"{missing!r} holds no exported model")
  assert quiet.stderr.splitlines() == [error]
  shown = verbose.stderr.splitlines()
  assert [line for line in shown if not console.is_noise(line)] == [error]
  # Importing TensorFlow prints at least its CPU or CUDA banner.
  assert any(console.is_noise(line) for line in shown)
