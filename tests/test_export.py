"""`embeddings export` (trainer/export.py): a model's tables as artifacts."""

import numpy as np

from core import artifacts
from core import layout
from trainer import export
from transforms import feature_info as feature_info_lib


def test_export_writes_the_model_tables_with_rows_and_metadata(
    trained_ml100k, ml100k_preprocessed, tmp_path):
  output = str(tmp_path / "embeddings")
  exported = export.export_tables(trained_ml100k.config.model_dir, output,
                                  tables=["movie", "day_x_hour",
                                          "bias_movie"])
  assert sorted(exported) == ["bias_movie", "day_x_hour", "movie"]
  assert artifacts.table_names(output) == sorted(exported)
  loaded = artifacts.load_tables(output)
  for name in ("movie", "day_x_hour"):
    np.testing.assert_array_equal(
        loaded[name].vectors, export.model_table(trained_ml100k.model, name))
  vocabulary = feature_info_lib.read_vocabulary(ml100k_preprocessed, "movie")
  assert loaded["movie"].tokens == vocabulary + ["[OOV_0]"]
  assert loaded["bias_movie"].tokens == loaded["movie"].tokens
  assert loaded["bias_movie"].metadata["table"] == "bias"
  metadata = loaded["day_x_hour"].metadata
  assert metadata["hash"]["bucket_size"] == 168
  assert metadata["feature_spec"] == {
      "name": "day_x_hour", "kind": "cross", "hash_bucket_size": 168,
      "features": ["day_of_week", "hour_of_day"]}
  assert metadata["model_version"].startswith("sha256:")
  assert metadata["data_version"] == feature_info_lib.data_version(
      ml100k_preprocessed)
  # Buckets of a day x hour cross are labelled by their combinations.
  assert any("Tue 14h" in label for label in loaded["day_x_hour"].labels)
  assert layout.SUCCESS_FILE in [p.name for p in (tmp_path / "embeddings"
                                                  ).iterdir()]
