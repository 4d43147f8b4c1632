"""Reading a finished Beam job's counters, the same way for every job."""

from typing import Dict

from apache_beam.metrics.metric import MetricsFilter


def counter_totals(result, namespace: str) -> Dict[str, int]:
  """Sums a namespace's counters over steps, committed values first.

  Args:
    result: a PipelineResult after wait_until_finish().
    namespace: the Metrics namespace the job's counters use.

  Returns:
    Counter name -> total. Runners without committed metrics report the
    attempted values (the same on a run without retries).
  """
  query = result.metrics().query(MetricsFilter().with_namespace(namespace))
  totals: Dict[str, int] = {}
  for counter in query["counters"]:
    value = counter.committed
    if value is None:
      value = counter.attempted
    name = counter.key.metric.name
    totals[name] = totals.get(name, 0) + int(value or 0)
  return totals
