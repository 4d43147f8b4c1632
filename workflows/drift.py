"""How far a retrained embedding space moved from the current one.

For the most frequent items both models know, the overlap of their nearest
neighbours and the rank correlation of their similarities: a retraining
that keeps the geometry scores near 1 on both, whatever rotation or row
order the new table has.
"""

from typing import Any, Dict

import numpy as np
from scipy import stats

from core import artifacts
from retrieval import index as index_lib
from workflows import registry


def drift_report(current: artifacts.EmbeddingTable,
                 candidate: artifacts.EmbeddingTable, items: int = 100,
                 k: int = 10) -> Dict[str, Any]:
  """How much the candidate's embedding space moved from the current one's.

  For the `items` most frequent tokens of the candidate's vocabulary (the
  tf.Transform vocabulary is sorted by frequency) that both tables have:
  the overlap of their k nearest neighbours by cosine (among the tokens
  both tables have) and the Spearman rank correlation between their cosine
  similarities to every other shared token in the two spaces.

  Args:
    current: the current model's EmbeddingTable (core/artifacts.py).
    candidate: the candidate's EmbeddingTable for the same feature.
    items: how many frequent tokens to compare.
    k: neighbours per token.

  Returns:
    {"feature", "items", "k", "shared_tokens", "neighbor_overlap_mean",
    "neighbor_overlap_min", "spearman_mean", "spearman_min", "per_item"}.

  Raises:
    registry.RetrainError: fewer than k + 1 shared tokens.
  """
  old_rows = {token: row for row, token in enumerate(current.tokens)}
  shared = [token for token in candidate.tokens
            if token in old_rows and not artifacts.is_oov_token(token)]
  if len(shared) < k + 1:
    raise registry.RetrainError(
        f"drift: only {len(shared)} tokens of {candidate.name!r} are in both "
        f"models, need {k + 1}")
  new_rows = {token: row for row, token in enumerate(candidate.tokens)}
  old = index_lib.normalize(current.vectors[[old_rows[t] for t in shared]])
  new = index_lib.normalize(candidate.vectors[[new_rows[t] for t in shared]])
  queries = list(range(min(items, len(shared))))
  exclude = [[q] for q in queries]
  _, old_ids = index_lib.top_k(old[queries], old, k, exclude=exclude)
  _, new_ids = index_lib.top_k(new[queries], new, k, exclude=exclude)
  old_sims = old[queries] @ old.T
  new_sims = new[queries] @ new.T
  per_item, overlaps, rhos = [], [], []
  for q in queries:
    overlap = len(set(old_ids[q].tolist()) & set(new_ids[q].tolist())) / k
    others = np.arange(len(shared)) != q
    rho = float(stats.spearmanr(old_sims[q, others],
                                new_sims[q, others]).statistic)
    overlaps.append(overlap)
    rhos.append(rho)
    per_item.append({"token": shared[q], "neighbor_overlap": overlap,
                     "spearman": rho})
  return {
      "feature": candidate.name, "items": len(queries), "k": k,
      "shared_tokens": len(shared),
      "neighbor_overlap_mean": float(np.mean(overlaps)),
      "neighbor_overlap_min": float(np.min(overlaps)),
      "spearman_mean": float(np.mean(rhos)),
      "spearman_min": float(np.min(rhos)),
      "per_item": per_item,
  }
