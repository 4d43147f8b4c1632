"""Reading back what `embeddings recommend-batch` wrote.

The job writes one row per user, {"user", "items", "scores"}, as JSON lines
or Parquet shards under RecommendationsLayout.prefix, and a JSON line with
its reason per dead-lettered user or rating. These readers hold what they
read in memory: for checks and samples (a `users` filter keeps it small),
not for 1M users at once (read those shards with Beam or pyarrow).
"""

import json
from typing import Container, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from core import files
from core import layout


def read_recommendations(output: str,
                         users: Optional[Container[str]] = None
                        ) -> Dict[str, Dict]:
  """The rows of a recommend-batch output, by user.

  Args:
    output: the job's --output directory (local or gs://).
    users: keep only these users (default: all).

  Returns:
    user -> {"user": ..., "items": [...], "scores": [...]}.

  Raises:
    ValueError: a user has two rows (the job writes one per user).
  """
  records: Dict[str, Dict] = {}
  prefix = layout.RecommendationsLayout(output).prefix
  for path in sorted(files.glob(prefix + "-*")):
    if path.endswith(layout.PARQUET_SUFFIX):
      rows = pq.read_table(pa.BufferReader(files.read_bytes(path))
                          ).to_pylist()
    else:
      with files.open_text(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for row in rows:
      if users is not None and row["user"] not in users:
        continue
      if row["user"] in records:
        raise ValueError(f"{output}: user {row['user']!r} has two rows "
                         f"(one in {path})")
      records[row["user"]] = row
  return records


def read_dead_letters(output: str) -> List[Dict]:
  """The dead-letter records of a recommend-batch output.

  Args:
    output: the job's --output directory.

  Returns:
    One dict per dead-lettered user or rating, with its "reason".
  """
  letters: List[Dict] = []
  paths = layout.RecommendationsLayout(output)
  for path in sorted(files.glob(paths.dead_letter_prefix + "*")):
    with files.open_text(path) as handle:
      letters.extend(json.loads(line) for line in handle if line.strip())
  return letters
