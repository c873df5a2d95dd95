"""Every shipped config loads, validates and builds its model."""

import jax
import jax.numpy as jnp
import numpy as np
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


# --- a run's config, saved in its workdir -----------------------------------------------------


def _types(config, prefix=""):
  out = {}
  for key, value in config.items():
    if isinstance(value, type(config)):
      out.update(_types(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = config.get_type(key)
  return out


@pytest.mark.parametrize(
  "spec", [*configs.names(), "imagenet:rednet101", "digitscenes_seg:conv", "charlm:conv"]
)
def test_a_saved_config_reads_back_the_same(spec, tmp_path):
  config = configs.get_config(spec)
  configs.save_run_config(config, str(tmp_path))
  again = configs.get_config(str(tmp_path / configs.RUN_CONFIG))
  assert again.to_dict() == config.to_dict()
  # Types too: a placeholder keeps its own (an override of it is parsed as before).
  kinds, saved = _types(config), _types(again)
  assert {k: v for k, v in saved.items() if k != "learning_rate"} == {
    k: v
    for k, v in kinds.items()
    if k != "learning_rate"  # imagenet's: a reference there
  }


def test_a_saved_config_holds_numpy_values_and_infinities_and_not_resume_step(tmp_path):
  config = configs.get_config("default")
  config.unlock()  # fields a user's config file may hold
  config.update(a_float=np.float32(0.5), an_int=np.int64(3), a_bool=np.bool_(True))
  config.max_unreadable_fraction = float("inf")
  config.mean = (1.5, np.float64(2.5), 3)
  config.resume_step = 2  # an instruction to one run
  config.model_kwargs.name = 'it\'s "quoted"'
  configs.save_run_config(config, str(tmp_path))
  again = configs.get_config(str(tmp_path / configs.RUN_CONFIG))
  assert (again.a_float, again.an_int, again.a_bool) == (0.5, 3, True)
  assert again.max_unreadable_fraction == float("inf") and again.mean == (1.5, 2.5, 3)
  assert again.resume_step is None and again.model_kwargs.name == 'it\'s "quoted"'
  assert configs.differences(config, str(tmp_path)) == []
  config.learning_rate = 0.5
  assert configs.differences(config, str(tmp_path)) == ["learning_rate: 0.1 -> 0.5"]
  config.model_kwargs.unlock()
  config.model_kwargs.thing = object()
  with pytest.raises(ValueError, match="config field 'thing': <object .*cannot be written"):
    configs.to_python(config)


def test_the_run_config_is_found_from_the_workdir_its_checkpoints_or_a_step(tmp_path):
  from involution_jax.weights import checkpoints

  assert configs._CHECKPOINTS == checkpoints.CHECKPOINT_SUBDIR
  run = tmp_path / "run_10:30"  # a ':' in a path is not a config's argument
  (run / "checkpoints" / "4").mkdir(parents=True)
  assert configs.run_config_of(str(run)) is None  # trained before config.py existed
  configs.save_run_config(configs.get_config("default", ["seed=7"]), str(run))
  path = str(run / configs.RUN_CONFIG)
  for weights in (run, run / "checkpoints", run / "checkpoints" / "4", f"{run}/"):
    assert configs.run_config_of(str(weights)) == path
  assert configs.get_config(path).seed == 7
  # Not a run's: a converted checkpoint beside a config.py of the user's own, or a file.
  (tmp_path / "converted" / "1").mkdir(parents=True)
  (tmp_path / configs.RUN_CONFIG).write_text("not a run's")
  assert configs.run_config_of(str(tmp_path / "converted")) is None
  assert configs.run_config_of(path) is None and configs.run_config_of("rednet50") is None
  # A workdir named "checkpoints" is a workdir: its own config, not its parent's.
  named = tmp_path / "runs" / "checkpoints"
  (named / "checkpoints" / "2").mkdir(parents=True)
  configs.save_run_config(configs.get_config("default", ["seed=9"]), str(named))
  assert configs.run_config_of(str(named)) == str(named / configs.RUN_CONFIG)
