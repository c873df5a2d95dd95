"""Image files -> RGB pictures, the one decoder training, evaluation and prediction share.

Pillow's `convert("RGB")` clips high-bit-depth greyscale (16-bit PNG / TIFF,
modes "I;16*" and "I") to 0..255, which turns most of a 16-bit picture
white; here those are scaled to 8 bits first (65535 -> 255).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from PIL import Image

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
  """An RGB copy of `image`, high-bit-depth greyscale scaled to 8 bits."""
  if image.mode in _SIXTEEN_BIT:
    values = np.asarray(image, dtype=np.float64)
    image = Image.fromarray(np.round(np.clip(values, 0, 65535) / 257).astype(np.uint8))
  elif image.mode == "F":  # floating point: taken as 0..1
    image = Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8))
  return image.convert("RGB")


def read_rgb(path: str) -> Image.Image:
  """The picture in file `path`, as RGB (see `to_rgb`). Raises what Pillow raises."""
  with Image.open(path) as image:
    return to_rgb(image)


@functools.cache  # one warning per file and process, however often it is drawn
def warn_unreadable(path: str, reason: str) -> None:
  """Logs once that the example at `path` cannot be read, and why."""
  logging.warning("skipping unreadable example %s: %s", path, reason)
