"""Instance masks: digit scenes, COCO polygons and RLE, preprocessing, pasting, mask AP,
and the two-stage task end to end."""

import json

import numpy as np
import pytest
from helpers import coco_ap_of_checkpoint, load_config, metrics_on_one_batch, one_device_mesh
from PIL import Image

from involution_jax.data import coco, dense
from involution_jax.models import rcnn
from involution_jax.training.trainer import train_and_evaluate

MEAN_STD = dict(mean=(0.0,) * 3, std=(1.0,) * 3)


def _tight_box(plane):
  rows, cols = np.nonzero(plane)
  return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_digit_scenes_hold_each_digits_own_mask():
  source = dense.digit_scenes(dense.BOXES, "validation", 8, canvas=48, sizes=(12, 20)).source
  for i in range(len(source)):
    record = source[i]
    planes, classes = record["instance_masks"], record["classes"]
    assert planes.shape == (len(classes), 48, 48) and planes.dtype == np.uint8
    rebuilt = np.zeros((48, 48), np.uint8)
    for k in np.flatnonzero(classes >= 0):
      np.testing.assert_array_equal(_tight_box(planes[k]), record["boxes"][k])
      rebuilt[planes[k] > 0] = 1 + classes[k]
    assert not planes[classes < 0].any()
    np.testing.assert_array_equal(rebuilt, record["mask"])  # the semantic mask, split up


def test_preprocess_moves_instance_masks_with_their_boxes():
  source = dense.digit_scenes(dense.BOXES, "train", 16, canvas=48, sizes=(12, 20)).source
  prep = dense.DensePreprocess(
    dense.BOXES,
    (48, 48),
    **MEAN_STD,
    crop_size=(40, 40),
    flip=True,
    train_scale=(0.8, 1.3),
    max_objects=4,
    instance_masks=True,
  )
  rng = np.random.default_rng(0)
  checked = 0
  for i in range(len(source)):
    out = prep.train(source[i], rng)
    assert out["instance_masks"].shape == (4, 40, 40)
    for k in range(4):
      plane, box = out["instance_masks"][k], out["boxes"][k]
      if out["classes"][k] < 0:
        assert not plane.any()
      elif plane.any():  # nearest resizing moves an edge by at most one scaled pixel + 0.5
        tight = np.array(_tight_box(plane))
        assert np.all(tight[:2] >= box[:2] - 2) and np.all(tight[2:] <= box[2:] + 2)
        if box[0] > 0 and box[1] > 0 and box[2] < 40 and box[3] < 40:  # not cut by the crop
          np.testing.assert_allclose(tight, box, atol=2.0)
          checked += 1
  assert checked >= 10


def test_coco_polygons_and_rle_decode(tmp_path, pycocotools):
  (tmp_path / "annotations").mkdir()
  (tmp_path / "val2017").mkdir()
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "val2017" / "1.jpg")
  square = np.zeros((20, 30), np.uint8)
  square[5:11, 15:21] = 1
  # Uncompressed RLE: run lengths of the column-major mask, starting with zeros.
  flat = square.flatten(order="F")
  changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
  counts = np.diff(np.concatenate([[0], changes])).tolist()
  anns = [
    dict(
      id=1,
      image_id=1,
      category_id=3,
      bbox=[2, 3, 10, 8],
      area=80,
      iscrowd=0,
      segmentation=[[2, 3, 12, 3, 12, 11, 2, 11]],
    ),
    dict(
      id=2,
      image_id=1,
      category_id=5,
      bbox=[15, 5, 6, 6],
      area=36,
      iscrowd=0,
      segmentation={"size": [20, 30], "counts": counts},
    ),
  ]
  data = dict(
    images=[dict(id=1, file_name="1.jpg", height=20, width=30)],
    annotations=anns,
    categories=[dict(id=3, name="a"), dict(id=5, name="b")],
  )
  (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
  source = coco.CocoSource(str(tmp_path), "val2017", max_objects=3)
  record = source[0]
  polygon = coco.decode_segmentation(record["segmentations"][0], 20, 30)
  assert polygon.shape == (20, 30) and polygon[3:11, 2:12].all() and polygon.sum() <= 11 * 9
  np.testing.assert_array_equal(
    coco.decode_segmentation(record["segmentations"][1], 20, 30), square
  )
  compressed = coco.encode_mask(square)
  np.testing.assert_array_equal(coco.decode_segmentation(compressed, 20, 30), square)
  prep = dense.DensePreprocess(
    dense.BOXES, (40, 60), **MEAN_STD, max_objects=3, instance_masks=True
  )
  out = prep.eval(record)  # scaled x2
  assert out["instance_masks"].shape == (3, 40, 60)
  np.testing.assert_array_equal(out["instance_masks"][1][10:22, 30:42], 1)
  assert out["instance_masks"][1].sum() == 144 and not out["instance_masks"][2].any()


def _paste_reference(torch, masks, boxes, hw):
  """mmdet's `_do_paste_mask`: grid_sample of the mask over the image (align_corners=False)."""
  masks = torch.from_numpy(masks)[:, None]
  x0, y0, x1, y1 = (torch.from_numpy(boxes[:, i : i + 1]) for i in range(4))
  img_y = (torch.arange(hw[0], dtype=torch.float32) + 0.5)[None]
  img_x = (torch.arange(hw[1], dtype=torch.float32) + 0.5)[None]
  img_y = (img_y - y0) / (y1 - y0) * 2 - 1
  img_x = (img_x - x0) / (x1 - x0) * 2 - 1
  gx = img_x[:, None, :].expand(len(boxes), hw[0], hw[1])
  gy = img_y[:, :, None].expand(len(boxes), hw[0], hw[1])
  grid = torch.stack([gx, gy], dim=3)
  return torch.nn.functional.grid_sample(masks, grid, align_corners=False)[:, 0].numpy()


def test_pasting_matches_mmdet(torch):
  rng = np.random.default_rng(0)
  masks = rng.uniform(size=(5, 28, 28)).astype(np.float32)
  boxes = np.array(
    [[3, 4, 20, 30], [-5, -3, 12, 9], [10.5, 2.25, 47, 40.5], [0, 0, 48, 36], [30, 20, 60, 50]],
    np.float32,
  )
  got = np.asarray(rcnn.paste_masks(masks, boxes, (36, 48)))
  np.testing.assert_allclose(got, _paste_reference(torch, masks, boxes, (36, 48)), atol=1e-5)


def test_mask_ap_is_one_for_the_ground_truth(pycocotools):
  ds = dense.digit_scenes(dense.BOXES, "validation", 6, canvas=48, sizes=(12, 20))
  truth = coco.coco_ground_truth(ds)
  assert all("segmentation" in a for a in truth["annotations"])
  perfect = [
    dict(
      image_id=a["image_id"],
      category_id=a["category_id"],
      bbox=a["bbox"],
      score=1.0,
      segmentation=a["segmentation"],
    )
    for a in truth["annotations"]
  ]
  assert coco.coco_evaluate(truth, perfect, "segm") == pytest.approx(dict(ap=1.0, ap50=1.0))
  eroded = []
  for d in perfect:
    plane = coco.decode_segmentation(d["segmentation"], 48, 48)
    plane[: int(d["bbox"][1] + d["bbox"][3] / 2)] = 0  # the top half gone
    eroded.append(dict(d, segmentation=coco.encode_mask(plane)))
  assert coco.coco_evaluate(truth, eroded, "segm")["ap"] < 0.5
  with pytest.raises(ValueError, match="iou_type must be 'bbox' or 'segm', got 'keypoints'"):
    coco.coco_evaluate(truth, perfect, "keypoints")


SMALL = dict(
  num_train_scenes=64,
  num_eval_scenes=16,
  batch_size=8,
  eval_batch_size=16,
  num_train_steps=2,
  log_every_steps=1,
  checkpoint_every_steps=2,
  warmup_epochs=0.0,
)


# Over 20 s: Mask R-CNN's train step compiles (shared with the AP run below). The other
# variants are not trained here: tests/test_rcnn.py trains the involution neck and heads
# (the paper's, every loss term falls) and checks the softmax mask head's gradient.
def test_steps_on_a_batch_lower_the_loss():
  config = load_config("digitscenes_rcnn", "mask_conv", learning_rate=0.005)
  losses = [m["loss"] for m in metrics_on_one_batch(config, steps=10, global_batch=8)]
  assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


# Over 20 s: Mask R-CNN's train and evaluation programs compile (the largest here), and its
# forward pass again for the reference.
def test_mask_rcnn_trains_and_reports_box_and_mask_ap(tmp_path, pycocotools):
  config = load_config("digitscenes_rcnn", "mask_conv", **SMALL)
  metrics = train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh())
  assert {"train_rpn_cls_loss", "train_mask_loss"} <= set(metrics)
  assert metrics["steps"] == 2 and np.isfinite(metrics["train_loss"])
  reference = coco_ap_of_checkpoint(str(tmp_path), config)
  assert reference["detections"] > 0  # 2 steps: class scores near 1/11, over the threshold
  assert metrics["test_detections"] == reference["detections"]
  for name in ("ap", "ap50", "mask_ap", "mask_ap50"):
    assert metrics[f"test_{name}"] == pytest.approx(reference[name], rel=1e-6, abs=1e-12), name
