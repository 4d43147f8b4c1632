"""Quiet command-line output: TensorFlow's and Beam's chatter is dropped.

`quiet()` is called by the `embeddings` command before any job module (and
so before TensorFlow or Beam) is imported. It

* sets the environment variables TensorFlow's native code and gRPC read,
  which child processes (Beam workers, trial processes) inherit;
* lowers the Python loggers and warnings of tensorflow, tf_keras, absl and
  apache_beam to errors (the project's own loggers keep their level);
* filters file descriptor 2 itself: native code prints some lines (absl's
  `I0000 ...`, `E0000 ... cuInit`, CPU-feature banners) before any
  setting is read, so stderr becomes a pipe whose lines a thread forwards
  to the real stderr unless they match `NOISE`.

Everything else, tracebacks and the last lines of a failing command
included, reaches the real stderr: the filter is drained at exit and never
changes the exit status.
"""

import atexit
import fcntl
import logging
import os
import re
import sys
import threading
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

# Inherited by every process the command starts.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
}

NOISY_LIBRARIES = ("tensorflow", "tf_keras", "keras", "absl", "apache_beam",
                   "h5py")

# One pattern per kind of line, matched against the line without its end.
NOISE = tuple(re.compile(pattern) for pattern in (
    # absl/glog native lines: "I0000 00:00:1700000000.123 12345 file.cc:1] ..."
    r"^[IW]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\]",
    # ... and the native errors every CPU-only machine prints.
    r"^E\d{4} .*(cuInit|CUDA_ERROR_NO_DEVICE|Unable to register cu(DNN|FFT|"
    r"BLAS) factory|computation placer already registered)",
    # TensorFlow's older native format: "2024-01-01 12:00:00.1: I tensorflow/"
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] ",
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: E .*(cuInit|CUDA_ERROR_NO_DEVICE|"
    r"Unable to register cu(DNN|FFT|BLAS) factory)",
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
    r"^(WARNING|INFO):(tensorflow|absl|apache_beam):",
    r"Callback method `on_(train|test|predict)_batch_(begin|end)` is slow",
    r"update_checkpoint_state \(from tensorflow",
))

_filter: Optional["_StderrFilter"] = None


def is_noise(line: str) -> bool:
  """Whether a stderr line is known library chatter.

  Args:
    line: one line, with or without its end.

  Returns:
    True when one of the NOISE patterns matches it.
  """
  text = line.rstrip("\r\n")
  return any(pattern.search(text) for pattern in NOISE)


class _StderrFilter:
  """A pipe on fd 2 whose reader forwards the lines that are not noise."""

  def __init__(self, keep: Callable[[str], bool]):
    self._keep = keep
    self._real = os.dup(2)
    read_end, write_end = os.pipe()
    _widen_pipe(write_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    self._read_end = read_end
    self._thread = threading.Thread(target=self._forward, daemon=True,
                                    name="stderr-filter")
    self._thread.start()

  def _write(self, data: bytes) -> None:
    while data:
      data = data[os.write(self._real, data):]

  def _forward(self) -> None:
    pending = b""
    while True:
      chunk = os.read(self._read_end, 65536)
      if not chunk:
        break
      pending += chunk
      *lines, pending = pending.split(b"\n")
      kept = [line + b"\n" for line in lines
              if self._keep(line.decode("utf-8", "replace"))]
      if kept:
        self._write(b"".join(kept))
    if pending and self._keep(pending.decode("utf-8", "replace")):
      self._write(pending)
    os.close(self._read_end)

  def close(self, timeout: float = 5.0) -> None:
    """Puts the real stderr back and forwards what the pipe still holds."""
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    # fd 2 was the pipe's last write end in this process: the reader sees
    # its end once child processes that inherited it have exited too.
    os.dup2(self._real, 2)
    self._thread.join(timeout)


def _widen_pipe(write_end: int) -> None:
  """A larger pipe buffer, so native writers wait less on the reader."""
  set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
  if set_size is None:
    return
  try:
    fcntl.fcntl(write_end, set_size, 1 << 20)
  except OSError:
    pass  # the system's limit on pipe sizes is lower: the default is fine


def _quiet_python_logging() -> None:
  for name in NOISY_LIBRARIES:
    logging.getLogger(name).setLevel(logging.ERROR)
  # Warnings are matched by the module that issues them.
  warnings.filterwarnings(
      "ignore", module=r"(" + "|".join(NOISY_LIBRARIES) + r")(\.|$)")


def quiet() -> None:
  """Makes this process and its children print no library chatter.

  Safe to call more than once; the fd filter is installed once.
  """
  global _filter
  os.environ.update(QUIET_ENVIRONMENT)
  _quiet_python_logging()
  if _filter is None:
    _filter = _StderrFilter(lambda line: not is_noise(line))
    atexit.register(_filter.close)


def strip_verbose(argv: Sequence[str]) -> Tuple[bool, List[str]]:
  """Removes every bare `--verbose` from argv.

  Args:
    argv: command-line arguments.

  Returns:
    (whether --verbose was given, the arguments without it).
  """
  rest = [arg for arg in argv if arg != "--verbose"]
  return len(rest) != len(argv), rest
