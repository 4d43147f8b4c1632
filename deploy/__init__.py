"""Deployment: cluster manifests, container files, schedules, TF_CONFIG glue.

`deploy.dataflow_job` builds the Dataflow job of `embeddings preprocess`
offline; `deploy.tf_config` gives pods without a training operator their
TF_CONFIG. The schedules here (Kubernetes CronJob, Airflow DAG, systemd
timer) all run `embeddings retrain` (workflows/retrain.py). The rest of
this directory is manifests and container files (see README.md).
"""
