"""Tasks: what the trainer and evaluator need to know about a kind of problem.

`config.task`: "classification" (default), "segmentation", "detection"
(RetinaNet), "two_stage_detection" (Faster / Mask R-CNN), "language_model" or
"text_classification". A
task loads a split (`dataset`), prepares examples (`preprocess`), names its
input shape, defines the training loss with its metrics (`loss_fn`) and the
evaluation: a per-batch function on the device (`eval_fn`) and a summary of
all batches' outputs on the host (`summarize`), and what a checkpoint records
about its model (`model_info`). `images`: the image tasks; `text`: the text tasks;
`common`: what they share.
"""

from __future__ import annotations

import ml_collections

from involution_jax.tasks.common import cross_entropy
from involution_jax.tasks.images import Classification, Detection, Segmentation
from involution_jax.tasks.text import LanguageModel, TextClassification
from involution_jax.tasks.two_stage import TwoStageDetection

TASKS = {
  t.name: t
  for t in (
    Classification,
    Segmentation,
    Detection,
    TwoStageDetection,
    LanguageModel,
    TextClassification,
  )
}


def get_task(config: ml_collections.ConfigDict):
  name = config.get("task", "classification")
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name]()


__all__ = [
  "TASKS",
  "Classification",
  "Detection",
  "LanguageModel",
  "Segmentation",
  "TextClassification",
  "TwoStageDetection",
  "cross_entropy",
  "get_task",
]
