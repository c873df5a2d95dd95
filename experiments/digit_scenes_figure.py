"""docs/digit_scenes.png: validation digit scenes as the involution-neck models see them.

Top row: the detector's boxes scoring at least --min_score, each labelled with its class
and score; bottom row: the segmentation model's classes, with a legend of the classes
in each scene. The scenes are the first --scenes of the validation split (held-out
digits), drawn --scale times larger. Train the two models first (README, "Digit scenes"):

    involution-train --config digitscenes_det:involution --workdir runs/det_inv
    involution-train --config digitscenes_seg:involution --workdir runs/seg_inv
    python experiments/digit_scenes_figure.py runs/det_inv runs/seg_inv --out docs/digit_scenes.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from involution_jax import configs
from involution_jax.data.dense import BOXES, load_dense_dataset
from involution_jax.inference import drawing
from involution_jax.inference.predictor import Predictor


def scenes(count: int, detector: str) -> list[np.ndarray]:
  """The first `count` validation scenes of the detector's run, (H, W, 3) uint8 each."""
  config = configs.get_config(configs.run_config_of(detector) or "digitscenes_det")
  source = load_dense_dataset(config, BOXES, "validation").source
  return [np.asarray(source[i]["image"]) for i in range(count)]


def panels(detector: str, segmenter: str, images, min_score: float, scale: int):
  """(boxes drawn, segmentation with its legend): one picture each per image, `scale`
  times larger than the image."""
  detections = Predictor.load(detector, quiet=True).predict(images)
  segmentation = Predictor.load(segmenter, quiet=True)
  masks = segmentation.predict(images)
  names = segmentation.class_names
  boxes, classes = [], []
  for image, found, labels in zip(images, detections, masks):
    h, w = image.shape[:2]
    big = np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.BILINEAR))
    kept = [
      {**d, "box": [v * scale for v in d["box"]]}
      for d in found["detections"]
      if d["score"] >= min_score
    ]
    boxes.append(drawing.draw_boxes(big, kept))
    mask = np.kron(labels["mask"], np.ones((scale, scale), labels["mask"].dtype))
    classes.append(drawing.overlay_mask(big, mask, len(names), class_names=names))
  return boxes, classes


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
  """Pictures (H, W, 3) in a white grid, each column as wide as its widest picture."""
  widths = [max(p.shape[1] for p in column) for column in zip(*rows)]
  heights = [max(p.shape[0] for p in row) for row in rows]
  out = np.full(
    (sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (len(widths) - 1), 3), 255, np.uint8
  )
  y = 0
  for row, height in zip(rows, heights):
    x = 0
    for picture, width in zip(row, widths):
      out[y : y + picture.shape[0], x : x + picture.shape[1]] = picture
      x += width + gap
    y += height + gap
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("detector", help="a digitscenes_det training workdir")
  parser.add_argument("segmenter", help="a digitscenes_seg training workdir")
  parser.add_argument("--out", default="digit_scenes.png", help="the PNG written")
  parser.add_argument("--scenes", type=int, default=4, help="how many validation scenes")
  parser.add_argument("--min_score", type=float, default=0.5, help="boxes scoring at least this")
  parser.add_argument("--scale", type=int, default=4, help="how many times larger than a scene")
  args = parser.parse_args(argv)
  images = scenes(args.scenes, args.detector)
  Image.fromarray(
    grid(list(panels(args.detector, args.segmenter, images, args.min_score, args.scale)))
  ).save(args.out)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
