"""Two-stage detection: Faster R-CNN (boxes) and Mask R-CNN (boxes and instance masks).

The model computes its own losses from the ground truth (RPN, box head, mask
head: `models.rcnn`); evaluation is COCO box AP and, for Mask R-CNN, mask AP
(`COCOeval` with `iouType="segm"`, masks pasted into the original image at 0.5
and RLE-encoded).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from involution_jax.data import coco, dense
from involution_jax.models import rcnn
from involution_jax.tasks.common import LossFn
from involution_jax.tasks.images import DETECTIONS, DenseTask, detections_in_image

LOSS_TERMS = ("rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss", "mask_loss")


def _with_masks(config) -> bool:
  return config.model == "mask_rcnn"


class TwoStageDetection(DenseTask):
  name = "two_stage_detection"
  targets = dense.BOXES
  serving_returns = DETECTIONS + (
    "; Mask R-CNN adds masks (batch, detections, 28, 28): mask probabilities in each box's "
    "frame, to paste into the box and threshold at 0.5"
  )
  train_metrics = LOSS_TERMS  # mask_loss is 0 for Faster R-CNN

  def preprocess(self, config) -> dense.DensePreprocess:
    return dataclasses.replace(super().preprocess(config), instance_masks=_with_masks(config))

  def loss_fn(self, model, config) -> LossFn:
    masks = _with_masks(config)

    def loss(variables, batch, rng):
      classes = jnp.where(batch["valid"][:, None] > 0, batch["classes"], -1)
      targets = dict(boxes=batch["boxes"], classes=classes)
      if masks:
        targets["masks"] = batch["instance_masks"]
      dropout, sample = jax.random.split(rng)
      out, updates = model.apply(
        variables,
        batch["image"],
        train=True,
        targets=targets,
        mutable=["batch_stats"],
        rngs={"dropout": dropout, "sample": sample},
      )
      metrics = {k: out.get(k, jnp.zeros(())) for k in LOSS_TERMS}
      return out["loss"], (updates["batch_stats"], metrics)

    return loss

  def eval_fn(self, model):
    def step(variables, batch):
      out = model.apply(variables, batch["image"], train=False)
      return dict(out, example_valid=batch["valid"], scale=batch["scale"])

    return step

  def predict_fn(self, model):
    """The model post-processes: boxes, scores, classes, valid (and 28 x 28 mask
    probabilities)."""
    return lambda variables, images: model.apply(variables, images, train=False)

  def prediction(self, out, example, size, class_names, top_k) -> dict:
    """As RetinaNet's; Mask R-CNN adds each detection's "mask" (H, W) bool at the image's
    size."""
    w, h = size
    found = detections_in_image(out, (w, h), example, class_names)
    if "masks" in out and found:
      keep = [i for i, _ in found]
      boxes = out["boxes"][keep] / float(example["scale"])  # where the 28 x 28 mask lies
      pasted = np.asarray(rcnn.paste_masks(out["masks"][keep], boxes, (h, w))) >= 0.5
      for (_, d), plane in zip(found, pasted):
        d["mask"] = plane
    return {"detections": [d for _, d in found]}

  def summarize(self, outputs, dataset):
    """COCO box AP (and mask AP) over the outputs, in original-image pixels."""
    source = dataset.source
    image_ids = getattr(source, "image_ids", None)
    category_ids = getattr(source, "category_ids", None)
    truth = getattr(source, "coco", None) or coco.coco_ground_truth(dataset)
    sizes = {image["id"]: (image["height"], image["width"]) for image in _images(truth)}
    boxes, masks, index, with_masks = [], [], 0, False
    for out in outputs:
      with_masks = with_masks or "masks" in out
      for b in range(len(out["example_valid"])):
        if out["example_valid"][b] and index < len(source):
          image_id = int(image_ids[index]) if image_ids else index
          keep = np.flatnonzero(out["valid"][b])
          scale = float(out["scale"][b])
          found = out["boxes"][b][keep] / scale
          for k, box in zip(keep, found):
            x1, y1, x2, y2 = (float(v) for v in box)
            cls = int(out["classes"][b][k])
            boxes.append(
              dict(
                image_id=image_id,
                category_id=int(category_ids[cls]) if category_ids else cls,
                bbox=[x1, y1, x2 - x1, y2 - y1],
                score=float(out["scores"][b][k]),
              )
            )
          if "masks" in out and len(keep):
            pasted = rcnn.paste_masks(out["masks"][b][keep], found, sizes[image_id])
            for detection, plane in zip(boxes[-len(keep) :], np.asarray(pasted) >= 0.5):
              masks.append(dict(detection, segmentation=coco.encode_mask(plane)))
        index += 1
    results = coco.coco_evaluate(truth, boxes)
    if with_masks:
      segm = coco.coco_evaluate(truth, masks, "segm")
      results.update(mask_ap=segm["ap"], mask_ap50=segm["ap50"])
    results["detections"] = len(boxes)
    return results


def _images(truth) -> list[dict]:
  return truth["images"] if isinstance(truth, dict) else list(truth.imgs.values())
