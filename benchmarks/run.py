"""Runs the benchmarks: `python -m benchmarks.run [--only NAME] [--quick]`.

Discovers every module `benchmarks/*_bench.py` (see benchmarks/__init__.py
for the contract: `run(quick: bool) -> dict`), runs each in turn, writes
its result to benchmarks/results/<name>.json (name without `_bench`) and
prints its "table" rows. A benchmark that raises is reported and the
others still run; the exit status is 1 if any failed.

`--only NAME` (repeatable) runs the named ones: `preprocess` or
`preprocess_bench`.
"""

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from typing import Dict, List, Optional, Sequence

import psutil

import benchmarks

SUFFIX = "_bench"


def discover() -> List[str]:
  """Names (without the suffix) of the benchmark modules, sorted."""
  return sorted(info.name[:-len(SUFFIX)]
                for info in pkgutil.iter_modules(benchmarks.__path__)
                if info.name.endswith(SUFFIX))


def machine() -> Dict:
  """What the numbers were measured on (timings compare within one run)."""
  return {"python": platform.python_version(), "platform": platform.platform(),
          "cpus": os.cpu_count(),
          "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
          "load_average": [round(x, 2) for x in os.getloadavg()]}


def format_table(rows: Sequence[Dict]) -> str:
  """Rows of flat dicts -> an aligned text table (columns in first-seen
  order)."""
  columns: List[str] = []
  for row in rows:
    for key in row:
      if key not in columns:
        columns.append(key)
  cells = [[str(row.get(column, "")) for column in columns] for row in rows]
  widths = [max([len(column)] + [len(line[i]) for line in cells])
            for i, column in enumerate(columns)]
  lines = ["  ".join(column.ljust(w) for column, w in zip(columns, widths))]
  lines.append("  ".join("-" * w for w in widths))
  lines += ["  ".join(cell.rjust(w) for cell, w in zip(line, widths))
            for line in cells]
  return "\n".join(lines)


def run_one(name: str, quick: bool) -> Dict:
  """Runs benchmarks/<name>_bench.py and saves its JSON result.

  Args:
    name: the benchmark's name, without the suffix.
    quick: passed to the module's run().

  Returns:
    The result as saved: the module's dict plus name, quick, machine,
    started and seconds.
  """
  module = importlib.import_module(f"benchmarks.{name}{SUFFIX}")
  started = time.time()
  result = dict(module.run(quick=quick))
  result.update({"name": name, "quick": quick, "machine": machine(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S",
                                          time.localtime(started)),
                 "seconds": round(time.time() - started, 1)})
  path = os.path.join(benchmarks.results_dir(), f"{name}.json")
  with open(path, "w", encoding="utf-8") as handle:
    json.dump(result, handle, indent=2, sort_keys=True, default=str)
  return result


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the selected benchmarks.

  Args:
    argv: command-line flags (default: sys.argv[1:]).

  Returns:
    0 when every selected benchmark finished, else 1.
  """
  parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", action="append", default=[], metavar="NAME",
                      help="run only this benchmark (repeatable)")
  parser.add_argument("--quick", action="store_true",
                      help="small sizes: a smoke run, not the quoted numbers")
  args = parser.parse_args(argv)
  names = discover()
  wanted = [n[:-len(SUFFIX)] if n.endswith(SUFFIX) else n for n in args.only]
  unknown = sorted(set(wanted) - set(names))
  if unknown:
    parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
  failed = []
  for name in wanted or names:
    print(f"== {name} ({'quick' if args.quick else 'full'})", flush=True)
    try:
      result = run_one(name, args.quick)
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      failed.append(name)
      continue
    if result.get("table"):
      print(format_table(result["table"]))
    print(f"-> {os.path.join(benchmarks.RESULTS_DIR, name + '.json')} "
          f"({result['seconds']} s)", flush=True)
  if failed:
    print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
