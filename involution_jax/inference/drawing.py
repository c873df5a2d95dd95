"""Predictions drawn on images: class colours, segmentation masks, labelled boxes."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw


def palette(num_classes: int) -> np.ndarray:
  """A fixed, distinguishable RGB colour per class: (num_classes, 3) uint8."""
  colours = matplotlib.colormaps["tab20"].resampled(max(num_classes, 2))(np.arange(num_classes))
  return (colours[:, :3] * 255).astype(np.uint8)


def overlay_mask(
  image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.55
) -> np.ndarray:
  """image (H, W, 3) uint8 with each labelled pixel tinted by its class (255: untouched)."""
  colours = palette(num_classes)
  labelled = mask < num_classes
  tint = colours[np.where(labelled, mask, 0)].astype(np.float32)
  out = image.astype(np.float32)
  out[labelled] = (1 - alpha) * out[labelled] + alpha * tint[labelled]
  return out.round().astype(np.uint8)


def draw_boxes(
  image: np.ndarray, detections: Sequence[dict], num_classes: int | None = None
) -> np.ndarray:
  """image (H, W, 3) uint8 with [{"box", "class", "index", "score"}] drawn and labelled."""
  picture = Image.fromarray(image).convert("RGB")
  draw = ImageDraw.Draw(picture)
  colours = palette(max([d["index"] + 1 for d in detections] + [num_classes or 1]))
  for d in detections:
    colour = tuple(int(c) for c in colours[d["index"]])
    draw.rectangle(d["box"], outline=colour, width=max(1, min(picture.size) // 100))
    draw.text((d["box"][0] + 2, d["box"][1] + 1), f"{d['class']} {d['score']:.2f}", fill=colour)
  return np.asarray(picture)


def overlay_instances(image: np.ndarray, detections: Sequence[dict], alpha: float = 0.5):
  """image (H, W, 3) uint8 with each detection's "mask" (H, W) bool, if any, tinted by
  its class."""
  out = image.astype(np.float32)
  colours = palette(max([d["index"] + 1 for d in detections] + [1])).astype(np.float32)
  for d in detections:
    if "mask" in d:
      out[d["mask"]] = (1 - alpha) * out[d["mask"]] + alpha * colours[d["index"]]
  return out.round().astype(np.uint8)
