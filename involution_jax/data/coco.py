"""COCO: boxes and instance masks from the official layout, ground truth and AP (pycocotools).

Masks are polygons or RLE in the annotations; `decode_segmentation` turns either
into an (H, W) uint8 mask. `coco_ground_truth` builds COCO-format ground truth of
any detection dataset (digit scenes), `coco_evaluate` scores box or mask
detections with `COCOeval`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
from PIL import Image


def _pycocotools():
  try:
    from pycocotools import mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
  except ImportError as e:
    raise ImportError(
      "COCO needs pycocotools: pip install 'pycocotools>=2.0.8' "
      "(or, in the clone: pip install -e '.[coco]')"
    ) from e
  return mask, COCO, COCOeval


def _quiet() -> contextlib.AbstractContextManager:
  """pycocotools prints progress; keep it off the terminal."""
  return contextlib.redirect_stdout(io.StringIO())


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
  """A COCO `segmentation` (polygons, uncompressed or compressed RLE) -> (H, W) uint8."""
  mask_api, _, _ = _pycocotools()
  if isinstance(segmentation, list):  # polygons of one object
    rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
    rle = mask_api.frPyObjects(segmentation, height, width)
  else:
    rle = segmentation
  return mask_api.decode(rle).astype(np.uint8)


def encode_mask(mask: np.ndarray) -> dict:
  """(H, W) binary mask -> compressed RLE with a str `counts` (JSON-safe)."""
  mask_api, _, _ = _pycocotools()
  rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
  return dict(size=[int(v) for v in rle["size"]], counts=rle["counts"].decode("ascii"))


class CocoSource:
  """COCO from `root/annotations/instances_<split>.json` and images in `root/<split>/`.

  Categories map to 0..C-1 in id order; crowd objects are left out. Record i:
  {"path", "boxes" (G, 4), "classes" (G,) with -1 padding, "segmentations" (the
  kept objects' COCO segmentations), "height", "width"}. `coco` is the
  pycocotools index, for evaluation; `image_ids[i]` the id of record i.
  """

  def __init__(self, root: str, split: str, max_objects: int = 100):
    _, COCO, _ = _pycocotools()
    annotations = os.path.join(root, "annotations", f"instances_{split}.json")
    if not os.path.exists(annotations):
      raise FileNotFoundError(
        f"COCO annotations not found: {annotations} (expected "
        f"{root}/annotations/instances_<split>.json and images in "
        f"{root}/<split>/, e.g. split 'train2017'); set config.data_dir"
      )
    with _quiet():
      self.coco = COCO(annotations)
    self.category_ids = sorted(self.coco.getCatIds())
    index = {c: k for k, c in enumerate(self.category_ids)}
    self.image_ids = sorted(self.coco.getImgIds())
    self.records = []
    for image_id in self.image_ids:
      info = self.coco.loadImgs(image_id)[0]
      anns = [
        a
        for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
        if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
      ][:max_objects]
      boxes = np.zeros((max_objects, 4), np.float32)
      classes = np.full(max_objects, -1, np.int32)
      for k, a in enumerate(anns):
        x, y, w, h = a["bbox"]
        boxes[k] = (x, y, x + w, y + h)
        classes[k] = index[a["category_id"]]
      self.records.append(
        {
          "path": os.path.join(root, split, info["file_name"]),
          "boxes": boxes,
          "classes": classes,
          "segmentations": [a.get("segmentation") for a in anns],
          "height": int(info["height"]),
          "width": int(info["width"]),
        }
      )
    self.class_names = tuple(self.coco.loadCats(c)[0]["name"] for c in self.category_ids)

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i: int) -> dict:
    return self.records[i]


def coco_ground_truth(dataset) -> dict:
  """COCO-format ground truth of a detection dataset (image id = index); with the
  records' "instance_masks", each object's mask too (RLE)."""
  images, annotations = [], []
  for i in range(len(dataset.source)):
    record = dataset.source[i]
    h, w = (
      np.asarray(record["image"]).shape[:2]
      if "image" in record
      else Image.open(record["path"]).size[::-1]
    )
    images.append({"id": i, "height": int(h), "width": int(w)})
    masks = record.get("instance_masks")
    for k, (box, cls) in enumerate(zip(record["boxes"], record["classes"])):
      if cls >= 0:
        x1, y1, x2, y2 = (float(v) for v in box)
        annotation = {
          "id": len(annotations) + 1,
          "image_id": i,
          "category_id": int(cls),
          "bbox": [x1, y1, x2 - x1, y2 - y1],
          "area": (x2 - x1) * (y2 - y1),
          "iscrowd": 0,
        }
        if masks is not None:
          annotation["segmentation"] = encode_mask(masks[k])
          annotation["area"] = float(np.sum(masks[k] > 0))
        annotations.append(annotation)
  categories = [{"id": k, "name": n} for k, n in enumerate(dataset.class_names)]
  return {"images": images, "annotations": annotations, "categories": categories}


def coco_evaluate(ground_truth, detections: list[dict], iou_type: str = "bbox") -> dict:
  """AP (0.5:0.95) and AP50 with pycocotools' COCOeval.

  ground_truth: a COCO-format dict or a pycocotools `COCO`; detections:
  [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}], with
  "segmentation" (RLE) for `iou_type="segm"`.
  """
  if iou_type not in ("bbox", "segm"):
    raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
  _, COCO, COCOeval = _pycocotools()
  with _quiet():
    if isinstance(ground_truth, dict):
      coco = COCO()
      coco.dataset = json.loads(json.dumps(ground_truth))
      coco.createIndex()
    else:
      coco = ground_truth
    if not detections:
      return dict(ap=0.0, ap50=0.0)
    results = coco.loadRes(detections)
    evaluator = COCOeval(coco, results, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return dict(ap=float(max(evaluator.stats[0], 0)), ap50=float(max(evaluator.stats[1], 0)))
