"""Every shipped config loads, validates and builds its model."""

import jax
import jax.numpy as jnp
import pytest
from helpers import load_config

from involution_jax import configs
from involution_jax.tasks import get_task
from involution_jax.training import step as train_step

CONFIGS = configs.names()
NUM_CLASSES = {
  "classification": 1000,
  "segmentation": 19,
  "detection": 80,
  "two_stage_detection": 80,
  "language_model": 256,
  "text_classification": 2,
}


def test_the_expected_configs_exist():
  assert {
    "default",
    "imagenet",
    "cifar",
    "digitscenes_seg",
    "digitscenes_det",
    "cityscapes_fpn_red50",
    "cityscapes_upernet_red50",
    "digitscenes_upernet",
    "coco_retinanet_red50",
    "coco_faster_rcnn_red50",
    "coco_mask_rcnn_red50",
    "digitscenes_rcnn",
    "charlm",
    "sentiment",
  } | {f"rednet{d}_imagenet" for d in (26, 38, 50, 101, 152)} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds_its_model(name):
  config = load_config(name)
  configs.validate(config, devices=8)
  task = get_task(config)
  model = train_step.model_from_config(config, NUM_CLASSES[task.name])
  shape = task.input_shape(config)
  if len(shape) == 1:  # tokens
    small = (1, min(shape[0], 64))
  else:
    small = (1, min(shape[0], 96), min(shape[1], 128), 3)  # shapes only; any size works
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(small, task.input_dtype), train=False)
  )
  assert "params" in variables
  assert ("batch_stats" in variables) == (task.input_dtype == jnp.float32)  # images: BatchNorm
  assert config.get("init_from") is None  # a field, overridable from the command line


@pytest.mark.parametrize("variant", ["faster_inv_softmax", "mask", "cascade_conv", "mask_gn"])
def test_digit_rcnn_variants_are_checked(variant):
  with pytest.raises(ValueError, match=f"variant '{variant}'.*inv_softmax for mask only"):
    load_config("digitscenes_rcnn", variant)


def test_two_stage_recipes_follow_the_official_configs():
  # warm-up iterations and clipping norm of the official mmdet configs, per variant
  expected = {"conv_conv": (500, 0.0), "inv_conv": (2000, 0.0), "inv_inv": (2000, 5.0)}
  for name in ("coco_faster_rcnn_red50", "coco_mask_rcnn_red50"):
    for variant, (warmup, clip) in expected.items():
      config = load_config(name, variant)
      assert round(config.warmup_epochs * 7330) == warmup and config.grad_clip_norm == clip
  mask = load_config("digitscenes_rcnn", "mask_inv_softmax")
  assert mask.model_kwargs.mask_kernel_normalization == "softmax"
  assert "mask_kernel_normalization" not in load_config("digitscenes_rcnn", "mask_inv").model_kwargs
