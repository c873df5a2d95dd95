"""The digit-scene configs: training lowers the loss; the trainer evaluates them end to end."""

import json

import jax
import numpy as np
import optax
import pytest
from helpers import load_config

from involution_jax import tasks, train_step
from involution_jax.data import pipeline
from involution_jax.trainer import train_and_evaluate

SMALL = dict(
  num_train_scenes=64,
  num_eval_scenes=16,
  batch_size=16,
  eval_batch_size=16,
  num_train_steps=3,
  log_every_steps=1,
  checkpoint_every_steps=3,
  warmup_epochs=0.0,
)


@pytest.mark.parametrize(
  "name,neck", [("digitscenes_seg", "involution"), ("digitscenes_det", "conv")]
)
def test_steps_on_a_batch_lower_the_loss(name, neck):
  config = load_config(name, neck)
  task = tasks.get_task(config)
  dataset = task.dataset(config, "train")
  model = train_step.model_from_config(config, dataset.num_classes)
  schedule = optax.constant_schedule(config.learning_rate)
  tx = train_step.optimizer(config, schedule)
  state = jax.jit(
    lambda: train_step.init_state(model, tx, jax.random.PRNGKey(0), task.input_shape(config))
  )()
  step = jax.jit(train_step.bind_train_step(task.loss_fn(model, config), tx, schedule, config))
  batch = next(pipeline.train_iterator(dataset, task.preprocess(config), global_batch=16, seed=0))
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] < 0.9 * min(losses[:3]), losses


def test_segmentation_trains_and_reports_miou(tmp_path):
  metrics = train_and_evaluate(load_config("digitscenes_seg", "conv", **SMALL), str(tmp_path))
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert 0 <= saved["test_miou"] <= 1 and 0 <= saved["test_pixel_accuracy"] <= 1
  assert set(saved["test_per_class_iou"]) == {"background", *map(str, range(10))}
  assert np.isfinite(metrics["train_loss"]) and metrics["steps"] == 3


def test_detection_trains_and_reports_coco_ap(tmp_path, pycocotools):
  metrics = train_and_evaluate(load_config("digitscenes_det", "conv", **SMALL), str(tmp_path))
  assert 0 <= metrics["test_ap"] <= metrics["test_ap50"] <= 1
  assert {"train_cls_loss", "train_box_loss"} <= set(metrics)


def test_unknown_task_is_refused():
  with pytest.raises(ValueError, match="unknown task 'captioning'"):
    tasks.get_task(load_config("default", task="captioning"))
