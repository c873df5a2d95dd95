"""ModelInfo: one type for what a checkpoint records of its model; old checkpoints still load."""

import dataclasses
import json
import os

import numpy as np
import pytest
from helpers import load_config, save_random_checkpoint, tiny_digits_config

from involution_jax.inference.predictor import Predictor
from involution_jax.tasks import get_task
from involution_jax.training import resume
from involution_jax.weights import ModelInfo, checkpoints
from involution_jax.weights.info import INFO_VERSION, UnreadableInfo


def _info_of(config) -> ModelInfo:
  task = get_task(config)
  return task.model_info(config, task.dataset(config, "train"))


# A text classifier's, as its task records it (its data is a download).
REVIEWS = ModelInfo(
  "sequence_classifier",
  2,
  task="text_classification",
  model_kwargs={"width": 8, "kernel_sizes": [3, 3]},
  class_names=["fresh", "rotten"],
  context=64,
  vocabulary=["the", "a"],
  vocabulary_sha256="ab" * 32,
)


@pytest.mark.parametrize(
  "name", ["default", "digitscenes_seg", "digitscenes_rcnn", "charlm", "reviews"]
)
def test_every_task_info_survives_its_json_unchanged(name):
  if name == "reviews":
    info = REVIEWS
  else:
    info = _info_of(tiny_digits_config() if name == "default" else load_config(name))
  record = json.loads(json.dumps(info.to_json()))  # what the checkpoint's file holds
  assert record["version"] == INFO_VERSION and record["task"] == info.task
  assert None not in record.values()  # fields a task does not record are left out
  assert ModelInfo.from_json(record) == info


def _rewrite(path, record: dict) -> None:
  (path / "1" / "model" / "metadata").write_text(json.dumps(record))


def test_a_checkpoint_written_before_the_type_loads_and_predicts_alike(tmp_path):
  """The layout before ModelInfo: a plain dict, no version, no task for a classifier."""
  model, variables, info = save_random_checkpoint(str(tmp_path / "new"))
  save_random_checkpoint(str(tmp_path / "old"))
  old = {k: v for k, v in info.to_json().items() if k not in ("version", "task")}
  _rewrite(tmp_path / "old", old)
  _, loaded = checkpoints.load_for_inference(str(tmp_path / "old"))
  assert loaded == info and loaded.task == "classification"
  image = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
  new_out = Predictor.load(str(tmp_path / "new")).run(image)
  np.testing.assert_array_equal(Predictor.load(str(tmp_path / "old")).run(image), new_out)


def test_an_unreadable_info_is_named_not_guessed(tmp_path):
  _, _, info = save_random_checkpoint(str(tmp_path / "run"))
  record = info.to_json()
  newer = dict(record, version=INFO_VERSION + 1)
  with pytest.raises(ValueError, match=f"info version {INFO_VERSION + 1}.*upgrade it"):
    ModelInfo.from_json(newer, "run/1")
  with pytest.raises(ValueError, match=r"unreadably: unknown fields \['widht'\]"):
    ModelInfo.from_json(dict(record, widht=3))
  with pytest.raises(ValueError, match=r"unreadably: no \['num_classes'\]"):
    ModelInfo.from_json({k: v for k, v in record.items() if k != "num_classes"})
  # In a workdir: the newest step is intact, only newer: said, never passed over for an
  # older step (prediction) nor set aside as damaged (a resume).
  variables = checkpoints.load_for_inference(str(tmp_path / "run"))[0]
  mngr = checkpoints.manager(str(tmp_path / "run"), async_save=False)
  checkpoints.save(mngr, 2, variables=variables, model_info=info)
  mngr.close()
  (tmp_path / "run" / "2" / "model" / "metadata").write_text(json.dumps(newer))
  said = f"/2 records its model in info version {INFO_VERSION + 1}"
  with pytest.raises(UnreadableInfo, match=said):
    checkpoints.load_for_inference(str(tmp_path / "run"))
  root = str(tmp_path / "run")
  with pytest.raises(UnreadableInfo, match=said):  # a resume into another model's shapes
    resume.check_same_model(root, 2, {"params": {}}, info, root)
  assert sorted(os.listdir(tmp_path / "run")) == ["1", "2"]


def test_lists_and_tuples_make_the_same_info():
  listed = ModelInfo("rednet", 2, class_names=["a", "b"], image_size=[4, 6], mean=[1, 2, 3])
  assert listed == ModelInfo("rednet", 2, class_names=("a", "b"), image_size=(4, 6), mean=(1, 2, 3))
  assert listed.names == ["a", "b"] and ModelInfo("rednet", 3).names == ["0", "1", "2"]
  with pytest.raises(dataclasses.FrozenInstanceError):
    listed.model = "other"
  # A dict in the checkpoint layout is taken where an info is (code written before it).
  assert ModelInfo.of(listed.to_json()) == listed and ModelInfo.of(listed) is listed
