"""The preprocessing job reads its main table twice, and why that holds.

DirectRunner's FnApiRunner keeps in memory every element that crosses from
one fused stage to another. These tests check the structure that keeps the
job flat in memory: with two passes, the stage that transforms and writes
the rows also reads and parses them (nothing of the main table waits between
stages), while the one-pass job hands every row across a stage boundary.
Both give the same output; a main table that changes between the passes
fails the run; the progress lines and the choice of passes are exact.
"""

import glob
import json
import os
import tempfile

import apache_beam as beam
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from core import layout
from pipelines import counts as counts_lib
from pipelines import preprocess
from pipelines import progress
from pipelines import job

from conftest import SYNTHETIC_SPEC

PARSE_MAIN = "ParseMain/ParDo(ParseBatches)"
PARSE_FOR_ANALYSIS = "ParseMainForAnalysis/ParDo(ParseBatches)"
TRANSFORM_TRAIN = "TransformTrain/Transform"


def _options(data_dir, output="/tmp/unused", **fields):
  return preprocess.PreprocessOptions(
      spec=SYNTHETIC_SPEC, output=output, env=(("DATA_DIR", data_dir),),
      **fields)


def _fused_stages(data_dir, reread_input):
  """Transform names of each stage FnApiRunner would run, as sets."""
  plan = preprocess.plan_job(_options(data_dir), [])
  pipeline = beam.Pipeline()
  with tempfile.TemporaryDirectory() as temp:
    with tft_beam.Context(temp_dir=temp):
      job.build_pipeline(pipeline, plan.spec, plan.rules,
                           os.path.join(temp, "staging"),
                           reread_input=reread_input)
    _, stages = fn_runner.FnApiRunner().create_stages(
        pipeline.to_runner_api())
  return [{t.unique_name for t in stage.transforms} for stage in stages]


def _stage_with(stages, name):
  found = [stage for stage in stages if name in stage]
  assert len(found) == 1, name
  return found[0]


def test_two_passes_transform_in_the_stage_that_reads(synthetic_data):
  stages = _fused_stages(synthetic_data, reread_input=True)
  transform_stage = _stage_with(stages, TRANSFORM_TRAIN)
  # Rows flow from the reader to the writer inside one stage ...
  assert PARSE_MAIN in transform_stage
  assert "EncodeTrain/ParDo(EncodeExamples)" in transform_stage
  assert "TransformEval/Transform" in transform_stage
  # ... and the analysis reads the table on its own, in another stage.
  analysis_stage = _stage_with(stages, PARSE_FOR_ANALYSIS)
  assert analysis_stage is not transform_stage
  assert TRANSFORM_TRAIN not in analysis_stage
  # Side tables are read once, for both passes.
  assert sum("ParseSideUsers/ParDo(ParseBatches)" in stage
             for stage in stages) == 1


def test_one_pass_hands_every_row_to_a_later_stage(synthetic_data):
  stages = _fused_stages(synthetic_data, reread_input=False)
  transform_stage = _stage_with(stages, TRANSFORM_TRAIN)
  assert PARSE_MAIN not in transform_stage
  assert not any(PARSE_FOR_ANALYSIS in stage for stage in stages)


def _records(folder, split_name):
  paths = sorted(glob.glob(os.path.join(
      folder, f"{split_name}-*{layout.TFRECORD_SUFFIX}")))
  return sorted(record.numpy() for record in
                tf.data.TFRecordDataset(paths, compression_type="GZIP"))


def _vocabularies(folder):
  root = os.path.join(folder, "transform_fn", "assets")
  return {name: open(os.path.join(root, name), "rb").read()
          for name in sorted(os.listdir(root))}


def test_one_and_two_passes_write_the_same_output(synthetic_data,
                                                  synthetic_preprocessed,
                                                  tmp_path):
  one_pass = str(tmp_path / "one_pass")
  report = preprocess.preprocess(
      _options(synthetic_data, one_pass, input_passes="one"))
  with open(os.path.join(synthetic_preprocessed, "run_report.json")) as f:
    two_pass = json.load(f)
  assert report["input_passes"] == 1 and two_pass["input_passes"] == 2
  for key in ("rows_read", "rows_written", "rows_analyzed",
              "vocabulary_sizes"):
    assert report[key] == two_pass[key], key
  assert report["rows_analyzed"] == report["rows_written"][layout.TRAIN]
  assert _vocabularies(one_pass) == _vocabularies(synthetic_preprocessed)
  for split_name in layout.SPLITS:
    assert (_records(one_pass, split_name)
            == _records(synthetic_preprocessed, split_name)), split_name


def _summary(analyzed, train):
  counts = {(counts_lib.READ, "ratings"): train + 2,
            (counts_lib.WRITTEN, layout.TRAIN): train,
            (counts_lib.WRITTEN, layout.EVAL): 2,
            (counts_lib.ANALYZED, layout.TRAIN): analyzed}
  return counts_lib.summarize_counts(counts, ["ratings"])


def test_a_table_that_changed_between_the_passes_fails():
  counts_lib.check_rejections(_summary(10, 10), "ratings", 0.0)
  with pytest.raises(counts_lib.UnreconciledCountsError,
                     match="analysis read 9 train rows but the transform "
                           "wrote 10"):
    counts_lib.check_rejections(_summary(9, 10), "ratings", 0.0)


def test_progress_lines():
  assert (progress.progress_line(progress.TRANSFORM_PASS, 2_000_000, 20.0,
                                 8_000_000)
          == "transform pass: 2,000,000 of 8,000,000 rows (25%), "
             "100,000 rows/s, ETA 1m00s")
  assert (progress.progress_line(progress.ANALYSIS_PASS, 1_500, 3.0)
          == "analysis pass: 1,500 rows read (500 rows/s)")
  assert progress.progress_line("reading", 10, 1.0, 3_610_010).endswith(
      "ETA 100h16m")


@pytest.mark.parametrize("choice, runner, expected", [
    ("auto", "DirectRunner", True),
    ("auto", "DataflowRunner", False),
    ("one", "DirectRunner", False),
    ("two", "DataflowRunner", True),
])
def test_how_many_passes(synthetic_data, choice, runner, expected):
  plan = preprocess.plan_job(_options(synthetic_data), [])
  assert preprocess.reads_input_twice(
      _options(synthetic_data, input_passes=choice), plan.spec,
      PipelineOptions([f"--runner={runner}"])) is expected
