"""Tasks: all that training, evaluation and inference know of a kind of problem.

`config.task` (and `ModelInfo.task`): "classification" (default), "segmentation",
"detection" (RetinaNet), "two_stage_detection" (Faster / Mask R-CNN), "language_model"
or "text_classification". Each is a class with the methods of `base.Task`: its data
(`dataset`, `preprocess`, `input_shape`), training loss and metrics (`loss_fn`),
evaluation (`eval_fn` on the device, `summarize` on the host), what a checkpoint records
of its model (`model_info`), and its inference (`preprocess_from_info`, `predict_fn`,
`prediction`). Nothing outside `tasks/` (and `configs/`) branches on a task's name.
`images`: the image tasks; `two_stage`: Faster / Mask R-CNN; `text`: the text tasks;
`common`: what they share.
"""

from __future__ import annotations

import ml_collections

from involution_jax.tasks.base import Task
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


def task_named(name: str) -> Task:
  """The task `name` (a key of `TASKS`)."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
  return TASKS[name]()


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task `config.task` names (default: classification)."""
  return task_named(config.get("task", "classification"))


__all__ = [
  "TASKS",
  "Classification",
  "Detection",
  "LanguageModel",
  "Segmentation",
  "Task",
  "TextClassification",
  "TwoStageDetection",
  "cross_entropy",
  "get_task",
  "task_named",
]
