"""`Predictor`: a trained or converted model, ready to predict classes, masks or boxes.

    predictor = Predictor.load("runs/default")   # anything `weights.load_weights` reads
    results = predictor.predict(["digit7.png"])   # one dict per image

Weights: a training workdir or checkpoint folder, official `.pth` / `.pdparams`
weights, or a pretrained name. Images are prepared by the same function the task's
evaluation uses; the model is compiled once per batch shape (the last batch is
padded). Unreadable files are reported, the others still predicted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from involution_jax.data.classification import IMAGE_EXTENSIONS
from involution_jax.data.images import read_rgb
from involution_jax.host.console import progress
from involution_jax.models import detection, rcnn, segmentation
from involution_jax.weights import (
  ModelInfo,
  fitting_their_description,
  load_weights,
  model_from_info,
  preprocess_from_info,
)


def image_files(paths: Iterable[str]) -> list[str]:
  """Files as given, folders expanded (recursively, sorted) to their image files."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      for root, _, names in sorted(os.walk(path)):
        out += [
          os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    elif os.path.exists(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"no such image or folder: {path}")
  return out


def _read_error(path: str) -> str:
  try:
    read_rgb(path)
    return "unreadable image"
  except Exception as e:  # the reason to report
    return f"{type(e).__name__}: {e}"


def _forward(model, task: str):
  """The jitted per-batch prediction of a task."""
  if task == "classification":
    return jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False), axis=-1))
  if task == "segmentation":
    return jax.jit(
      lambda v, x: jnp.argmax(
        segmentation.resize_bilinear(model.apply(v, x, train=False), x.shape[1:3]), axis=-1
      )
    )

  if task == "two_stage_detection":  # the model post-processes: boxes (and 28 x 28 masks)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))

  def detect(v, x):
    cls, reg = model.apply(v, x, train=False)
    anchors = jnp.asarray(model.anchors(x.shape[1:3]))
    return jax.vmap(lambda c, r: detection.postprocess(c, r, anchors, x.shape[1:3]))(cls, reg)

  return jax.jit(detect)


def _image_size(path: str) -> tuple[int, int]:
  """(width, height) of an image file."""
  with Image.open(path) as image:
    return image.size


class Predictor:
  """A model with its weights, input preparation and class names, ready to predict."""

  def __init__(self, variables: dict, info: ModelInfo, batch_size: int = 32, quiet: bool = False):
    self.info, self.batch_size, self.quiet = info, batch_size, quiet
    self.task = info.task
    self.preprocess = preprocess_from_info(info)
    self.class_names = info.names
    self.variables = jax.device_put(variables)
    self._predict = _forward(model_from_info(info), self.task)

  @classmethod
  def load(cls, weights: str, batch_size: int = 32, quiet: bool = False) -> Predictor:
    """`weights`: anything `weights.load_weights` reads; `quiet`: no progress bars."""
    return cls(*load_weights(weights, quiet=quiet), batch_size=batch_size, quiet=quiet)

  def run(self, images: np.ndarray):
    """Prepared images (N, H, W, 3) -> the task's outputs for each, in batches of
    `batch_size`, or of the power of two >= N when that is smaller: memory follows the
    images, not the flag, and a predictor compiles at most log2(batch_size) + 1 sizes."""
    outs = []
    batch = min(self.batch_size, 1 << max(len(images) - 1, 0).bit_length())
    starts = range(0, len(images), batch)
    for start in progress(starts, desc="predict", unit="batch", leave=False, quiet=self.quiet):
      chunk = images[start : start + batch]
      padded = np.zeros((batch, *chunk.shape[1:]), np.float32)
      padded[: len(chunk)] = chunk
      with fitting_their_description():
        out = jax.device_get(self._predict(self.variables, jnp.asarray(padded)))
      outs.append(jax.tree.map(lambda a: a[: len(chunk)], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs) if outs else None

  def predict(self, paths: Sequence[str], top_k: int = 5) -> list[dict]:
    """One dict per path: {"path", "error"} or the task's result.

    classification: "top" [{"class", "index", "probability"}]; segmentation:
    "mask" (H, W) class indices at the image's size and "class_fractions";
    detection: "detections" [{"class", "index", "score", "box" (x1, y1, x2, y2)}].
    """
    examples = [
      self.preprocess.eval({"path": p, "label": 0})
      for p in progress(paths, desc="read", unit="image", leave=False, quiet=self.quiet)
    ]
    readable = [i for i, e in enumerate(examples) if e["valid"]]
    results = [{"path": p, "error": _read_error(p)} for p in paths]
    if not readable:
      return results
    outputs = self.run(np.stack([examples[i]["image"] for i in readable]))
    for row, i in enumerate(readable):
      out = jax.tree.map(lambda a: a[row], outputs)
      results[i] = {
        "path": paths[i],
        **getattr(self, f"_{self.task}")(out, paths[i], top_k, examples[i]),
      }
    return results

  def classify(self, paths: Sequence[str], top_k: int = 5) -> list[dict]:
    return self.predict(paths, top_k)

  def _classification(self, probabilities, path, top_k, example) -> dict:
    best = np.argsort(-probabilities)[: min(top_k, len(self.class_names))]
    return {
      "top": [
        {"class": self.class_names[j], "index": int(j), "probability": float(probabilities[j])}
        for j in best
      ]
    }

  def _segmentation(self, labels, path, top_k, example) -> dict:
    w, h = _image_size(path)
    scale = float(example["scale"])
    region = labels[: max(1, round(h * scale)), : max(1, round(w * scale))]
    mask = np.asarray(Image.fromarray(region.astype(np.uint8)).resize((w, h), Image.NEAREST))
    counts = np.bincount(mask.reshape(-1), minlength=len(self.class_names))
    return {
      "mask": mask,
      "class_fractions": {
        self.class_names[c]: float(n / mask.size) for c, n in enumerate(counts) if n
      },
    }

  def _boxes(self, out, size: tuple[int, int], example) -> list[tuple[int, dict]]:
    """(index in `out`, detection) of each valid box, in the pixels of the image of `size`
    (width, height), clipped to it (the model sees it padded below and to the right); a
    box wholly in the padding, of no size once clipped, is no detection."""
    w, h = size
    scale = float(example["scale"])
    found = []
    for i in np.flatnonzero(out["valid"]):
      x1, y1, x2, y2 = np.clip(np.asarray(out["boxes"][i], np.float64) / scale, 0, [w, h, w, h])
      if x2 > x1 and y2 > y1:
        c = int(out["classes"][i])
        found.append(
          (
            int(i),
            {
              "class": self.class_names[c],
              "index": c,
              "score": float(out["scores"][i]),
              "box": [round(float(v), 2) for v in (x1, y1, x2, y2)],
            },
          )
        )
    return found

  def _detection(self, out, path, top_k, example) -> dict:
    return {"detections": [d for _, d in self._boxes(out, _image_size(path), example)]}

  def _two_stage_detection(self, out, path, top_k, example) -> dict:
    """As detection; Mask R-CNN adds each detection's "mask" (H, W) bool at the image's size."""
    w, h = _image_size(path)
    found = self._boxes(out, (w, h), example)
    if "masks" in out and found:
      keep = [i for i, _ in found]
      boxes = out["boxes"][keep] / float(example["scale"])  # where the 28 x 28 mask lies
      pasted = np.asarray(rcnn.paste_masks(out["masks"][keep], boxes, (h, w))) >= 0.5
      for (_, d), plane in zip(found, pasted):
        d["mask"] = plane
    return {"detections": [d for _, d in found]}
