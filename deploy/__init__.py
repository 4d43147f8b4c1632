"""Deployment: cluster manifests, offline Dataflow job builds, retraining.

`deploy.retrain` implements `embeddings retrain` / `embeddings rollback`;
`deploy.dataflow_job` builds the Dataflow job of `embeddings preprocess`
offline; `deploy.tf_config` gives pods without a training operator their
TF_CONFIG. The rest of this directory is manifests and container files
(see README.md).
"""
