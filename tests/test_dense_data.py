"""Dense data: digit scenes, Cityscapes and COCO folders, preprocessing, COCO AP."""

import json

import chex
import numpy as np
import pytest
from PIL import Image

from involution_jax.data import coco, dense, pipeline

MEAN_STD = dict(mean=(0.0,) * 3, std=(1.0,) * 3)


def test_digit_scenes_are_deterministic_and_masks_match_boxes():
  scenes = dense.DigitScenes("train", 50, canvas=48, seed=3, sizes=(12, 20))
  again = dense.DigitScenes("train", 50, canvas=48, seed=3, sizes=(12, 20))
  other = dense.DigitScenes("train", 50, canvas=48, seed=4, sizes=(12, 20))
  assert not np.array_equal(scenes[0]["image"], other[0]["image"])
  counts = []
  for i in range(50):
    a, b = scenes[i], again[i]
    chex.assert_trees_all_equal(a, b)
    chex.assert_shape([a["image"], a["mask"]], [(48, 48, 3), (48, 48)])
    objects = a["classes"] >= 0
    counts.append(objects.sum())
    covered = np.zeros((48, 48), bool)
    for (x1, y1, x2, y2), cls in zip(a["boxes"][objects].astype(int), a["classes"][objects]):
      inside = a["mask"][y1:y2, x1:x2]
      assert set(np.unique(inside)) <= {0, cls + 1}
      # The box is tight: every border row / column holds a pixel of the digit.
      assert (inside[0] == cls + 1).any() and (inside[-1] == cls + 1).any()
      assert (inside[:, 0] == cls + 1).any() and (inside[:, -1] == cls + 1).any()
      covered[y1:y2, x1:x2] = True
    assert not a["mask"][~covered].any()  # no digit pixel outside every box
  assert min(counts) >= 1 and max(counts) <= 4


def test_validation_scenes_use_held_out_digits():
  train = dense.DigitScenes("train", 1, sizes=(8, 8))
  valid = dense.DigitScenes("validation", 1, sizes=(8, 8))
  train_digits = {d.tobytes() for d in train.digits}
  held_out = sum(d.tobytes() in train_digits for d in valid.digits)
  assert len(valid.digits) == 360 and held_out < 5  # a few digits repeat pixel for pixel
  assert len(train.digits) == 1437


def test_preprocess_detection_scales_flips_and_pads():
  image = np.zeros((30, 60, 3), np.uint8)
  image[5:15, 10:20] = 255
  record = {
    "image": image,
    "boxes": np.array([[10, 5, 20, 15], [0, 0, 0, 0]], np.float32),
    "classes": np.array([3, -1], np.int32),
  }
  prep = dense.DensePreprocess(dense.BOXES, (40, 40), **MEAN_STD, flip=True, max_objects=2)
  out = prep.eval(record)  # 60 x 30 -> 40 x 20, padded below
  np.testing.assert_allclose(out["boxes"][0], np.array([10, 5, 20, 15]) * 40 / 60, atol=1e-4)
  assert out["scale"] == pytest.approx(40 / 60) and list(out["classes"]) == [3, -1]
  rng = np.random.default_rng(0)
  flipped = [prep.train(record, rng) for _ in range(8)]
  x1s = {round(float(f["boxes"][0, 0]), 3) for f in flipped}
  assert x1s == {round(10 * 40 / 60, 3), round(40 - 20 * 40 / 60, 3)}  # both ways seen
  for f in flipped:  # the box still frames the white square
    x1, y1, x2, y2 = (int(round(v)) for v in f["boxes"][0])
    assert f["image"][y1:y2, x1:x2].mean() > 200


def test_preprocess_segmentation_crops_masks_with_the_image():
  image = np.zeros((40, 40, 3), np.uint8)
  mask = np.zeros((40, 40), np.uint8)
  image[:, 20:] = 200
  mask[:, 20:] = 1
  prep = dense.DensePreprocess(
    dense.LABEL_MAP, (40, 40), **MEAN_STD, crop_size=(24, 24), flip=True, train_scale=(0.5, 1.5)
  )
  rng = np.random.default_rng(0)
  for _ in range(10):
    out = prep.train({"image": image, "mask": mask}, rng)
    chex.assert_shape([out["image"], out["mask"]], [(24, 24, 3), (24, 24)])
    labelled = out["mask"] != dense.IGNORE
    bright = out["image"][..., 0] > 100
    # Nearest resampling of the mask vs bilinear of the image: agree away from the edge.
    agree = (bright == (out["mask"] == 1)) | ~labelled
    assert agree.mean() > 0.9
  blank = prep.blank()
  assert blank["valid"] == 0 and (blank["mask"] == dense.IGNORE).all()


def _cityscapes(root):
  for split in ("train", "val"):
    for city in ("aachen", "bonn"):
      (root / "leftImg8bit" / split / city).mkdir(parents=True)
      (root / "gtFine" / split / city).mkdir(parents=True)
      for i in range(2):
        stem = f"{city}_00000{i}_000019"
        Image.fromarray(np.full((16, 32, 3), 60 * i, np.uint8)).save(
          root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        )
        labels = np.full((16, 32), 255, np.uint8)
        labels[:8] = 0
        labels[8:, :16] = 13
        Image.fromarray(labels).save(
          root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        )


def test_cityscapes_layout(tmp_path):
  _cityscapes(tmp_path)
  ds = dense.cityscapes(str(tmp_path), "val")
  assert len(ds.source) == 4 and ds.num_classes == 19 and ds.class_names[13] == "car"
  prep = dense.DensePreprocess(dense.LABEL_MAP, (16, 32), **MEAN_STD)
  batch = next(iter(pipeline.eval_batches(ds, prep, global_batch=4)))
  assert batch["mask"].shape == (4, 16, 32)
  assert set(np.unique(batch["mask"])) == {0, 13, 255}
  with pytest.raises(FileNotFoundError, match="leftImg8bit/test"):
    dense.cityscapes(str(tmp_path), "test")


def _coco(root):
  (root / "annotations").mkdir(parents=True)
  (root / "val2017").mkdir()
  images, annotations = [], []
  for image_id in (7, 3):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "val2017" / f"{image_id}.jpg")
    images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 20, "width": 30})
  annotations += [
    {"id": 1, "image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 1, "bbox": [15, 5, 6, 6], "area": 36, "iscrowd": 0},
    {"id": 3, "image_id": 3, "category_id": 18, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
  ]
  categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
  (root / "annotations" / "instances_val2017.json").write_text(
    json.dumps({"images": images, "annotations": annotations, "categories": categories})
  )


def test_coco_layout_and_ap_of_perfect_detections(tmp_path, pycocotools):
  _coco(tmp_path)
  source = coco.CocoSource(str(tmp_path), "val2017", max_objects=3)
  assert source.image_ids == [3, 7] and source.class_names == ("person", "dog")
  first, second = source[0], source[1]
  assert list(first["classes"]) == [-1, -1, -1]  # crowd boxes are left out
  np.testing.assert_allclose(second["boxes"][:2], [[2, 3, 12, 11], [15, 5, 21, 11]])
  assert list(second["classes"][:2]) == [1, 0]
  perfect = [
    {"image_id": 7, "category_id": 18, "bbox": [2, 3, 10, 8], "score": 0.9},
    {"image_id": 7, "category_id": 1, "bbox": [15, 5, 6, 6], "score": 0.8},
  ]
  assert coco.coco_evaluate(source.coco, perfect) == pytest.approx(dict(ap=1.0, ap50=1.0))
  shifted = [dict(d, bbox=[d["bbox"][0] + 4, *d["bbox"][1:]]) for d in perfect]
  assert coco.coco_evaluate(source.coco, shifted)["ap"] < 0.5
  with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
    coco.CocoSource(str(tmp_path), "train2017")


def test_ground_truth_of_digit_scenes_scores_itself_perfectly(pycocotools):
  ds = dense.digit_scenes(dense.BOXES, "validation", 6, canvas=48, sizes=(12, 20))
  truth = coco.coco_ground_truth(ds)
  detections = [
    {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
    for a in truth["annotations"]
  ]
  assert coco.coco_evaluate(truth, detections) == pytest.approx(dict(ap=1.0, ap50=1.0))
