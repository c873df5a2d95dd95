"""Image tasks: classification, segmentation, detection (RetinaNet)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from involution_jax.data import classification, coco, dense
from involution_jax.data.pipeline import Dataset
from involution_jax.models import detection, segmentation
from involution_jax.tasks.base import ServingInput
from involution_jax.tasks.common import (
  LossFn,
  apply_train,
  cross_entropy,
  model_info,
  sum_tree,
  top_classes,
)
from involution_jax.weights.info import ModelInfo


class Classification:
  name = "classification"
  train_metrics = ("accuracy",)
  input_dtype = jnp.float32
  input_key = "image"
  pretrained_into = None
  generates_text = False

  def dataset(self, config, split: str) -> Dataset:
    return classification.load_dataset(
      config.dataset, split, image_size=config.image_size, data_dir=config.data_dir
    )

  def preprocess(self, config) -> classification.Preprocess:
    return classification.Preprocess(
      config.image_size,
      tuple(config.mean),
      tuple(config.std),
      augment=config.augment,
      eval_crop=config.eval_crop,
      pad=config.get("augment_pad", 4),
    )

  def input_shape(self, config) -> tuple[int, int, int]:
    return (config.image_size, config.image_size, 3)

  def loss_fn(self, model: nn.Module, config) -> LossFn:
    def loss(variables, batch, rng):
      logits, batch_stats = apply_train(model, variables, batch["image"], rng)
      value = cross_entropy(logits, batch["label"], batch["valid"], config.label_smoothing)
      correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["valid"])
      return value, (batch_stats, {"accuracy": correct / jnp.maximum(jnp.sum(batch["valid"]), 1)})

    return loss

  def eval_fn(self, model: nn.Module) -> Callable[[dict, dict], dict]:
    def step(variables, batch):
      logits = model.apply(variables, batch["image"], train=False)
      labels, valid = batch["label"], batch["valid"]
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
      return dict(
        loss=jnp.sum(losses * valid),
        top1=jnp.sum((top5[:, 0] == labels) * valid),
        top5=jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * valid),
        count=jnp.sum(valid),
      )

    return step

  def summarize(self, outputs: Iterable[dict], dataset: Dataset) -> dict:
    totals = sum_tree(outputs)
    count = max(float(totals["count"]), 1.0)
    results = dict(
      loss=float(totals["loss"]) / count,
      accuracy=float(totals["top1"]) / count,
      count=int(totals["count"]),
    )
    if dataset.num_classes > 5:
      results["top5_accuracy"] = float(totals["top5"]) / count
    return results

  def model_info(self, config, dataset: Dataset) -> ModelInfo:
    return model_info(
      self.name,
      config,
      dataset,
      class_names=list(dataset.class_names),
      image_size=config.image_size,
      mean=list(config.mean),
      std=list(config.std),
      eval_crop=config.eval_crop,
    )

  def serving_input(self, info: ModelInfo) -> ServingInput:
    crop = 1.0 if info.eval_crop is None else info.eval_crop
    s = info.image_size
    if crop < 1:
      sized = f"the shorter side resized to round({s} / {crop:g}), the centre {s} x {s} cropped"
    else:
      sized = f"resized to {s} x {s} (the aspect not kept)"
    return ServingInput(
      "images",
      (s, s, 3),
      "float32",
      f"RGB pixels 0-255, {sized} (bilinear); then (pixel - mean) / std per channel",
      "logits (batch, classes): softmax for the classes' probabilities, in class_names' order",
    )

  def serving_fn(self, model: nn.Module):
    """The logits (N, num_classes)."""
    return lambda variables, x: model.apply(variables, x, train=False)

  def preprocess_from_info(self, info: ModelInfo) -> classification.Preprocess:
    crop = 1.0 if info.eval_crop is None else info.eval_crop
    return classification.Preprocess(info.image_size, info.mean, info.std, eval_crop=crop)

  def predict_fn(self, model: nn.Module):
    return lambda variables, x: jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)

  def prediction(self, probabilities, example, size, class_names, top_k) -> dict:
    """{"top": [{"class", "index", "probability"}, ...]}, the likeliest first."""
    return top_classes(probabilities, class_names, top_k)


def _pair(size) -> tuple[int, int]:
  """An image size, int (square) or (h, w), as (h, w)."""
  return (size, size) if isinstance(size, int) else tuple(size)


class DenseTask:
  """Shared by segmentation and detection: datasets, preprocessing, model info."""

  name = ""
  targets = ""  # what the data labels: dense.LABEL_MAP or dense.BOXES
  input_dtype = jnp.float32
  input_key = "image"
  pretrained_into = "backbone"
  generates_text = False

  def dataset(self, config, split: str) -> Dataset:
    return dense.load_dense_dataset(config, self.targets, split)

  def preprocess(self, config) -> dense.DensePreprocess:
    crop = config.get("crop_size")
    return dense.DensePreprocess(
      self.targets,
      _pair(config.image_size),
      tuple(config.mean),
      tuple(config.std),
      crop_size=tuple(crop) if crop else None,
      flip=config.get("flip", False),
      train_scale=tuple(config.get("train_scale", (1.0, 1.0))),
      max_objects=config.get("max_objects", 100),
    )

  def input_shape(self, config) -> tuple[int, int, int]:
    crop = config.get("crop_size")
    return (*(tuple(crop) if crop else _pair(config.image_size)), 3)

  def model_info(self, config, dataset: Dataset) -> ModelInfo:
    return model_info(
      self.name,
      config,
      dataset,
      class_names=list(dataset.class_names),
      image_size=list(_pair(config.image_size)),
      mean=list(config.mean),
      std=list(config.std),
    )

  def preprocess_from_info(self, info: ModelInfo) -> dense.DensePreprocess:
    return dense.DensePreprocess(self.targets, _pair(info.image_size), info.mean, info.std)

  def serving_input(self, info: ModelInfo) -> ServingInput:
    h, w = _pair(info.image_size)
    return ServingInput(
      "images",
      (h, w, 3),
      "float32",
      f"RGB pixels 0-255, resized (bilinear) by scale = min({h} / height, {w} / width), the "
      f"aspect kept; (pixel - mean) / std per channel; then padded with 0 below and to the "
      f"right to {h} x {w}",
      self.serving_returns,
    )

  def serving_fn(self, model: nn.Module):
    """What `predict_fn` returns: a class per pixel, or a fixed number of detections."""
    return self.predict_fn(model)


# What a detector's artifact returns, in words.
DETECTIONS = (
  "a fixed number of detections per image, the best first: boxes (x1, y1, x2, y2) in input "
  "pixels (divide by scale for the image's, and clip to it), scores, classes (indices into "
  "class_names) and valid (false: padding, ignore the row)"
)


def detections_in_image(out: dict, size: tuple[int, int], example: dict, class_names):
  """(index in `out`, detection) of each valid box of one image's outputs, in the pixels of
  the image of `size` (width, height), clipped to it (the model sees it padded below and
  to the right); a box wholly in the padding, of no size once clipped, is no detection.
  A detection: {"class", "index", "score", "box" (x1, y1, x2, y2)}."""
  w, h = size
  scale = float(example["scale"])
  found = []
  for i in np.flatnonzero(out["valid"]):
    x1, y1, x2, y2 = np.clip(np.asarray(out["boxes"][i], np.float64) / scale, 0, [w, h, w, h])
    if x2 > x1 and y2 > y1:
      c = int(out["classes"][i])
      box = [round(float(v), 2) for v in (x1, y1, x2, y2)]
      found.append(
        (
          int(i),
          {"class": class_names[c], "index": c, "score": float(out["scores"][i]), "box": box},
        )
      )
  return found


class Segmentation(DenseTask):
  name = "segmentation"
  targets = dense.LABEL_MAP
  serving_returns = (
    "a class index per input pixel (batch, H, W), in class_names' order; the image's own "
    "pixels are the top-left round(height * scale) x round(width * scale)"
  )
  train_metrics = ("pixel_accuracy",)

  def loss_fn(self, model, config) -> LossFn:
    def loss(variables, batch, rng):
      outputs, batch_stats = apply_train(model, variables, batch["image"], rng)
      labels = jnp.where(
        batch["valid"][:, None, None] > 0, batch["mask"], segmentation.IGNORE_LABEL
      )
      # A model with an auxiliary head (UPerNet) returns (logits, auxiliary logits).
      logits, *auxiliary = outputs if isinstance(outputs, tuple) else (outputs,)
      value = segmentation.segmentation_loss(logits, labels)
      for aux in auxiliary:
        value += config.get("auxiliary_loss_weight", 0.4) * segmentation.segmentation_loss(
          aux, labels
        )
      confusion = segmentation.confusion_matrix(logits, labels, logits.shape[-1])
      accuracy = jnp.trace(confusion) / jnp.maximum(jnp.sum(confusion), 1)
      return value, (batch_stats, {"pixel_accuracy": accuracy})

    return loss

  def eval_fn(self, model):
    def step(variables, batch):
      logits = model.apply(variables, batch["image"], train=False)
      labels = jnp.where(
        batch["valid"][:, None, None] > 0, batch["mask"], segmentation.IGNORE_LABEL
      )
      return dict(
        confusion=segmentation.confusion_matrix(logits, labels, logits.shape[-1]),
        count=jnp.sum(batch["valid"]),
      )

    return step

  def summarize(self, outputs, dataset):
    totals = sum_tree(outputs)
    results = segmentation.iou_from_confusion(totals["confusion"])
    results["per_class_iou"] = dict(zip(dataset.class_names, results.pop("iou")))
    results["count"] = int(totals["count"])
    return results

  def predict_fn(self, model):
    """A class per pixel of the input (logits resized to it, then their argmax)."""

    def predict(variables, x):
      logits = model.apply(variables, x, train=False)
      return jnp.argmax(segmentation.resize_bilinear(logits, x.shape[1:3]), axis=-1)

    return predict

  def prediction(self, labels, example, size, class_names, top_k) -> dict:
    """{"mask": (H, W) class indices at the image's size, "class_fractions"}."""
    w, h = size
    scale = float(example["scale"])
    region = labels[: max(1, round(h * scale)), : max(1, round(w * scale))]
    mask = np.asarray(Image.fromarray(region.astype(np.uint8)).resize((w, h), Image.NEAREST))
    counts = np.bincount(mask.reshape(-1), minlength=len(class_names))
    fractions = {class_names[c]: float(n / mask.size) for c, n in enumerate(counts) if n}
    return {"mask": mask, "class_fractions": fractions}


class Detection(DenseTask):
  name = "detection"
  targets = dense.BOXES
  serving_returns = DETECTIONS
  train_metrics = ("cls_loss", "box_loss")

  def _anchors(self, model, shape) -> jax.Array:
    return jnp.asarray(model.anchors(shape[:2]))

  def loss_fn(self, model, config) -> LossFn:
    anchors = self._anchors(model, self.input_shape(config))

    def loss(variables, batch, rng):
      (cls, reg), batch_stats = apply_train(model, variables, batch["image"], rng)
      classes = jnp.where(batch["valid"][:, None] > 0, batch["classes"], -1)
      value, parts = detection.retinanet_loss(cls, reg, anchors, batch["boxes"], classes)
      return value, (batch_stats, {k: parts[k] for k in self.train_metrics})

    return loss

  def eval_fn(self, model):
    detect = self.predict_fn(model)

    def step(variables, batch):
      detections = detect(variables, batch["image"])
      return dict(detections, example_valid=batch["valid"], scale=batch["scale"])

    return step

  def predict_fn(self, model):
    """Post-processed detections (boxes, scores, classes, valid), a fixed number per image."""

    def detect(variables, images):
      anchors = jnp.asarray(model.anchors(images.shape[1:3]))
      cls, reg = model.apply(variables, images, train=False)
      post = jax.vmap(lambda c, r: detection.postprocess(c, r, anchors, images.shape[1:3]))
      return post(cls, reg)

    return detect

  def prediction(self, out, example, size, class_names, top_k) -> dict:
    """{"detections": [{"class", "index", "score", "box" (x1, y1, x2, y2)}, ...]}."""
    found = detections_in_image(out, size, example, class_names)
    return {"detections": [d for _, d in found]}

  def summarize(self, outputs, dataset):
    detections, index = [], 0
    source = dataset.source
    image_ids = getattr(source, "image_ids", None)
    category_ids = getattr(source, "category_ids", None)
    for out in outputs:
      for b in range(len(out["example_valid"])):
        if out["example_valid"][b] and index < len(source):
          for box, score, cls, ok in zip(
            out["boxes"][b], out["scores"][b], out["classes"][b], out["valid"][b]
          ):
            if ok:
              x1, y1, x2, y2 = (float(v) / float(out["scale"][b]) for v in box)
              detections.append(
                dict(
                  image_id=int(image_ids[index]) if image_ids else index,
                  category_id=int(category_ids[cls]) if category_ids else int(cls),
                  bbox=[x1, y1, x2 - x1, y2 - y1],
                  score=float(score),
                )
              )
        index += 1
    truth = getattr(source, "coco", None) or coco.coco_ground_truth(dataset)
    results = coco.coco_evaluate(truth, detections)
    results["detections"] = len(detections)
    return results
