"""The digit-scene configs: training lowers the loss; the trainer evaluates them end to end."""

import json

import jax
import numpy as np
import pytest
from helpers import (
  checkpoint_on_eval_split,
  coco_ap_of_checkpoint,
  load_config,
  metrics_on_one_batch,
  one_device_mesh,
  save_random_checkpoint,
)

from involution_jax import tasks
from involution_jax.models import segmentation
from involution_jax.training.evaluator import evaluate_weights
from involution_jax.training.trainer import train_and_evaluate

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


# Over 20 s: a dense model's train step compiles, then 8 steps so that the loss must fall.
@pytest.mark.parametrize(
  "name,neck", [("digitscenes_seg", "involution"), ("digitscenes_det", "conv")]
)
def test_steps_on_a_batch_lower_the_loss(name, neck):
  history = metrics_on_one_batch(load_config(name, neck, **SMALL), steps=8, global_batch=16)
  losses = [m["loss"] for m in history]
  assert all(np.isfinite(losses)) and losses[-1] < 0.9 * min(losses[:3]), losses


# Over 20 s: Semantic FPN's train and evaluation programs compile.
def test_segmentation_trains_and_reports_miou(tmp_path):
  config = load_config("digitscenes_seg", "involution", **SMALL)
  metrics = train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh())
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert set(saved["test_per_class_iou"]) == {"background", *map(str, range(10))}
  # The same numbers from the checkpoint's predictions on the 16 scenes, counted in NumPy.
  model, variables, _, examples = checkpoint_on_eval_split(str(tmp_path), config)
  x = np.stack([e["image"] for e in examples])
  truth = np.stack([e["mask"] for e in examples]).astype(np.int64)
  resized = jax.jit(
    lambda v, x: segmentation.resize_bilinear(model.apply(v, x, train=False), truth.shape[1:])
  )(variables, x)
  scores = np.sort(np.asarray(resized), -1)
  predicted = np.argmax(np.asarray(resized), -1)
  n = len(saved["test_per_class_iou"])
  labelled = truth < n
  matrix = np.bincount(truth[labelled] * n + predicted[labelled], minlength=n * n).reshape(n, n)
  tp, union = np.diag(matrix), matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
  iou = tp[union > 0] / union[union > 0]
  # Pixels whose two best logits are within 1e-4 may go either way in another compilation
  # (the trainer's evaluation step is another program): each moves at most two classes'
  # IoU by 1 / their union.
  ties = int(np.sum((scores[..., -1] - scores[..., -2] < 1e-4) & labelled))
  assert saved["test_miou"] == pytest.approx(
    iou.mean(), abs=1e-6 + 2 * ties / union[union > 0].min()
  )
  accuracy = tp.sum() / matrix.sum()
  assert saved["test_pixel_accuracy"] == pytest.approx(accuracy, abs=1e-6 + ties / matrix.sum())
  assert np.isfinite(metrics["train_loss"]) and metrics["steps"] == 3


# Over 20 s: RetinaNet's train and evaluation programs compile, and its forward pass again.
def test_detection_trains_and_reports_coco_ap(tmp_path, pycocotools):
  config = load_config("digitscenes_det", "conv", **SMALL)
  metrics = train_and_evaluate(config, str(tmp_path / "run"), mesh=one_device_mesh())
  assert {"train_cls_loss", "train_box_loss"} <= set(metrics)
  reference = coco_ap_of_checkpoint(str(tmp_path / "run"), config)
  assert metrics["test_detections"] == reference["detections"]  # 3 steps: maybe none yet
  assert metrics["test_ap"] == pytest.approx(reference["ap"], rel=1e-6, abs=1e-12)
  assert metrics["test_ap50"] == pytest.approx(reference["ap50"], rel=1e-6, abs=1e-12)

  # The same evaluation on weights that detect: class bias 0, so sigmoid scores ~0.5.
  def confident(variables):
    variables["params"]["bbox_head"]["retina_cls"]["bias"][:] = 0.0

  save_random_checkpoint(str(tmp_path / "random"), config=config, edit=confident)
  metrics = evaluate_weights(config, str(tmp_path / "random"), quiet=True, mesh=one_device_mesh())
  reference = coco_ap_of_checkpoint(str(tmp_path / "random"), config)
  assert reference["detections"] > 0 and metrics["detections"] == reference["detections"]
  assert metrics["ap"] == pytest.approx(reference["ap"], rel=1e-6, abs=1e-12)
  assert metrics["ap50"] == pytest.approx(reference["ap50"], rel=1e-6, abs=1e-12)


def test_unknown_task_is_refused():
  with pytest.raises(ValueError, match="unknown task 'captioning'"):
    tasks.get_task(load_config("default", task="captioning"))
