"""ImageNet-1k: class names (short names, standard class-index order) and input statistics."""

from __future__ import annotations

import functools
from importlib import resources

# The official models' input: ImageNet statistics on 0-255 RGB, 256 -> 224 centre crop.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
IMAGE_SIZE = 224
EVAL_CROP = 224 / 256


@functools.cache
def class_names() -> tuple[str, ...]:
  """1,000 names; index i is the class the official models call i."""
  text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text()
  names = tuple(line for line in text.splitlines() if line)
  assert len(names) == 1000, len(names)
  return names
