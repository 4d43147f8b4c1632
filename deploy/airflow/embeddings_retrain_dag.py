"""Airflow DAG: daily `embeddings retrain` for the run's date window.

Copy into the Airflow dags folder on a host (or image) where the
`embeddings` command is installed. The task passes the logical date as the
window, so backfills retrain exactly the windows asked for; re-running a
finished window is a no-op (workflows/retrain.py keeps a marker per window).
"""

import datetime

try:  # Airflow 3
  from airflow.providers.standard.operators.bash import BashOperator
  from airflow.sdk import DAG
except ImportError:  # Airflow 2
  from airflow import DAG
  from airflow.operators.bash import BashOperator

RETRAIN_COMMAND = (
    "embeddings retrain"
    " --spec=/opt/embeddings/configs/synthetic.yaml"
    " --data_pattern=/data/ratings/{date}"
    " --root=/data/registry"
    " --tolerance=0.01"
    " --keep=5"
    " --window={{ds}}")

with DAG(
    dag_id="embeddings_retrain",
    schedule="30 3 * * *",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    # One run at a time: runs share the registry's `current` pointer.
    max_active_runs=1,
    default_args={"retries": 1,
                  "retry_delay": datetime.timedelta(minutes=15)},
    tags=["embeddings"],
) as dag:
  retrain = BashOperator(task_id="retrain", bash_command=RETRAIN_COMMAND)
