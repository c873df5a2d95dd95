"""Predictions drawn on images: class colours, segmentation masks with a legend of their
classes, boxes labelled with their class and score."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# tab20's ten strong colours, then its ten light ones: neighbouring classes differ most.
_TAB20_ORDER = [*range(0, 20, 2), *range(1, 20, 2)]
LEGEND_ROW, SWATCH, MARGIN = 14, 10, 4  # pixels: a legend entry's height, its swatch, spacing


def palette(num_classes: int) -> np.ndarray:
  """(num_classes, 3) uint8: class k's RGB colour, the same in every picture whatever
  num_classes (tab20's 20 colours, repeated beyond 20 classes)."""
  colours = np.asarray(matplotlib.colormaps["tab20"].colors)[_TAB20_ORDER]
  return (colours[np.arange(num_classes) % len(colours)] * 255).round().astype(np.uint8)


def class_label(name: str | None, index: int) -> str:
  """A class as a picture names it: its name; "class k" for a name that is a bare number
  (a digit's "1" beside a score would read as part of it); "class <index>" without a name."""
  if name is None:
    return f"class {index}"
  return f"class {name}" if name.isdigit() else name


def box_label(detection: dict) -> str:
  """A detection's {"class", "index", "score"} as its box's text, class and score apart:
  "person: 0.81", "class 1: 0.81"."""
  return f"{class_label(detection['class'], detection['index'])}: {detection['score']:.2f}"


def _ink(colour: tuple[int, ...]) -> tuple[int, int, int]:
  """Black or white: whichever reads better on colour (RGB)."""
  luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
  return (0, 0, 0) if luma > 140 else (255, 255, 255)


def legend_entries(
  mask: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None
) -> list[tuple[str, tuple[int, int, int]]]:
  """(label, RGB colour) of each class that mask (H, W) shows (255: unlabelled), by index;
  labels from class_names (num_classes of them) where given (`class_label`)."""
  colours = palette(num_classes)
  return [
    (class_label(class_names[k] if class_names else None, k), tuple(int(c) for c in colours[k]))
    for k in np.unique(mask[mask < num_classes])
  ]


def with_legend(picture: np.ndarray, entries: Sequence[tuple[str, tuple]]) -> np.ndarray:
  """picture (H, W, 3) uint8 with a white strip on its right listing entries, one per row:
  a swatch of the colour, then the label; (max(H, legend height), W + legend width, 3).
  No entries: the picture as it is."""
  if not entries:
    return picture
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  text_width = max(measure.textbbox((0, 0), label, font=font)[2] for label, _ in entries)
  height, width = picture.shape[:2]
  strip = 3 * MARGIN + SWATCH + text_width
  out = Image.new("RGB", (width + strip, max(height, MARGIN + LEGEND_ROW * len(entries))), "white")
  out.paste(Image.fromarray(picture), (0, 0))
  draw = ImageDraw.Draw(out)
  for row, (label, colour) in enumerate(entries):
    x, y = width + MARGIN, MARGIN + row * LEGEND_ROW
    draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=colour, outline=(0, 0, 0))
    draw.text((x + SWATCH + MARGIN, y + SWATCH // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
  return np.asarray(out)


def overlay_mask(
  image: np.ndarray,
  mask: np.ndarray,
  num_classes: int,
  alpha: float = 0.55,
  class_names: Sequence[str] | None = None,
) -> np.ndarray:
  """image (H, W, 3) uint8 with each labelled pixel of mask (H, W) tinted by its class
  (255: untouched), and a legend of the classes shown on its right (`with_legend`; named
  by class_names where given, else "class k"): (max(H, legend height), W + legend width, 3)."""
  colours = palette(num_classes)
  labelled = mask < num_classes
  tint = colours[np.where(labelled, mask, 0)].astype(np.float32)
  out = image.astype(np.float32)
  out[labelled] = (1 - alpha) * out[labelled] + alpha * tint[labelled]
  return with_legend(out.round().astype(np.uint8), legend_entries(mask, num_classes, class_names))


def draw_boxes(image: np.ndarray, detections: Sequence[dict]) -> np.ndarray:
  """image (H, W, 3) uint8 with [{"box", "class", "index", "score"}] drawn: each box in its
  class's colour, its `box_label` on a tab of that colour above it (inside its top edge
  where the picture ends above it)."""
  picture = Image.fromarray(image).convert("RGB")
  draw = ImageDraw.Draw(picture)
  font = ImageFont.load_default()
  colours = palette(max([d["index"] + 1 for d in detections] + [1]))
  for d in detections:
    colour = tuple(int(c) for c in colours[d["index"]])
    x1, y1 = d["box"][:2]
    draw.rectangle(d["box"], outline=colour, width=max(1, min(picture.size) // 100))
    text = box_label(d)
    _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = y1 - bottom - 2 if y1 >= bottom + 2 else y1
    draw.rectangle((x1, y, x1 + right + 3, y + bottom + 1), fill=colour)
    draw.text((x1 + 2, y + 1), text, fill=_ink(colour), font=font)
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
